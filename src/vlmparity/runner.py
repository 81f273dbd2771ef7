"""One run: plan → build requests → dispatch to every endpoint → persist → score.

`prepare` loads each task's data and sampling plan. `execute` resolves the endpoints, builds each
sample's request once (images encoded once per run, shared by every endpoint, so every endpoint is sent
the same bytes apart from `model`), dispatches to all endpoints concurrently and commits each answer to
the run store as it arrives; a rerun sends only what is missing. `score_endpoint` is the pure part: it
reads the store and scores every task under the three scoring policies (`lmms-eval`: a failure is scored
from the text lmms-eval would have recorded for it; `strict`: a failure is a wrong answer; `answered`:
failures left out), with outcome counts and intervals.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from vlmparity.config import RunConfig
from vlmparity.errors import ConfigError, DataError, VlmparityError
from vlmparity.interrupt import run_async, signal_of
from vlmparity.store import (
    ANSWERED,
    ResultRecord,
    ResultWriter,
    RunRecord,
    SampleRecord,
    Store,
    is_done,
)
from vlmparity.tasks.base import (
    Answer,
    ImageData,
    ImagePart,
    Part,
    Prompt,
    Sample,
    SampleScore,
    Task,
    TaskResult,
    build_request,
    get_task,
)
from vlmparity.tasks.failure_text import (
    DEFAULT_MAX_RETRIES,
    OPENAI_STYLE_MESSAGE,
    OPENAI_STYLES,
    lmms_eval_failure_text,
)

if TYPE_CHECKING:
    from vlmparity.client import Dispatcher, ResolvedEndpoint, Result
    from vlmparity.data.images import ImageEncoder
    from vlmparity.data.sampling import Plan

# The three scoring policies (their JSON keys; `POLICY_LABELS` are the names shown in tables):
#   lmms_eval: exactly lmms-eval 0.7.3: a failure is scored from the text lmms-eval would have recorded for
#              it (`tasks.failure_text`), parsed like any answer (an MMMU multiple-choice one usually takes
#              the next random draw);
#   strict:    a failure is a wrong answer and takes no random draw;
#   answered:  failures are left out (the strict scores of the questions that were answered).
POLICY_LMMS_EVAL = "lmms_eval"
POLICY_STRICT = "strict"
POLICY_ANSWERED = "answered"
POLICIES = (POLICY_LMMS_EVAL, POLICY_STRICT, POLICY_ANSWERED)
POLICY_LABELS = {POLICY_LMMS_EVAL: "lmms-eval", POLICY_STRICT: "strict", POLICY_ANSWERED: "answered"}
# Former names (kept so that code written against them keeps working).
POLICY_PARITY = POLICY_LMMS_EVAL
POLICY_EXCLUDED = POLICY_ANSWERED
MISSING = "missing"  # no stored result (an interrupted run): scored as a failure
N_BOOT = 2000
WRITER_GRACE_S = 5.0  # how long an interrupted or failed run waits for the store to commit what it has
PREFETCH_SAMPLES = 24  # how far ahead of sending images are encoded (MME: 12 distinct images)
# The random-fallback mode of paired comparisons (a task's `score(..., fallback=)`, MMMU's): the letter
# drawn for an unparseable multiple-choice answer depends on (seed, sample_id) only, so two endpoints
# that gave the same raw answer get the same letter. Reported per-run scores keep lmms-eval's sequence.
PAIRED_FALLBACK = "per_sample"


# ----- scoring ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """A 95 % interval for one metric."""

    estimate: float
    low: float
    high: float
    method: str

    def as_dict(self) -> dict[str, Any]:
        return {"estimate": self.estimate, "low": self.low, "high": self.high, "method": self.method}


@dataclass(frozen=True)
class PolicyScore:
    """A task's metrics under one failure policy."""

    policy: str
    result: TaskResult
    n: int  # questions scored
    n_correct: int
    accuracy: Bounds | None  # question-level accuracy with a Wilson interval
    intervals: Mapping[str, Bounds]  # per metric: Wilson (accuracies) or bootstrap (MME scores)


@dataclass(frozen=True)
class TaskScore:
    """One endpoint's scores on one task, from the store only."""

    endpoint: str
    task: str
    samples: tuple[Sample, ...]  # scored samples in document order (skipped ones left out)
    records: tuple[ResultRecord | None, ...]  # aligned with samples
    answers: tuple[Answer, ...]  # what came back (text None for a failure)
    scores: tuple[SampleScore, ...]  # the lmms-eval policy's per-sample scores
    lmms_eval: PolicyScore
    strict: PolicyScore
    answered: PolicyScore
    outcomes: Mapping[str, int]  # per outcome class (+ "missing")
    skipped: int = 0  # not sent under --multi-image skip
    merged: int = 0  # images tiled into one under --multi-image merge
    treatments: Mapping[str, str] = field(default_factory=dict)  # sample_id -> full|merged
    # The same answers scored for paired comparisons (PAIRED_FALLBACK); empty unless asked for.
    paired: tuple[SampleScore, ...] = ()
    # sample_id -> the text lmms-eval would have recorded for a failed request (scored by `lmms_eval`)
    failure_texts: Mapping[str, str] = field(default_factory=dict)

    @property
    def parity(self) -> PolicyScore:
        """Former name of `lmms_eval`."""
        return self.lmms_eval

    @property
    def excluded(self) -> PolicyScore:
        """Former name of `answered`."""
        return self.answered

    @property
    def policies(self) -> tuple[PolicyScore, PolicyScore, PolicyScore]:
        return (self.lmms_eval, self.strict, self.answered)

    @property
    def random_fallbacks(self) -> int:
        return sum(1 for s in self.scores if s.random_fallback)

    @property
    def paired_scores(self) -> tuple[SampleScore, ...]:
        """The per-sample scores paired statistics use (the parity scores when not computed)."""
        return self.paired or self.scores

    @property
    def failures(self) -> int:
        return sum(n for k, n in self.outcomes.items() if k not in ANSWERED)


def answer_for(sample: Sample, rec: ResultRecord | None) -> Answer:
    """The answer a task scores: the stored text for answered outcomes, None for failures."""
    if rec is None:
        return Answer(sample_id=sample.id, text=None, outcome=MISSING)
    if rec.answered:
        return Answer(sample_id=sample.id, text=rec.text or "", outcome=rec.outcome)
    return Answer(sample_id=sample.id, text=None, outcome=rec.outcome)


def _aggregate(
    task: Task, samples: Sequence[Sample], scores: Sequence[SampleScore], partial: bool
) -> TaskResult:
    params = inspect.signature(task.aggregate).parameters
    if "allow_partial_pairs" in params:
        return task.aggregate(samples, scores, allow_partial_pairs=partial)
    return task.aggregate(samples, scores)


def _paired_scores(
    task: Task, samples: Sequence[Sample], answers: Sequence[Answer], seed: int
) -> list[SampleScore] | None:
    """The answers scored with PAIRED_FALLBACK, or None when the task has no such option (no fallback)."""
    if "fallback" not in inspect.signature(task.score).parameters:
        return None
    return task.score(samples, answers, seed=seed, fallback=PAIRED_FALLBACK)


def _wilson(k: int, n: int) -> Bounds | None:
    if n == 0:
        return None
    from vlmparity.stats import wilson_interval

    iv = wilson_interval(k, n)
    return Bounds(iv.estimate, iv.low, iv.high, "wilson")


