"""The Task protocol and the data that flows through it.

A task turns dataset rows into `Sample`s, says what to ask for each sample (`Prompt`), scores the
answers (`SampleScore`) and aggregates them (`TaskResult`). Tasks know nothing about HTTP or SQLite:
`build_request` turns a prompt into the exact JSON body, with images encoded by a caller-supplied
function, and `request_hash` proves two endpoints were sent the same bytes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from vlmparity.canonical import request_hash
from vlmparity.tasks.reasoning import TagPair
from vlmparity.tasks.schema import RowProblem, TaskSchema


@dataclass(frozen=True, slots=True)
class ImageData:
    """One image exactly as stored in the dataset (encoded bytes: PNG, JPEG, ...)."""

    data: bytes
    key: str  # sha256 hex of `data`; the identity used to encode each distinct image once per run

    @classmethod
    def from_bytes(cls, data: bytes) -> ImageData:
        return cls(data=data, key=hashlib.sha256(data).hexdigest())


@dataclass(frozen=True)
class Sample:
    """One question of one task, as the scorer and the request builder need it."""

    task: str  # task name, e.g. "mme" or "mmmu_val"
    id: str  # stable across runs and backends (MME: question_id + question; MMMU: id)
    doc_id: int  # index in the split's storage order (lmms-eval's doc_id)
    target: str  # the dataset's own answer
    group: str  # stratum: MME category, MMMU subject
    cluster: str  # resampling unit: MME image pair (question_id), MMMU id
    images: tuple[ImageData, ...]  # in request order (after the task's own selection and ordering)
    fields: Mapping[str, Any] = field(default_factory=dict)  # task-specific (question, options, ...)
    # Images the sample has but that were not loaded (samples built for scoring only, `images=False`):
    # `images` is then empty and no request can be built from the sample.
    omitted_images: int = 0

    @property
    def image_count(self) -> int:
        """How many images the sample has, loaded or not."""
        return len(self.images) + self.omitted_images


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    index: int  # index into Sample.images


Part = TextPart | ImagePart


@dataclass(frozen=True)
class Prompt:
    """What to send for a sample: one user message made of parts, plus the task's generation limits."""

    parts: tuple[Part, ...]
    max_tokens: int
    text: str = ""  # the plain-text prompt (lmms-eval's ctx, logged as "input")


@dataclass(frozen=True)
class GenerationParams:
    """Explicit generation parameters sent with every request, so no server default leaks in."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 1234
    max_tokens: int | None = None  # None: the task's own limit (MME 16, MMMU 128)
    stream: bool = False
    # ask for one log-probability per generated token; decided once per run (None: not decided, not asked)
    logprobs: bool | None = None


@dataclass(frozen=True)
class Request:
    """The exact JSON body for one sample; `request_hash` ignores `model` (which differs per endpoint)."""

    sample_id: str
    body: Mapping[str, Any]
    request_hash: str
    image_count: int

    def with_model(self, model: str) -> dict[str, Any]:
        """The body to send to one endpoint."""
        return {"model": model, **self.body}


def build_request(
    sample: Sample,
    prompt: Prompt,
    gen: GenerationParams,
    encode_image: Callable[[ImageData], str],
) -> Request:
    """Build the request body: one user message whose content parts follow `prompt.parts`.

    `encode_image` returns a data URL (e.g. "data:image/png;base64,...") and is expected to cache by
    `ImageData.key` so that each distinct image is encoded once per run.
    """
    content: list[dict[str, Any]] = []
    n_images = 0
    for part in prompt.parts:
        if isinstance(part, TextPart):
            content.append({"type": "text", "text": part.text})
        else:
            content.append(
                {"type": "image_url", "image_url": {"url": encode_image(sample.images[part.index])}}
            )
            n_images += 1
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": gen.max_tokens if gen.max_tokens is not None else prompt.max_tokens,
        "temperature": gen.temperature,
        "top_p": gen.top_p,
    }
    if gen.seed is not None:
        body["seed"] = gen.seed
    if gen.logprobs:  # no `top_logprobs`: OVMS ignores it, and the body must be the same for every backend
        body["logprobs"] = True
    if gen.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return Request(sample_id=sample.id, body=body, request_hash=request_hash(body), image_count=n_images)


@dataclass(frozen=True)
class SampleScore:
    """The score of one answer to one sample."""

    sample_id: str
    correct: bool  # per-question correctness (what paired statistics use)
    parsed: Any  # MME: "yes"/"no"/"other"; MMMU MC: a letter; MMMU open: list of candidates
    scored: bool = True  # False when the answer is a failure excluded by the errors-excluded policy
    random_fallback: bool = False  # MMMU: no letter found, lmms-eval's random.choice was used
    details: Mapping[str, Any] = field(default_factory=dict)  # lmms-eval's per-sample metric dict


@dataclass(frozen=True)
class TaskResult:
    """Aggregated metrics of one task: lmms-eval's metric values plus breakdowns."""

    task: str
    metrics: Mapping[str, float]  # e.g. {"mme_perception_score": 1500.2, "mme_cognition_score": 300.0}
    breakdown: Mapping[str, Any]  # per category / per subject / per domain, as lmms-eval prints them
    n: int  # samples scored
    counts: Mapping[str, int] = field(default_factory=dict)  # e.g. {"random_fallback": 3}