def _intervals(
    task: Task, samples: Sequence[Sample], scores: Sequence[SampleScore], result: TaskResult, seed: int
) -> dict[str, Bounds]:
    """Bootstrap over image pairs for MME scores, Wilson for accuracies."""
    kept = [(s, sc) for s, sc in zip(samples, scores, strict=True) if sc.scored]
    out: dict[str, Bounds] = {}
    for metric, value in result.metrics.items():
        rows = [(s, sc) for s, sc in kept if metric in sc.details] if task.name == "mme" else kept
        if not rows:
            continue
        if task.name == "mme":
            from vlmparity.stats import mme_score_interval

            iv = mme_score_interval(
                [str(s.fields["category"]) for s, _ in rows],
                [s.cluster for s, _ in rows],
                [sc.correct for _, sc in rows],
                n_boot=N_BOOT,
                seed=seed,
            )
            out[metric] = Bounds(float(value), iv.low, iv.high, iv.method)
        else:
            k = sum(1 for _, sc in rows if sc.correct)
            wil = _wilson(k, len(rows))
            if wil is not None:
                out[metric] = Bounds(float(value), wil.low, wil.high, "wilson")
    return out


def _policy(
    task: Task, policy: str, samples: Sequence[Sample], scores: Sequence[SampleScore], seed: int
) -> PolicyScore:
    result = _aggregate(task, samples, scores, partial=policy == POLICY_ANSWERED)
    kept = [sc for sc in scores if sc.scored]
    k = sum(1 for sc in kept if sc.correct)
    return PolicyScore(
        policy=policy,
        result=result,
        n=len(kept),
        n_correct=k,
        accuracy=_wilson(k, len(kept)),
        intervals=_intervals(task, samples, scores, result, seed),
    )


def score_task(
    task: Task,
    endpoint: str,
    samples: Sequence[Sample],
    sample_records: Mapping[str, SampleRecord],
    results: Mapping[str, ResultRecord],
    *,
    seed: int = 0,
    paired: bool = False,
    max_retries: int = DEFAULT_MAX_RETRIES,
    openai_style: str = OPENAI_STYLE_MESSAGE,
) -> TaskScore:
    """Score one endpoint's stored results for one task under the three policies.

    `samples` are the planned samples in document order; `sample_records` and `results` are keyed by
    sample id. A result for another request than the sample's current one does not count (it is stale).
    `max_retries` is the N of lmms-eval's failure text; `openai_style` how openai-python renders an HTTP
    error (`tasks.failure_text`). `paired` also scores them for paired comparisons (`TaskScore.paired`:
    MMMU fallbacks per sample).
    """
    kept: list[Sample] = []
    records: list[ResultRecord | None] = []
    treatments: dict[str, str] = {}
    skipped = merged = 0
    for sample in samples:
        srec = sample_records.get(sample.id)
        treatment = srec.treatment if srec is not None else "full"
        if treatment == "skipped":
            skipped += 1
            continue
        if treatment == "merged":
            merged += 1
        treatments[sample.id] = treatment
        rec = results.get(sample.id)
        if rec is not None and srec is not None and rec.request_hash != srec.request_hash:
            rec = None
        kept.append(sample)
        records.append(rec)
    answers = [answer_for(s, r) for s, r in zip(kept, records, strict=True)]
    outcomes: dict[str, int] = {}
    for a in answers:
        outcomes[a.outcome] = outcomes.get(a.outcome, 0) + 1
    # lmms-eval: a failed request is the text lmms-eval would have recorded, scored like any answer (it
    # takes its MMMU random draw in document order). A missing result (an unfinished run) has no such text:
    # it is wrong and takes no draw under every policy.
    failure_texts: dict[str, str] = {}
    lmms_answers = []
    for a, rec in zip(answers, records, strict=True):
        if a.text is None and rec is not None:
            text = lmms_eval_failure_text(
                rec.outcome,
                rec.status,
                rec.error_body,
                rec.server_message,
                max_retries=max_retries,
                style=openai_style,
            )
            failure_texts[a.sample_id] = text
            lmms_answers.append(replace(a, text=text))
        else:
            lmms_answers.append(a)
    lmms_scores = task.score(kept, lmms_answers, seed=seed) if kept else []
    # strict: a failure is wrong and takes no draw; answered: the same scores with the failures left out
    # (so the two agree on every answered question, fallbacks included).
    strict_scores = task.score(kept, answers, seed=seed) if kept and failure_texts else lmms_scores
    answered_scores = [
        sc if a.text is not None else replace(sc, scored=False)
        for sc, a in zip(strict_scores, answers, strict=True)
    ]
    paired_scores = _paired_scores(task, kept, answers, seed) if paired and kept else None
    return TaskScore(
        endpoint=endpoint,
        task=task.name,
        samples=tuple(kept),
        records=tuple(records),
        answers=tuple(answers),
        scores=tuple(lmms_scores),
        lmms_eval=_policy(task, POLICY_LMMS_EVAL, kept, lmms_scores, seed),
        strict=_policy(task, POLICY_STRICT, kept, strict_scores, seed),
        answered=_policy(task, POLICY_ANSWERED, kept, answered_scores, seed),
        outcomes=outcomes,
        skipped=skipped,
        merged=merged,
        treatments=treatments,
        paired=tuple(paired_scores or ()),
        failure_texts=failure_texts,
    )


# The look gate of a sequential comparison (`compare --endpoint ... --sequential` sets it around `run`).
SEQUENTIAL_GATE: ContextVar[Any] = ContextVar("vlmparity_sequential_gate", default=None)


# ----- preparation: data and plans ------------------------------------------------------------------


@dataclass(frozen=True)
class TaskPlan:
    """One task's data and the samples this run evaluates (document order)."""

    task: Task
    source: str
    plan: Plan
    fingerprint: Mapping[str, Any]

    @property
    def samples(self) -> tuple[Sample, ...]:
        return self.plan.samples


def prepare_task(
    name: str,
    source: str | None,
    *,
    limit: float | None,
    sample: int | None,
    seed: int,
    images: bool = True,
) -> TaskPlan:
    """Load a task's rows, turn them into samples and apply the sampling plan.

    `images=False` loads no image bytes (scoring, compare, report: a fraction of the time and memory);
    such samples cannot be sent, and `load_images` reads the images of a few of them when needed.
    """
    from vlmparity.data.fingerprint import dataset_fingerprint
    from vlmparity.data.sampling import plan_all, plan_limit, plan_stratified
    from vlmparity.data.sources import load_split, resolve_source

    task = get_task(name)
    # a local source is recorded by its absolute path: compare/report find it from any folder later
    src = resolve_source(source or task.default_source)
    loaded = load_split(src, split=task.split, task=name, images=images)
    samples = task.samples_from_rows(loaded.rows, images=images)
    if sample is not None:
        plan = plan_stratified(samples, sample, seed)
    elif limit is not None:
        plan = plan_limit(samples, limit)
    else:
        plan = plan_all(samples)
    fingerprint = dataset_fingerprint(src, task.split, samples, loaded.revision)
    return TaskPlan(task=task, source=src, plan=plan, fingerprint=fingerprint)


def load_images(plan: TaskPlan, samples: Sequence[Sample]) -> list[Sample]:
    """`samples` of `plan` with their images: those prepared without (`images=False`) read their rows again.

    Only the parquet row groups holding those rows are read (e.g. the few samples a report shows).
    """
    from vlmparity.data.sources import read_rows

    todo = [s for s in samples if s.omitted_images]
    if not todo:
        return list(samples)
    rows = read_rows(plan.source, split=plan.task.split, indices={s.doc_id for s in todo})
    full: dict[str, Sample] = {}
    for s in todo:
        row = rows.get(s.doc_id)
        rebuilt = plan.task.samples_from_rows([row]) if row is not None else []
        if not rebuilt or rebuilt[0].id != s.id:
            raise DataError(
                f"{plan.source}: {s.task} row {s.doc_id} is no longer sample {s.id!r}",
                hint="the data changed since it was loaded; run again",
            )
        full[s.id] = replace(s, images=rebuilt[0].images, omitted_images=0)
    return [full.get(s.id, s) for s in samples]


def prepare(config: RunConfig) -> list[TaskPlan]:
    """Every task's plan, in the order given; a plan that selects no sample is a usage error."""
    p = config.plan
    plans = [
        prepare_task(name, config.data.get(name), limit=p.limit, sample=p.sample, seed=p.seed)
        for name in config.tasks
    ]
    for plan in plans:
        if not plan.samples and p.limit is not None:
            raise ConfigError(
                f"--limit {p.limit:g} selects no {plan.task.name} sample", hint="give a larger --limit"
            )
    return plans


# ----- requests -------------------------------------------------------------------------------------


def merge_prompt(prompt: Prompt) -> Prompt:
    """The prompt for a sample whose images were tiled into one: the first image part stays (as image 0),
    the others go; every text part stays where it was."""
    parts: list[Part] = []
    seen_image = False
    for part in prompt.parts:
        if isinstance(part, ImagePart):
            if seen_image:
                continue
            seen_image = True
            parts.append(ImagePart(0))
        else:
            parts.append(part)
    return replace(prompt, parts=tuple(parts))


@dataclass(frozen=True)
class Built:
    """One sample's request, serialised once (without `model`) and shared by every endpoint."""

    index: int
    sample: Sample
    treatment: str  # full | merged | skipped
    payload: bytes | None  # None when skipped
    request_hash: str
    image_count: int

    def record(self) -> SampleRecord:
        return SampleRecord(
            task=self.sample.task,
            sample_id=self.sample.id,
            doc_id=self.sample.doc_id,
            request_hash=self.request_hash,
            image_count=self.image_count,
            treatment=self.treatment,
        )


def treatment_for(n_images: int, policy: str, limit: int | None) -> str:
    """How a sample with `n_images` is sent under `--multi-image` given the smallest known image limit."""
    if policy == "error" or limit is None or n_images <= limit:
        return "full"
    if policy == "skip":
        return "skipped"
    return "merged" if limit >= 1 and n_images > 1 else "full"


def build_one(
    index: int, sample: Sample, task: Task, gen: Any, encoder: ImageEncoder, policy: str, limit: int | None
) -> Built:
    """Build a sample's request under the multi-image policy (runs on a worker thread)."""
    if sample.omitted_images:  # a programming error: such plans are for scoring (prepare_task(images=False))
        raise ValueError(f"sample {sample.id!r} was loaded without its images and cannot be sent")
    prompt = task.prompt(sample)
    n_images = sum(1 for p in prompt.parts if isinstance(p, ImagePart))
    treatment = treatment_for(n_images, policy, limit)
    if treatment == "skipped":
        return Built(index, sample, treatment, None, "", n_images)
    if treatment == "merged" and len(sample.images) > 1:
        from vlmparity.data.images import tile_images

        order = [p.index for p in prompt.parts if isinstance(p, ImagePart)]
        tiled: ImageData = tile_images([sample.images[i] for i in order], sample_id=sample.id)
        sample = replace(sample, images=(tiled,))
        prompt = merge_prompt(prompt)
    request = build_request(sample, prompt, gen, lambda image: encoder.data_url(image, sample_id=sample.id))
    return Built(
        index, sample, treatment, orjson.dumps(request.body), request.request_hash, request.image_count
    )


def _mark_retrieved(fut: asyncio.Future[Any]) -> None:
    """A failed build nobody awaits any more (its endpoint stopped first) is not worth asyncio's "Future
    exception was never retrieved" traceback; whoever awaits it still gets the exception."""
    if not fut.cancelled():
        fut.exception()


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _reject(fut: asyncio.Future[None], exc: BaseException) -> None:
    # The writer failed before committing the registration: whoever awaits it gets the store's error
    # (nobody may: it also surfaces from the writer's flush, so asyncio need not log it as unretrieved).
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()


def _threadsafe(
    loop: asyncio.AbstractEventLoop, fn: Callable[[asyncio.Future[None]], None], fut: asyncio.Future[None]
) -> Callable[[], None]:
    """A writer-thread callback that resolves `fut` on its loop; a no-op once the loop is closed (an
    interrupted run's writer may still commit after the loop is gone)."""

    def call() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, fut)

    return call


def _threadsafe_error(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]
) -> Callable[[BaseException], None]:
    def call(exc: BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_reject, fut, exc)

    return call


class RequestBook:
    """Builds each sample's request once, a few samples ahead, on worker threads, for every endpoint.

    Every endpoint that needs sample i is handed the very same `Built` (same bytes), so the requests
    are identical by construction. A body is dropped once every endpoint that wanted it took it. When
    one endpoint runs far ahead of another, the bodies waiting for the slow one are held up to
    `max_entries` bodies and `max_bytes` bytes (bodies built ahead and not yet taken by anyone count
    towards both but are dropped only beyond `max_entries`); beyond that the ones the slow one needs last
    (the highest indices already taken by someone) are dropped first, and rebuilt when it gets there
    (building is deterministic: the same bytes). Without the byte cap, 256 MMMU bodies of up to 20 MB
    each could be held.
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        tasks: Mapping[str, Task],
        build: Callable[[int, Sample, Task], Built],
        *,
        workers: int,
        prefetch: Callable[[Sequence[Sample]], object] | None = None,
        release: Callable[[Sequence[str]], object] | None = None,
        max_entries: int = 256,
        max_bytes: int = 128 << 20,
    ) -> None:
        self._samples = samples
        self._tasks = tasks
        self._build = build
        self._pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="vlmparity-build")
        # Image encoding runs ahead of the builds on the encoder's own pool: the two questions of an MME
        # image sit side by side, so parallel builds alone would wait on the same image one at a time.
        self._prefetch = prefetch
        self._prefetch_pool = ThreadPoolExecutor(1, thread_name_prefix="vlmparity-prefetch")
        self._prefetching = 0
        self._entries: dict[int, asyncio.Future[Built]] = {}
        self._refs: dict[int, int] = {}
        # An encoded image is needed until every endpoint took every sample that shows it; then its data
        # URL is released (a pass that sends it again encodes it again). Keeps the encoder's cache small.
        self._release = release
        self._image_refs: dict[str, int] = {}
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._sizes: dict[int, int] = {}  # payload bytes of built entries still held
        self._held_bytes = 0
        self._taken: set[int] = set()  # indices some endpoint already took (others may still want them)
        self.builds = 0
        self.peak_bytes = 0  # most payload bytes held at once (diagnostics, tests)

    def want(self, indices: Sequence[int]) -> None:
        """One more endpoint will take each of `indices`."""
        for i in indices:
            self._refs[i] = self._refs.get(i, 0) + 1
            for image in self._samples[i].images:
                self._image_refs[image.key] = self._image_refs.get(image.key, 0) + 1

    def _start(self, index: int) -> asyncio.Future[Built]:
        fut = self._entries.get(index)
        if fut is None:
            sample = self._samples[index]
            loop = asyncio.get_running_loop()
            fut = loop.run_in_executor(self._pool, self._build, index, sample, self._tasks[sample.task])
            fut.add_done_callback(_mark_retrieved)
            fut.add_done_callback(functools.partial(self._built, index))
            self._entries[index] = fut
            self.builds += 1
            if len(self._entries) > self._max_entries:
                self._evict()
        return fut

    def _built(self, index: int, fut: asyncio.Future[Built]) -> None:
        """Count a finished build's bytes while the book holds it; enforce the caps."""
        if self._entries.get(index) is not fut or fut.cancelled() or fut.exception() is not None:
            return
        size = len(fut.result().payload or b"")
        self._sizes[index] = size
        self._held_bytes += size
        self.peak_bytes = max(self.peak_bytes, self._held_bytes)
        if self._held_bytes > self._max_bytes:
            self._evict()

    def _drop(self, index: int) -> None:
        self._entries.pop(index, None)
        self._held_bytes -= self._sizes.pop(index, 0)

    def _evict(self) -> None:
        """Enforce the caps. Bodies some endpoint already took wait only for slower ones: they go first,
        the highest index first (a lagging endpoint needs it last). Bodies nobody took yet are about to
        be sent: they go only beyond the entry cap (dropping them for bytes would rebuild them at once)."""
        done = [i for i, f in self._entries.items() if f.done()]
        for i in sorted((i for i in done if i in self._taken), reverse=True):
            if len(self._entries) <= self._max_entries and self._held_bytes <= self._max_bytes:
                return
            self._drop(i)
        for i in sorted(i for i in done if i not in self._taken):
            if len(self._entries) <= self._max_entries:
                return
            self._drop(i)

    def prefetch(self, indices: Sequence[int]) -> None:
        """Encode the images of `indices` in the background (at most two batches queued)."""
        if self._prefetch is None or not indices or self._prefetching >= 2:
            return
        self._prefetching += 1
        batch = [self._samples[i] for i in indices]
        fut = asyncio.get_running_loop().run_in_executor(self._prefetch_pool, self._prefetch_wanted, batch)
        fut.add_done_callback(self._prefetched)

    def _prefetch_wanted(self, batch: Sequence[Sample]) -> object:
        """Prefetch thread: encode only images still to be taken. A queued batch often starts after the
        builds got there first and released their images: encoding those again would be wasted work, and
        their URLs would stay until the size cap evicts them."""
        assert self._prefetch is not None
        refs = self._image_refs
        return self._prefetch([s for s in batch if any(refs.get(im.key) for im in s.images)])

    def _prefetched(self, fut: asyncio.Future[object]) -> None:
        self._prefetching -= 1
        if not fut.cancelled():
            fut.exception()  # a bad image is reported (naming its sample) by the build that needs it

    async def take(self, index: int, ahead: Sequence[int] = (), prefetch: Sequence[int] = ()) -> Built:
        """The request of sample `index`, starting the builds of `ahead` and the image encoding of
        `prefetch` meanwhile."""
        self.prefetch(prefetch)
        fut = self._start(index)
        for j in ahead:
            self._start(j)
        built = await fut
        left = self._refs.get(index, 1) - 1
        self._refs[index] = left
        if left <= 0:
            self._drop(index)
            self._taken.discard(index)
        else:
            self._taken.add(index)
        self._taken_images(index)
        return built

    def _taken_images(self, index: int) -> None:
        done = []
        for image in self._samples[index].images:
            n = self._image_refs.get(image.key, 0) - 1
            if n > 0:
                self._image_refs[image.key] = n
            elif self._image_refs.pop(image.key, None) is not None:
                done.append(image.key)
        if done and self._release is not None:
            self._release(done)

    def forget(self, index: int) -> None:
        """Drop a cached build (its treatment changed)."""
        self._drop(index)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._prefetch_pool.shutdown(wait=True, cancel_futures=True)