@dataclass(frozen=True)
class Answer:
    """What came back for one sample: `text` is None when the request failed."""

    sample_id: str
    text: str | None
    outcome: str = "ok"  # ok | http_error | timeout | connection | empty | length | unsupported | malformed


@dataclass(frozen=True)
class BreakdownTable:
    """One breakdown of a task's result as data (a header and rows of cell texts); report/ renders it."""

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class GroupScores:
    """One value per group (stratum) of a result, as the HTML report's breakdown shows it per backend."""

    label: str  # what a group is, e.g. "category", "subject"
    unit: str  # "points" | "fraction"
    max_value: float  # the axis end (MME: 200 per category; an accuracy: 1.0)
    values: Mapping[str, tuple[float, int]]  # group -> (value, questions behind it)
    rank: tuple[str, ...] = ()  # display order of known groups; the others follow by name


@dataclass(frozen=True)
class OfflineScore:
    """One task scored from files: what was read, how each item scored, the aggregate, and notes."""

    kind: str  # mme-results | mmmu-predictions | mmmu-responses | lmms-samples
    task: str
    samples: list[Sample]
    scores: list[SampleScore]
    result: TaskResult
    notes: list[str] = field(default_factory=list)


# One line of an lmms-eval `--log_samples` file (a JSON object) and the file it came from.
LoggedLine = tuple[Path, Mapping[str, Any]]


# How `compare` pairs a metric and how a run's interval of it is computed. Two kinds of statistic:
ACCURACY = "accuracy"  # share of questions answered right (a fraction); clusters resampled within strata
CLUSTER_SCORE = (
    "cluster_score"  # MME-style: sum over strata of the mean over clusters of acc + acc_plus (points)
)
METRIC_KINDS = (ACCURACY, CLUSTER_SCORE)
FALLBACK_SEQUENTIAL = "sequential"  # a random fallback draws from one generator in document order (lmms-eval)
FALLBACK_PER_SAMPLE = "per_sample"  # ... from a generator seeded by the sample id (paired comparisons)


def _every_sample(sample: Sample) -> bool:
    return True


@dataclass(frozen=True)
class MetricSpec:
    """One metric the verdict compares: what feeds it, its statistic, its unit and default margin.

    `members` picks the samples that feed it (MME perception: the perception categories). The strata of
    its resampling are `Sample.group`, its clusters `Sample.cluster`. `margin` is the default equivalence
    margin in the metric's unit (a fraction for an accuracy, score points for a cluster score);
    `max_value` the top of its scale (1.0, or MME's 2000 / 800). `lmms_eval` says whether the metric is one
    of the task's own lmms-eval metrics (`TaskResult.metrics`) or one `compare` adds (MME's `mme_acc`).
    """

    name: str
    kind: str  # ACCURACY | CLUSTER_SCORE
    margin: float
    max_value: float = 1.0
    members: Callable[[Sample], bool] = _every_sample
    lmms_eval: bool = True

    @property
    def unit(self) -> str:
        return "fraction" if self.kind == ACCURACY else "points"