class ProgressSink(Protocol):
    """Receives progress; the CLI draws it (rich), a library caller may pass nothing."""

    def begin(self, endpoint: str, total: int) -> None:
        """An endpoint has `total` samples to send in this pass."""

    def update(
        self,
        endpoint: str,
        *,
        done: int,
        errors: int,
        in_flight: int,
        concurrency: int,
        connection_failures: int = 0,
    ) -> None:
        """Counters of one endpoint (called a few times per second). `errors`: stored failures;
        `connection_failures`: attempts that could not reach the server (a dead server's requests are
        left unsent for a resume, so they never become stored failures)."""

    def end(self, endpoint: str) -> None:
        """An endpoint finished its pass."""

    def message(self, text: str) -> None:
        """A line worth telling the user (e.g. an image limit learned)."""


class NullProgress:
    """A progress sink that shows nothing."""

    def begin(self, endpoint: str, total: int) -> None:
        return None

    def update(
        self,
        endpoint: str,
        *,
        done: int,
        errors: int,
        in_flight: int,
        concurrency: int,
        connection_failures: int = 0,
    ) -> None:
        return None

    def end(self, endpoint: str) -> None:
        return None

    def message(self, text: str) -> None:
        return None


@dataclass
class EndpointRun:
    """One endpoint during a run: its resolution, its store run and this session's counters."""

    name: str
    resolved: ResolvedEndpoint
    run_id: int
    # The image limit known before the first question is sent (the start-up probe); with --max-images it
    # decides --multi-image skip|merge. A limit a refusal reveals mid-run (`learned_limit`) is only
    # reported and stored: it never changes what is sent or how it is scored.
    limit: int | None = None
    learned_limit: int | None = None
    # Stored failures to send again on the first pass: "unsupported" (the server's image limit changed
    # since they were refused) or "failures" (every permanent failure: the server changed on purpose).
    resend: str | None = None
    todo: list[int] = field(default_factory=list)
    in_flight_hash: dict[int, str] = field(default_factory=dict)
    dispatcher: Dispatcher | None = None
    done: int = 0
    errors: int = 0
    not_sent: int = 0
    retries: int = 0
    pass_base: int = 0  # `done` when the current pass began (progress counts per pass)
    results: list[Result] = field(default_factory=list)  # this session's results (timings)
    wall_s: float = 0.0
    error: BaseException | None = None
    breaker_told: bool = False  # the user was told the server stopped answering (this pass)


@dataclass(frozen=True)
class SessionStats:
    """What one invocation did for one endpoint (the one-line summary)."""

    endpoint: str
    sent: int
    wall_s: float
    latencies: tuple[float, ...]
    ttfts: tuple[float, ...]
    output_tokens: int
    errors: int
    not_sent: int
    retries: int


class Engine:
    """Dispatches the planned samples to every endpoint and persists each answer as it arrives."""

    def __init__(
        self,
        config: RunConfig,
        plans: Sequence[TaskPlan],
        store: Store,
        endpoints: Sequence[EndpointRun],
        encoder: ImageEncoder,
        *,
        progress: ProgressSink | None = None,
        workers: int | None = None,
        gate: Any = None,
    ) -> None:
        self.config = config
        self.options = config.options
        self.plans = plans
        self.store = store
        self.endpoints = list(endpoints)
        self.encoder = encoder
        self.progress: ProgressSink = progress or NullProgress()
        self.gen = config.generation.params()
        self.samples: list[Sample] = [s for p in plans for s in p.samples]
        self.tasks: dict[str, Task] = {p.task.name: p.task for p in plans}
        self.stored: dict[tuple[str, str], SampleRecord] = store.samples()
        self._registering: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._accepted: set[tuple[int, str, str]] = set()
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.writer: ResultWriter | None = None
        self.stop_requested = False
        self._dispatching: list[asyncio.Task[None]] = []
        # a sequential comparison's look gate (compare.looks.LookGate): order, admit, resolved, ended
        self.gate = gate
        if gate is not None:
            gate.bind(self)

    # -- multi-image limits -------------------------------------------------------------------------------

    def shared_limit(self) -> int | None:
        """The image limit --multi-image skip|merge applies: `--max-images` when given (it always wins),
        else the smallest limit the start-up probe found. Never a limit learned while sending."""
        if self.options.max_images is not None:
            return self.options.max_images
        limits = [e.limit for e in self.endpoints if e.limit is not None]
        return min(limits) if limits else None

    def _build(self, index: int, sample: Sample, task: Task) -> Built:
        return build_one(
            index, sample, task, self.gen, self.encoder, self.options.multi_image, self.shared_limit()
        )

    # -- samples: hash guard and registration -------------------------------------------------------------

    def accept(self, built: Built) -> asyncio.Future[None] | None:
        """Check a built request against the store and register it; returns what to await (if anything)
        before sending it: the commit of its registration, so that a stored answer always has its
        sample's request hash and a killed run's answers are recognised as done when it resumes."""
        key = (built.sample.task, built.sample.id)
        mark = (built.index, built.request_hash, built.treatment)
        if mark in self._accepted:
            return self._registering.get(key)
        self._accepted.add(mark)
        rec = built.record()
        stored = self.stored.get(key)
        if stored is None:
            self.stored[key] = rec
            return self._register(key, rec)
        if stored.request_hash == rec.request_hash and stored.treatment == rec.treatment:
            return self._registering.get(key)
        policy = self.options.multi_image
        if stored.treatment == "full" and rec.treatment != "full" and policy in ("skip", "merge"):
            # a limit known at start-up now that was not when this sample was sent whole: deliberately
            # change how it is sent
            self.store.retreat_samples([rec])
            self.stored[key] = rec
            return None
        raise ConfigError(
            f"{self.store.path} holds a different request for {built.sample.task} {built.sample.id!r} "
            f"({stored.treatment}, {stored.request_hash[:12]} vs {rec.treatment}, {rec.request_hash[:12]}): "
            "the generation parameters, image format or PNG level, multi-image policy, prompt or data differ from the "
            "run stored there",
            hint="use a new --output-path, or rerun with the original options",
        )

    def _register(self, key: tuple[str, str], rec: SampleRecord) -> asyncio.Future[None]:
        """Queue a registration on the writer thread (group-committed with the answers)."""
        assert self.writer is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._registering[key] = fut

        self.writer.register([rec], _threadsafe(loop, _resolve, fut), _threadsafe_error(loop, fut))
        return fut

    # -- what to send -----------------------------------------------------------------------------------

    def compute_todo(self, ep: EndpointRun, *, first_pass: bool) -> list[int]:
        """Indices of the samples this endpoint still needs, in document order.

        First pass: missing, transient failures (and permanent ones with --rerun-errors, or those
        `ep.resend` names), results of an older request, samples the image limit known at start-up now
        sends differently. Later passes only what has no result for its current request.
        """
        results = self.store.results(ep.run_id)
        limit = self.shared_limit()
        policy = self.options.multi_image
        out = []
        for i, sample in enumerate(self.samples):
            key = (sample.task, sample.id)
            srec = self.stored.get(key)
            if srec is None:
                out.append(i)
                continue
            if srec.treatment == "skipped":
                if policy != "skip":
                    out.append(i)  # rebuilt as sent now: the hash guard explains the mismatch
                continue
            if srec.treatment == "full" and treatment_for(srec.image_count, policy, limit) != "full":
                out.append(i)
                continue
            rec = results.get(key)
            stale = rec is None or rec.request_hash != srec.request_hash
            if stale or (first_pass and not self._done(ep, rec)):  # type: ignore[arg-type]
                out.append(i)
        return out

    def _done(self, ep: EndpointRun, rec: ResultRecord) -> bool:
        if not is_done(rec, rerun_errors=self.options.rerun_errors):
            return False
        if rec.outcome == "unsupported" and rec.attempts == 0:
            return False  # recorded as not sent by an older vlmparity (a limit learned mid-run): send it
        if rec.answered or ep.resend is None:
            return True
        return not (ep.resend == "failures" or rec.outcome == "unsupported")

    async def verify_stored(self) -> None:
        """Rebuild the first stored sample of each task and compare hashes before sending anything.

        Samples sent in this run are each checked as they are built; this catches changed options even
        when every sample left to send is new to the store.
        """
        loop = asyncio.get_running_loop()
        for plan in self.plans:
            for sample in plan.samples:
                srec = self.stored.get((sample.task, sample.id))
                if srec is not None and srec.treatment != "skipped":
                    index = self.samples.index(sample)
                    built = await loop.run_in_executor(None, self._build, index, sample, plan.task)
                    self.accept(built)
                    break

    # -- dispatch ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Passes until every endpoint has a result for every sample's current request."""
        from vlmparity.store import store_path

        self.writer = ResultWriter(store_path(self.options.output_path))
        book: RequestBook | None = None
        try:
            await self.verify_stored()
            for pass_no in range(3):
                for ep in self.endpoints:
                    ep.todo = self.compute_todo(ep, first_pass=pass_no == 0) if ep.error is None else []
                    if self.gate is not None:
                        ep.todo = self.gate.order(ep.name, ep.todo)
                if self.gate is not None and await self.gate.begin():
                    break
                if not any(ep.todo for ep in self.endpoints) or self.stop_requested:
                    break
                book = RequestBook(
                    self.samples,
                    self.tasks,
                    self._build,
                    workers=self.workers,
                    prefetch=self.encoder.prefetch,
                    release=self.encoder.release,
                )
                for ep in self.endpoints:
                    book.want(ep.todo)
                await self._pass(book)
                book.close()
                book = None
                await self._flushed()  # the next pass reads the store
                fatal = [ep.error for ep in self.endpoints if isinstance(ep.error, ConfigError)]
                if fatal:
                    raise fatal[0]
        except BaseException as exc:
            if book is not None:
                book.close()
            # Interrupted (cancelled) or failed: commit what was received, but do not wait for ever on a
            # disk that does not answer. The store is safe either way (a transaction cut short is rolled
            # back when it is next opened).
            with contextlib.suppress(Exception):
                self.writer.close(timeout=WRITER_GRACE_S)
            if self.writer.error is not None and not isinstance(
                exc, asyncio.CancelledError | KeyboardInterrupt
            ):
                raise self.writer_failure() from None
            raise
        self.writer.close()

    def writer_failure(self) -> VlmparityError:
        """The store writer's own one-line error (it names the cause)."""
        assert self.writer is not None
        return self.writer.failure() or DataError("the run store writer stopped")

    async def _flushed(self) -> None:
        """Wait until every answer queued so far is committed, without holding a thread (cancellable)."""
        assert self.writer is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.writer.register([], _threadsafe(loop, _resolve, fut), _threadsafe_error(loop, fut))
        await fut

    async def _pass(self, book: RequestBook) -> None:
        ticker = asyncio.create_task(self._tick())
        self._dispatching = [
            asyncio.create_task(self._dispatch(ep, book)) for ep in self.endpoints if ep.todo
        ]
        try:
            await asyncio.gather(*self._dispatching)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self._report_all()

    async def _dispatch(self, ep: EndpointRun, book: RequestBook) -> None:
        from vlmparity.client import Dispatcher, RetryPolicy

        opts = self.options
        ep.dispatcher = Dispatcher(
            ep.resolved,
            concurrency=opts.concurrency if isinstance(opts.concurrency, int) else None,
            attempt_timeout_s=opts.timeout,
            retry=RetryPolicy(max_attempts=opts.max_retries + 1),
            keep_response=False,
            stream=self.gen.stream,  # known here: the dispatcher need not look into megabyte bodies
        )
        ep.pass_base = ep.done
        self.progress.begin(ep.name, len(ep.todo))
        t0 = time.perf_counter()
        try:
            await ep.dispatcher.run(self._feed(ep, book), lambda r: self._on_result(ep, r))
        except asyncio.CancelledError:
            failure = self.writer.failure() if self.writer is not None and self.writer.stopped else None
            if failure is None:
                raise  # Ctrl-C / SIGTERM: the run is being cancelled
            ep.error = failure  # the store stopped: answers in flight could not be stored anyway
        except VlmparityError as exc:
            ep.error = exc
            if isinstance(exc, ConfigError):  # a store mismatch concerns every endpoint: stop them all
                self.request_stop()
        finally:
            ep.wall_s += time.perf_counter() - t0
            ep.retries += ep.dispatcher.stats.retries
            self._report(ep)
            self.progress.end(ep.name)
            if self.gate is not None:
                self.gate.endpoint_ended(ep.name)

    def request_stop(self) -> None:
        """Stop taking new samples everywhere (answers in flight are still stored)."""
        self.stop_requested = True
        for ep in self.endpoints:
            if ep.dispatcher is not None:
                ep.dispatcher.request_stop()

    async def _feed(self, ep: EndpointRun, book: RequestBook) -> AsyncIterator[tuple[str, bytes]]:
        todo = ep.todo
        ahead = 2 * self.workers + 2
        for pos, index in enumerate(todo):
            if self.stop_requested:
                return
            if self.gate is not None and not await self.gate.admit(index):
                self.gate.resolved(ep.name, index)
                if self.stop_requested:
                    return
                continue
            try:
                built = await book.take(
                    index, todo[pos + 1 : pos + 1 + ahead], todo[pos + 1 : pos + 1 + PREFETCH_SAMPLES]
                )
            except DataError as exc:
                # A request that cannot be built (an undecodable image): stop feeding this endpoint, but
                # end the feed normally so the requests already in flight finish and are stored. The row
                # is named: a rerun stops there again until the data is fixed.
                sample = self.samples[index]
                ep.error = DataError(f"{sample.task} row {sample.doc_id}, {exc.message}", hint=exc.hint)
                return
            try:
                registered = self.accept(built)
                if registered is not None:  # its hash must be durable before it is sent (or it failed)
                    await registered
            except DataError:
                if self.writer is not None and self.writer.failed:
                    # The store refuses: send nothing more, but let the requests in flight finish, so
                    # their answers are stored; the writer's error ends the run after this pass.
                    return
                raise
            if built.treatment == "skipped" or built.payload is None:
                ep.not_sent += 1
                ep.done += 1
                if self.gate is not None:
                    self.gate.resolved(ep.name, index)
                continue
            ep.in_flight_hash[index] = built.request_hash
            yield str(index), built.payload

    def _on_result(self, ep: EndpointRun, result: Result) -> None:
        index = int(result.sample_id)
        sample = self.samples[index]
        rhash = ep.in_flight_hash.pop(index)
        outcome = str(result.outcome.value if hasattr(result.outcome, "value") else result.outcome)
        text = result.text if outcome in ANSWERED else None
        if outcome == "empty" and text is None:
            text = ""
        assert self.writer is not None
        self.writer.put(
            ResultRecord(
                run_id=ep.run_id,
                task=sample.task,
                sample_id=sample.id,
                request_hash=rhash,
                outcome=outcome,
                text=text,
                finish_reason=result.finish_reason,
                status=result.status,
                server_message=result.server_message,
                attempts=result.attempts,
                latency=result.latency_s,
                ttft=result.ttft_s,
                prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens,
                transient=result.transient,
                created=time.time(),
                error_body=result.error_body if outcome not in ANSWERED else None,
                trace=result.trace if self.gen.logprobs else None,
            )
        )
        ep.results.append(result)
        ep.done += 1
        if outcome not in ANSWERED:
            ep.errors += 1
        if self.gate is not None:
            self.gate.resolved(ep.name, index)
        if result.image_limit is not None and (
            ep.learned_limit is None or result.image_limit < ep.learned_limit
        ):
            # Told once and stored as a fact about the server; every question is still sent (whether the
            # next one is refused too is the server's answer to give, and must not depend on timing).
            first = ep.learned_limit is None
            ep.learned_limit = result.image_limit
            self.store.set_image_limit(ep.run_id, result.image_limit)
            if first:
                self.progress.message(
                    f"{ep.name}: the server refused a request with more than {result.image_limit} image(s) "
                    "(every question is still sent; each refusal is that question's outcome)"
                )

    async def _tick(self) -> None:
        while True:
            self._report_all()
            if self.writer is not None and self.writer.failed and not self.stop_requested:
                self.request_stop()  # the store cannot take answers: send nothing more (the error follows)
            if self.writer is not None and self.writer.stopped:
                # nothing can be stored any more: do not wait for requests in flight (a hanging server)
                for task in self._dispatching:
                    task.cancel()
            await asyncio.sleep(0.25)

    def _report_all(self) -> None:
        for ep in self.endpoints:
            self._report(ep)

    def _report(self, ep: EndpointRun) -> None:
        stats = ep.dispatcher.stats if ep.dispatcher is not None else None
        if stats is not None and stats.breaker_open != ep.breaker_told:
            ep.breaker_told = stats.breaker_open
            if stats.breaker_open:
                self.progress.message(
                    f"{ep.name}: the server stopped answering ({stats.connection_failures} connection "
                    "failure(s)); retrying one request at a time"
                )
        self.progress.update(
            ep.name,
            done=ep.done - ep.pass_base,
            errors=ep.errors,
            in_flight=stats.in_flight if stats else 0,
            concurrency=stats.concurrency if stats else 0,
            connection_failures=stats.connection_failures if stats else 0,
        )

    def session_stats(self) -> list[SessionStats]:
        """Per endpoint: what this invocation sent and how fast."""
        out = []
        for ep in self.endpoints:
            rs = ep.results
            out.append(
                SessionStats(
                    endpoint=ep.name,
                    sent=len(rs),
                    wall_s=ep.wall_s,
                    latencies=tuple(r.latency_s for r in rs if r.latency_s is not None),
                    ttfts=tuple(r.ttft_s for r in rs if r.ttft_s is not None),
                    output_tokens=sum(r.completion_tokens or 0 for r in rs),
                    errors=ep.errors,
                    not_sent=ep.not_sent,
                    retries=ep.retries,
                )
            )
        return out