@runtime_checkable
class Task(Protocol):
    """A benchmark: load, prompt, score, aggregate."""

    name: str
    default_source: str  # default Hugging Face hub id (lmms-eval 0.7.3's dataset_path)
    legacy_sources: tuple[str, ...]  # older hub ids of the same data (accepted, same fingerprint rules)
    split: str
    max_tokens: int  # lmms-eval's max_new_tokens for the task
    max_images: int  # the most images one request of the task sends
    metric_names: tuple[str, ...]  # lmms-eval's metrics (`TaskResult.metrics` keys)
    lmms_version: str | float  # lmms-eval's "versions" entry of the task in results.json
    artifact_keys: tuple[str, ...]  # metrics lmms-eval writes as empty lists (MMMU pass_at_k, submission)
    schema: TaskSchema  # the dataset's columns (`vlmparity.data.schema` checks rows against it)
    reasoning_tags: Sequence[TagPair] | None  # reasoning blocks stripped before parsing (None: none)

    def metric_specs(self) -> Sequence[MetricSpec]:
        """The metrics `compare` judges, in report order."""
        ...

    def stop_part(self, sample: Sample) -> str:
        """The part of the task a sample belongs to for sequential stopping (`compare --sequential`): a part
        stops being sent once every metric its samples feed is equivalent. Usually the task's name."""
        ...

    def check_rows(self, rows: Sequence[Mapping[str, Any]], *, images: bool = True) -> list[RowProblem]:
        """The task's own rules on rows that already fit `schema` (columns present and typed, ids unique):
        every broken one, in the order found; `vlmparity.data.schema` reports the first.

        `images=False`: the rows were loaded without their image columns."""
        ...

    def breakdown_tables(self, result: TaskResult) -> list[BreakdownTable]:
        """The breakdowns of one result (lmms-eval's logged per-category tables), as data; [] for none."""
        ...

    def group_scores(self, result: TaskResult, samples: Sequence[Sample]) -> GroupScores | None:
        """One value per group of a result (from its breakdown) for the HTML report; None for none.
        `samples` are the samples the result was aggregated from."""
        ...

    def score_logged(self, lines: Sequence[LoggedLine], *, allow_partial_pairs: bool = False) -> OfflineScore:
        """Score the task's lines of lmms-eval `--log_samples` files (`vlmparity score --lmms-samples`),
        given in doc_id order. A line is the task's when it holds one of its `metric_names`."""
        ...

    def samples_from_rows(self, rows: Iterable[Mapping[str, Any]], *, images: bool = True) -> list[Sample]:
        """Turn dataset rows (columns as in the HF dataset, images as bytes) into samples, in storage order.

        `images=False`: the rows have no image columns (loaded for scoring only); the samples get no
        `images`, only their number (`Sample.omitted_images`).
        """
        ...

    def prompt(self, sample: Sample) -> Prompt:
        """The message parts and max_tokens that lmms-eval 0.7.3 would send for this sample."""
        ...

    def score(
        self,
        samples: Sequence[Sample],
        answers: Sequence[Answer],
        *,
        seed: int = 0,
        fallback: str = FALLBACK_SEQUENTIAL,
    ) -> list[SampleScore]:
        """Score answers given in the same order as `samples` (document order).

        `fallback`: how a random fallback draws (FALLBACK_SEQUENTIAL or FALLBACK_PER_SAMPLE); a task
        without one ignores it.

        Scoring is a batch operation because MMMU's random fallback draws from one `random.Random(seed)`
        in document order over the whole run. A failed answer (`text is None`) is scored wrong and
        consumes no random draw.
        """
        ...

    def aggregate(
        self, samples: Sequence[Sample], scores: Sequence[SampleScore], *, allow_partial_pairs: bool = False
    ) -> TaskResult:
        """lmms-eval's aggregation, with the breakdowns it only logs.

        `allow_partial_pairs`: a cluster with only some of its questions present is scored instead of
        refused (MME's image pairs; a task without pairs ignores it)."""
        ...


_REGISTRY: dict[str, Callable[[], Task]] = {}


def register_task(name: str, factory: Callable[[], Task]) -> None:
    """Add a task to the registry under `name` (lmms-eval's task name)."""
    _REGISTRY[name] = factory


def get_task(name: str) -> Task:
    """Return a registered task by lmms-eval's name."""
    from vlmparity.errors import ConfigError

    _load_builtin_tasks()
    try:
        return _REGISTRY[name]()
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown task {name!r}", hint=f"known tasks: {known}") from None


def task_names() -> list[str]:
    """Names of all registered tasks."""
    _load_builtin_tasks()
    return sorted(_REGISTRY)


def _load_builtin_tasks() -> None:
    import importlib

    for module in ("vlmparity.tasks.mme", "vlmparity.tasks.mmmu"):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:  # a task module not written yet
            if exc.name != module:
                raise