# ----- one run, end to end ----------------------------------------------------------------------------


@dataclass
class RunOutcome:
    """What `run` did: per endpoint its resolution, scores, files written and session statistics."""

    config: RunConfig
    plans: list[TaskPlan]
    endpoints: list[EndpointRun]
    scores: dict[str, list[TaskScore]]  # endpoint -> one TaskScore per task
    sessions: list[SessionStats]
    files: dict[str, list[str]]  # endpoint -> paths written
    run_json: str
    started: float
    finished: float
    errors: dict[str, str] = field(default_factory=dict)  # endpoint -> why it did not finish
    plan_id: int | None = None  # this invocation's plan in the store (`compare` uses exactly it)


def _spec(ep: Any) -> Any:
    from vlmparity.client import BackendKind, EndpointSpec

    return EndpointSpec(
        url=ep.url, name=ep.name, model=ep.model, api_key=ep.api_key, kind=BackendKind(ep.kind)
    )


async def resolve_all(config: RunConfig) -> list[ResolvedEndpoint]:
    """Probe every endpoint concurrently (kind, chat URL, model, server version), waiting for readiness."""
    from vlmparity.client import resolve_endpoint

    return list(
        await asyncio.gather(
            *(
                resolve_endpoint(_spec(e), ready_timeout=config.options.ready_timeout)
                for e in config.endpoints
            )
        )
    )


def plan_spec(config: RunConfig, plans: Sequence[TaskPlan]) -> dict[str, dict[str, Any]]:
    """Per task what an invocation evaluates: the data source (absolute for local data) and the sampling."""
    sampling = config.plan.model_dump() | {"mode": config.plan.mode}
    return {p.task.name: {"source": p.source, "plan": dict(sampling)} for p in plans}


LOGPROBS_META = "logprobs"


def decide_logprobs(
    config: RunConfig,
    store: Store,
    resolved: Sequence[ResolvedEndpoint],
    progress: ProgressSink | None = None,
) -> RunConfig:
    """Whether this run's requests carry `logprobs: true`: one decision for every endpoint (the bodies stay
    byte-identical), kept in the store so that a resumed run sends the same bodies.

    Order: the store's recorded setting (a store holding samples but no setting predates it: off); else
    --logprobs / --no-logprobs; else off when streaming (OVMS gives none then); else on exactly when every
    endpoint answers the deterministic probe request (`client.logprobs.probe_logprobs`) with them."""
    requested = config.generation.logprobs
    stored = store.get_meta(LOGPROBS_META)
    if stored is None and store.samples():
        stored = False  # made before log-probabilities were requested: its bodies have none
    if stored is not None:
        stored = bool(stored)
        if requested is not None and requested != stored:
            flag = "--no-logprobs" if not stored else "--logprobs"
            raise ConfigError(
                f"{store.path} holds a run made {'with' if stored else 'without'} log-probabilities, so "
                f"{'--logprobs' if requested else '--no-logprobs'} would change every request",
                hint=f"rerun with {flag} (or without either), or use a new --output-path",
            )
        decision = stored
    elif requested is not None:
        decision = requested
    elif config.generation.stream:
        decision = False
    else:
        from vlmparity.client.logprobs import probe_logprobs

        async def probe_all() -> list[Any]:
            return list(
                await asyncio.gather(*(probe_logprobs(r, timeout_s=config.options.timeout) for r in resolved))
            )

        support = run_async(probe_all())  # a signal during the probe stops the run like any other
        decision = all(s.supported for s in support)
        if not decision and progress is not None:
            missing = "; ".join(f"{s.endpoint}: {s.reason}" for s in support if not s.supported)
            progress.message(f"log-probabilities off for this run ({missing})")
    store.set_meta(LOGPROBS_META, decision)
    gen = config.generation.model_copy(update={"logprobs": decision})
    return config.model_copy(update={"generation": gen})


def _check_fingerprints(store: Store, plans: Sequence[TaskPlan]) -> None:
    """Refuse to resume a store made from other data (a changed row changes no request of the first sample)."""
    from vlmparity.data.fingerprint import same_data

    for plan in plans:
        key = f"fingerprint:{plan.task.name}"
        old = store.get_meta(key)
        if old is None:
            store.set_meta(key, dict(plan.fingerprint))
        elif not same_data(old, plan.fingerprint):
            raise ConfigError(
                f"{store.path} was made from other {plan.task.name} data ({old.get('source')}, "
                f"{old.get('num_rows')} rows) than {plan.source} ({plan.fingerprint.get('num_rows')} rows)",
                hint="use a new --output-path for other data",
            )


def scoring_settings(run_config: Mapping[str, Any]) -> tuple[int, str]:
    """The N of lmms-eval's failure text and openai-python's error style a stored run was made with."""
    options = run_config.get("options") if isinstance(run_config, Mapping) else None
    options = options if isinstance(options, Mapping) else {}
    n = options.get("max_retries", DEFAULT_MAX_RETRIES)
    style = options.get("openai_error_style", OPENAI_STYLE_MESSAGE)
    return (
        n if isinstance(n, int) and not isinstance(n, bool) and n >= 0 else DEFAULT_MAX_RETRIES,
        style if style in OPENAI_STYLES else OPENAI_STYLE_MESSAGE,
    )


def _check_output_folders(config: RunConfig) -> None:
    """Before anything is sent: nothing is in the way of each endpoint's folder for its lmms-eval files
    (a file of that name would otherwise stop the run only after every answer was received)."""
    out = config.options.output_path
    for ep in config.endpoints:
        folder = out / ep.name
        if folder.exists() and not folder.is_dir():
            raise DataError(
                f"{folder} is a file: endpoint {ep.name!r} writes its lmms-eval files into a folder of that name",
                hint="move it away, or use another --output-path",
            )


def score_endpoint(
    store: Store,
    run_id: int,
    endpoint: str,
    plans: Sequence[TaskPlan],
    *,
    seed: int = 0,
    paired: bool = False,
) -> list[TaskScore]:
    """Score one endpoint's stored results on every planned task (no request is sent).

    The failure text of the lmms-eval policy uses the `--max-retries` (and openai-python error style) the
    run was last made with. `paired` adds the scores paired comparisons use (see `score_task`).
    """
    run = next((r for r in store.runs() if r.run_id == run_id), None)
    max_retries, style = scoring_settings(run.config if run is not None else {})
    out = []
    for plan in plans:
        name = plan.task.name
        sample_records = {sid: rec for (_, sid), rec in store.samples(name).items()}
        results = {sid: rec for (_, sid), rec in store.results(run_id, name).items()}
        out.append(
            score_task(
                plan.task,
                endpoint,
                plan.samples,
                sample_records,
                results,
                seed=seed,
                paired=paired,
                max_retries=max_retries,
                openai_style=style,
            )
        )
    return out


def endpoint_identity(url: str, resolved: ResolvedEndpoint) -> dict[str, Any]:
    """What identifies the server behind an endpoint name: backend kind, version, served model, base URL
    (credentials masked). Stored with the endpoint's answers (the store's `runs` row)."""
    return {
        "kind": str(resolved.kind.value),
        "server_version": resolved.server_version,
        "model": resolved.model,
        "url": public_url(url),
    }


_IDENTITY_NAMES = {"kind": "backend", "server_version": "version", "model": "served model", "url": "URL"}


def identity_changes(previous: RunRecord, now: Mapping[str, Any]) -> list[str]:
    """What differs between a stored endpoint run and the server now ("version 0.10.0 -> 0.11.0", ...).

    A fact the store does not have (an older store, a server that does not tell its version) is no
    change. The image limit is not part of the identity: a changed limit is a fix to pick up (the
    refusals it caused are sent again), not another server.
    """
    out = []
    for key, label in _IDENTITY_NAMES.items():
        old = getattr(previous, key)
        new = now.get(key)
        if key == "url":
            old, new = (old or "").rstrip("/"), (new or "").rstrip("/")
        if old and new and old != new:
            out.append(f"{label} {old} -> {new}")
    return out


def identity_error(name: str, changed: Sequence[str], output_path: Any) -> ConfigError:
    # Answers of another model are never mixed into a run: only a fresh run helps.
    model_changed = any(c.startswith("served model ") for c in changed)
    hint = f"to start a fresh run use another --output-path than {output_path}"
    if not model_changed:
        hint += (
            "; to continue this run on purpose with the new server add --allow-identity-change (its "
            "failures are then sent again; its answers are kept)"
        )
    return ConfigError(
        f"endpoint {name!r} was run against another server: {'; '.join(changed)}",
        hint=hint,
    )


def _plan_image_counts(plans: Sequence[TaskPlan]) -> dict[tuple[str, str], int]:
    return {(s.task, s.id): s.image_count for p in plans for s in p.samples}


async def probe_image_limit(
    resolved: ResolvedEndpoint, n_images: int, timeout: float
) -> tuple[str, int | None]:
    """One request with `n_images` small images: ("accepted", None), ("limit", N) from the server's refusal
    ("At most N image(s)"), or ("unknown", None) when it failed otherwise. Deterministic for a given server."""
    import httpx

    from vlmparity.client.probe_bodies import chat_body
    from vlmparity.client.transport import send_attempt

    body = chat_body(n_images) | {"model": resolved.model}
    async with httpx.AsyncClient(timeout=None) as client:
        attempt = await send_attempt(
            client,
            resolved.chat_url,
            orjson.dumps(body),
            headers=resolved.headers(),
            stream=False,
            timeout=timeout,
        )
    cls = attempt.classification
    if cls.is_answer:
        return "accepted", None
    if cls.image_limit is not None:
        return "limit", cls.image_limit
    return "unknown", None


async def probe_limits(
    config: RunConfig,
    plans: Sequence[TaskPlan],
    store: Store,
    eps: Sequence[EndpointRun],
    progress: ProgressSink,
) -> None:
    """Before the first question is sent: each endpoint's image limit, when it matters.

    - `--multi-image skip|merge` without `--max-images`: the limit decides which questions are skipped or
      merged (an explicit `--max-images` always wins and nothing is probed for it).
    - a resumed run with stored image-limit refusals: when the server's limit now differs from the one
      stored (it was restarted with another limit), those refusals are sent again without --rerun-errors.
    One request per endpoint with as many images as the largest question that needs it.
    """
    opts = config.options
    counts = _plan_image_counts(plans)
    most = max(counts.values(), default=0)
    want_limit = opts.multi_image in ("skip", "merge") and opts.max_images is None and most > 0

    async def one(ep: EndpointRun) -> None:
        refused = 0
        if ep.resend is None:
            sent = store.samples()
            for key, rec in store.results(ep.run_id).items():
                srec = sent.get(key)
                if rec.outcome == "unsupported" and rec.attempts > 0 and srec is not None and key in counts:
                    refused = max(refused, srec.image_count)
        n = max(most if want_limit else 0, refused)
        if n <= 0:
            return
        verdict, limit = await probe_image_limit(ep.resolved, n, min(opts.timeout, 120.0))
        if verdict == "unknown":
            if want_limit:
                progress.message(
                    f"{ep.name}: the image-limit probe failed; every question is sent whole "
                    "(a refusal is that question's outcome)"
                )
            return
        if want_limit:
            ep.limit = limit
        if refused:
            stored = store.get_run(ep.name)
            before = stored.image_limit if stored is not None else None
            if limit != before:
                ep.resend = "unsupported"
                now = f"at most {limit}" if limit is not None else f"{n} or more"
                progress.message(
                    f"{ep.name}: the server now accepts {now} image(s) per request (stored: at most "
                    f"{before}); the questions it refused for their images are sent again"
                )
                store.replace_image_limit(ep.run_id, limit)

    await asyncio.gather(*(one(ep) for ep in eps))


def run(
    config: RunConfig,
    *,
    argv: Sequence[str] = (),
    progress: ProgressSink | None = None,
    plans: list[TaskPlan] | None = None,
    stamp: str | None = None,
    gate: Any = None,
) -> RunOutcome:
    """Evaluate every endpoint on every task, persist each answer, score from the store, write outputs.

    `gate` (default: `SEQUENTIAL_GATE`'s value): a sequential comparison's look gate; when it stops
    the run early, the endpoints are not scored (their lmms-eval files would count every sample not
    sent as wrong): `compare` reads the store itself.

    The output folder is locked for the whole run (`vlmparity.lock`): a second invocation on it stops.
    """
    from vlmparity.lock import hold

    gate = gate if gate is not None else SEQUENTIAL_GATE.get()
    with hold(config.options.output_path, "vlmparity run"):
        return _run(config, argv=argv, progress=progress, plans=plans, stamp=stamp, gate=gate)


def _run(
    config: RunConfig,
    *,
    argv: Sequence[str],
    progress: ProgressSink | None,
    plans: list[TaskPlan] | None,
    stamp: str | None,
    gate: Any,
) -> RunOutcome:
    from vlmparity import __version__
    from vlmparity.data.images import ImageEncoder
    from vlmparity.report import lmms_output, run_summary

    started = time.time()
    stamp = stamp or lmms_output.free_stamp(
        config.options.output_path, [e.name for e in config.endpoints], started
    )
    plans = plans if plans is not None else prepare(config)
    secrets = [e.api_key.get_secret_value() for e in config.endpoints if e.api_key is not None]
    public = config.public()
    # Everything local is checked before any endpoint is contacted: the store (schema, data), the folders.
    store = Store.open(config.options.output_path)
    try:
        _check_output_folders(config)
        _check_fingerprints(store, plans)
        resolved = run_async(resolve_all(config))
        eps = []
        # Every endpoint's identity is checked before any stored run is touched.
        checked = []
        for ecfg, res in zip(config.endpoints, resolved, strict=True):
            previous = store.get_run(ecfg.name)
            identity = endpoint_identity(ecfg.url, res)
            changed = identity_changes(previous, identity) if previous is not None else []
            model_changed = any(c.startswith("served model ") for c in changed)
            if changed and (model_changed or not config.options.allow_identity_change):
                raise identity_error(ecfg.name, changed, config.options.output_path)
            checked.append((ecfg, res, identity, changed))
        # One logprobs decision for every endpoint, before the first question (the bodies stay identical).
        config = decide_logprobs(config, store, resolved, progress)
        public = config.public()  # with the decision: run.json and the stored run config say it
        for ecfg, res, identity, changed in checked:
            rec = store.upsert_run(
                ecfg.name,
                url=identity["url"],
                kind=identity["kind"],
                model=identity["model"],
                server_version=identity["server_version"],
                config=public,
                tool_version=__version__,
            )
            ep = EndpointRun(name=ecfg.name, resolved=res, run_id=rec.run_id)
            if changed:  # continued on purpose: what failed on the former server is asked again
                ep.resend = "failures"
            eps.append(ep)
        asyncio.run(probe_limits(config, plans, store, eps, progress or NullProgress()))
        plan_rec = store.begin_plan(
            [e.name for e in eps], plan_spec(config, plans), config=public, stamp=stamp
        )
        plan_id = plan_rec.plan_id
        run_json = run_summary.write_run_json(
            config, plans, eps, argv=argv, secrets=secrets, started=started, finished=None,
            plan_id=plan_id, plans_made=store.plans(),
        )  # fmt: skip
        encoder = ImageEncoder(config.options.image_format, compress_level=config.options.png_level)
        engine = Engine(config, plans, store, eps, encoder, progress=progress, gate=gate)
        # run.json must not keep saying "running" after the invocation stopped (a full disk, a store
        # error, Ctrl-C): record why, then let the error through unchanged.
        try:
            try:
                run_async(engine.run())
            finally:
                encoder.close()
            scores: dict[str, list[TaskScore]] = {}
            files: dict[str, list[str]] = {}
            errors: dict[str, str] = {}
            finished = time.time()
            for ep in eps:
                if ep.error is None and gate is not None and gate.stopped:
                    continue  # stopped at a look on purpose: not a full run, no lmms-eval files
                if ep.error is not None:
                    errors[ep.name] = (
                        ep.error.one_line() if isinstance(ep.error, VlmparityError) else str(ep.error)
                    )
                    continue  # unfinished: no lmms-eval files that would count its missing answers as wrong
                scores[ep.name] = score_endpoint(
                    store, ep.run_id, ep.name, plans, seed=config.options.score_seed
                )
                files[ep.name] = [
                    str(p)
                    for p in run_summary.write_endpoint_outputs(
                        config, plans, ep, scores[ep.name], stamp=stamp, started=started, finished=finished
                    )
                ]
            sessions = engine.session_stats()
            store.end_plan(
                plan_id, "incomplete" if errors else "complete", [e.name for e in eps if e.name in scores]
            )
        except BaseException as exc:
            with contextlib.suppress(Exception):  # the store may be what failed
                store.end_plan(plan_id, "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed")
            _record_failure(config, plans, eps, argv, secrets, started, exc, plan_id=plan_id)
            raise
        run_json = run_summary.write_run_json(
            config,
            plans,
            eps,
            argv=argv,
            secrets=secrets,
            started=started,
            finished=finished,
            scores=scores,
            sessions=sessions,
            files=files,
            errors=errors,
            plan_id=plan_id,
            plans_made=store.plans(),
        )
    finally:
        store.close()
    return RunOutcome(
        config, plans, eps, scores, sessions, files, str(run_json), started, finished, errors, plan_id
    )


def _record_failure(
    config: RunConfig,
    plans: Sequence[TaskPlan],
    eps: Sequence[EndpointRun],
    argv: Sequence[str],
    secrets: Sequence[str],
    started: float,
    exc: BaseException,
    *,
    plan_id: int | None = None,
) -> None:
    """Rewrite run.json with status "failed" and the reason; never raises (the disk may be full)."""
    from vlmparity.report import run_summary

    interrupted: str | None = None
    if isinstance(exc, KeyboardInterrupt):
        interrupted = signal_of(exc)
        how = "Ctrl-C" if interrupted == "SIGINT" else interrupted
        reason = (
            f"interrupted ({how}); every answer received so far is stored; rerun the same command to resume"
        )
    elif isinstance(exc, VlmparityError):
        reason = exc.one_line()
    else:
        reason = f"{type(exc).__name__}: {exc}"
    with contextlib.suppress(Exception):  # the original error is the one to report
        run_summary.write_run_json(
            config, plans, eps, argv=argv, secrets=secrets, started=started, finished=None, failure=reason,
            plan_id=plan_id, interrupted=interrupted,
        )  # fmt: skip


def public_url(url: str) -> str:
    """The URL as it may be stored (credentials masked)."""
    from vlmparity.config import mask_url

    return mask_url(url)
