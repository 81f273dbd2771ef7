"""The input of the HTML comparison report: plain, JSON-serialisable dataclasses.

The `compare` command fills a `ReportData` from run stores and paired statistics; the renderer
(`report/html.py`) turns it into one self-contained page and never reads a store. Every text field
may hold untrusted text (model answers, prompts, names): the renderer escapes all of it.

Units follow `compare.verdict.PairedResult`: accuracies and their margins are fractions in [0, 1],
MME scores and their margins are score points.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson

from vlmparity.errors import DataError

if TYPE_CHECKING:
    from vlmparity.compare.verdict import PairedResult, Verdict
    from vlmparity.stats import Agreement

SCHEMA_VERSION = 2  # 2: decision intervals, named scoring policies
OUTCOME_CLASSES = ("ok", "http_error", "timeout", "connection", "empty", "length", "unsupported", "malformed")
THUMBNAIL_MAX_SIDE = 160


# --------------------------------------------------------------------------- backends


@dataclass
class Performance:
    """Speed of one backend: per-request latencies and times to first token (seconds), throughput."""

    latencies_s: list[float] = field(default_factory=list)
    ttfts_s: list[float] = field(default_factory=list)  # empty when the backend did not stream
    wall_s: float | None = None  # wall time of the run on this backend
    req_per_s: float | None = None
    output_tokens_per_s: float | None = None


@dataclass
class Backend:
    """One evaluated endpoint (the reference or a candidate) and what it returned."""

    name: str  # the endpoint name used everywhere else in the report
    kind: str = ""  # vllm | ovms | sglang | generic
    model: str = ""
    server_version: str | None = None
    url: str | None = None  # masked: never a secret
    run: str | None = None  # run directory or run id the data came from
    performance: Performance | None = None
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)  # task -> outcome class -> count
    random_fallbacks: dict[str, int] = field(default_factory=dict)  # task -> MMMU random.choice count


# --------------------------------------------------------------------------- tasks


@dataclass
class Breakdown:
    """Per-category (MME) or per-subject (MMMU) values of every backend."""

    label: str  # "category" | "subject"
    unit: str  # "points" (MME category score, 0-200) | "fraction" (accuracy)
    max_value: float  # axis end: 200 for MME category scores, 1.0 for accuracies
    values: dict[str, dict[str, float]] = field(default_factory=dict)  # group -> backend -> value
    counts: dict[str, int] = field(default_factory=dict)  # group -> questions (optional)
    policy: str = ""  # the scoring policy the values are under (lmms-eval | strict | answered)


@dataclass
class TaskSummary:
    """One task as evaluated: data identity, sampling plan and each backend's metrics."""

    name: str  # "mme" | "mmmu_val"
    n_samples: int
    fingerprint: dict[str, Any] = field(default_factory=dict)  # dataset fingerprint fields
    plan: dict[str, Any] = field(default_factory=dict)  # sampling plan as recorded by the run
    # backend -> scoring policy (lmms-eval | strict | answered) -> metric -> value: each run's own scores
    metrics: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    metric_units: dict[str, str] = field(default_factory=dict)  # metric -> "fraction" | "points"
    breakdown: Breakdown | None = None


# --------------------------------------------------------------------------- comparisons


@dataclass
class MetricComparison:
    """One metric compared between the reference (a) and one candidate (b): a judged `PairedResult`
    plus its task (see `compare.verdict` for every field)."""

    task: str
    metric: str
    unit: str  # "fraction" | "points"
    n: int
    n_clusters: int
    a_value: float  # paired values (the mean over the pairs the verdict's policy uses)
    b_value: float
    delta: float  # b_value - a_value
    se: float
    exact_units: int
    exact_scale: float
    margin: float
    discordant_ab: int  # reference right, candidate wrong
    discordant_ba: int  # reference wrong, candidate right
    p_difference: float  # test of no difference (a description)
    difference_test: str
    p_equivalence: float
    p_nonequivalence: float
    boot_low: float | None  # paired bootstrap interval (a description)
    boot_high: float | None
    boot_confidence: float
    available: int | None
    task_per_metric: float
    task_remaining: int | None
    alpha: float
    level: float  # one-sided level the verdict judged this metric at: the interval is (1 - 2 level)
    ci_low: float  # the decision interval
    ci_high: float
    certified_margin: float
    p_equivalence_holm: float
    p_nonequivalence_holm: float
    verdict: str  # equivalent | not equivalent | inconclusive
    n_more: int | None
    remaining: int | None
    full_margin: float | None
    label: str  # e.g. "equivalent within ±0.52 pp"

    @property
    def confidence(self) -> float:
        """Coverage of the decision interval."""
        return 1.0 - 2.0 * self.level

    @classmethod
    def from_paired(cls, task: str, result: PairedResult) -> MetricComparison:
        """Copy a judged `compare.verdict.PairedResult` of `task`, its label written (`report.labels`)."""
        from vlmparity.report.labels import labelled_result

        fields = dataclasses.asdict(labelled_result(result))
        del fields["look"]  # a sequential look's judgement: said by the label
        return cls(task=task, **fields)


@dataclass
class AgreementInfo:
    """How often a candidate gave the same answer as the reference on one task."""

    task: str
    kind: str  # "raw" (answer text) | "parsed" (extracted answer)
    n: int
    n_agree: int
    rate: float
    low: float
    high: float

    @classmethod
    def from_stats(cls, task: str, kind: str, a: Agreement) -> AgreementInfo:
        """Copy a `stats.Agreement`."""
        return cls(task, kind, a.n, a.n_agree, a.rate, a.low, a.high)


@dataclass
class Comparison:
    """One candidate against the reference: its verdict over all metrics (Holm within it)."""

    candidate: str
    verdict: str
    label: str
    exit_code: int
    reasons: list[str] = field(default_factory=list)
    metrics: list[MetricComparison] = field(default_factory=list)
    agreement: list[AgreementInfo] = field(default_factory=list)
    policy: str = "answered"  # the verdict's scoring policy: the metrics' values are paired values under it
    n_used: dict[str, int] = field(default_factory=dict)  # task -> pairs the policy uses

    @classmethod
    def from_verdict(
        cls,
        candidate: str,
        verdict: Verdict,
        tasks: list[str],
        agreement: list[AgreementInfo] | None = None,
        *,
        policy: str = "answered",
        n_used: dict[str, int] | None = None,
    ) -> Comparison:
        """Copy a `compare.verdict.Verdict` (its words written, `report.labels`); `tasks[i]` is the task of
        `verdict.metrics[i]`."""
        from vlmparity.report.labels import labelled_verdict

        verdict = labelled_verdict(verdict)
        if len(tasks) != len(verdict.metrics):
            raise DataError(f"{len(tasks)} task names for {len(verdict.metrics)} metrics")
        metrics = [MetricComparison.from_paired(t, r) for t, r in zip(tasks, verdict.metrics, strict=True)]
        return cls(
            candidate=candidate,
            verdict=verdict.verdict,
            label=verdict.label,
            exit_code=verdict.exit_code,
            reasons=list(verdict.reasons),
            metrics=metrics,
            agreement=list(agreement or []),
            policy=policy,
            n_used=dict(n_used or {}),
        )


@dataclass
class VerdictSummary:
    """The overall verdict of the report (over every candidate)."""

    verdict: str  # equivalent | not equivalent | inconclusive
    label: str
    exit_code: int
    reasons: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- disagreements


@dataclass
class AnswerView:
    """One backend's answer to one sample."""

    raw: str | None  # the model's text; None when the request failed
    parsed: str | list[str] | None  # what the scorer extracted (MMMU open questions: candidates)
    correct: bool | None  # None when not scored
    outcome: str = "ok"  # one of OUTCOME_CLASSES (or "missing")
    random_fallback: bool = False  # MMMU: lmms-eval's random choice decided this answer


@dataclass
class Disagreement:
    """A sample where the backends' parsed answers or correctness differ."""

    task: str
    sample_id: str
    group: str  # MME category / MMMU subject
    prompt: str
    target: str = ""  # the answer key
    images: list[str] = field(default_factory=list)  # JPEG data URLs, see `thumbnail_data_url`
    answers: dict[str, AnswerView] = field(default_factory=dict)  # backend name -> answer
    fingerprints: dict[str, str] = field(default_factory=dict)  # candidate -> closeness fingerprint and cause


# --------------------------------------------------------------------------- the report


@dataclass
class ReportData:
    """Everything the HTML comparison report shows."""

    reference: str  # name of the reference backend (one of `backends`)
    backends: list[Backend]
    verdict: VerdictSummary
    comparisons: list[Comparison] = field(default_factory=list)  # one per candidate
    tasks: list[TaskSummary] = field(default_factory=list)
    disagreements: list[Disagreement] = field(default_factory=list)
    disagreements_total: int | None = None  # set when the list was capped: how many there were
    alpha: float = 0.05
    margins: dict[str, float] = field(default_factory=dict)  # metric -> margin in the metric's unit
    generation: dict[str, Any] = field(default_factory=dict)  # generation parameters sent
    title: str = "vlmparity comparison"
    tool_version: str = ""
    generated_at: str = ""  # ISO 8601
    notes: list[str] = field(default_factory=list)  # e.g. samples excluded for differing request hashes
    closeness: dict[str, Any] | None = None  # report/closeness.report_view: statement, figures, histogram
    schema_version: int = SCHEMA_VERSION

    @property
    def candidates(self) -> list[Backend]:
        """The backends compared against the reference, in order."""
        return [b for b in self.backends if b.name != self.reference]

    def to_dict(self) -> dict[str, Any]:
        """A plain dict (JSON types only)."""
        return dataclasses.asdict(self)

    def to_json(self) -> bytes:
        """UTF-8 JSON of `to_dict()`."""
        return orjson.dumps(self.to_dict(), option=orjson.OPT_INDENT_2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReportData:
        """Rebuild from `to_dict()` output (e.g. a saved `report.json`)."""
        try:
            return _report_from_dict(d)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(
                f"malformed report data: {exc}", hint="regenerate it with vlmparity compare"
            ) from exc


def _report_from_dict(d: dict[str, Any]) -> ReportData:
    version = d.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ValueError(f"schema version {version}, this vlmparity reads {SCHEMA_VERSION}")

    def backend(b: dict[str, Any]) -> Backend:
        perf = b.get("performance")
        return Backend(**{**b, "performance": Performance(**perf) if perf is not None else None})

    def task(t: dict[str, Any]) -> TaskSummary:
        bd = t.get("breakdown")
        return TaskSummary(**{**t, "breakdown": Breakdown(**bd) if bd is not None else None})

    def comparison(c: dict[str, Any]) -> Comparison:
        return Comparison(
            **{
                **c,
                "metrics": [MetricComparison(**m) for m in c.get("metrics", [])],
                "agreement": [AgreementInfo(**a) for a in c.get("agreement", [])],
            }
        )

    def disagreement(x: dict[str, Any]) -> Disagreement:
        answers = {k: AnswerView(**v) for k, v in x.get("answers", {}).items()}
        return Disagreement(**{**x, "answers": answers})

    return ReportData(
        **{
            **d,
            "backends": [backend(b) for b in d["backends"]],
            "verdict": VerdictSummary(**d["verdict"]),
            "comparisons": [comparison(c) for c in d.get("comparisons", [])],
            "tasks": [task(t) for t in d.get("tasks", [])],
            "disagreements": [disagreement(x) for x in d.get("disagreements", [])],
        }
    )


# --------------------------------------------------------------------------- thumbnails


def thumbnail_data_url(image_bytes: bytes, max_side: int = THUMBNAIL_MAX_SIDE, quality: int = 80) -> str:
    """A small JPEG `data:` URL of an encoded image, its longer side at most `max_side` pixels."""
    from PIL import Image, UnidentifiedImageError

    if max_side < 1:
        raise DataError(f"thumbnail size must be positive, got {max_side}")
    try:
        with Image.open(io.BytesIO(image_bytes)) as img:
            img.load()
            thumb = _flatten_rgb(img)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise DataError(
            f"cannot read image for a thumbnail: {exc}", hint="the stored image is corrupt"
        ) from exc
    thumb.thumbnail((max_side, max_side))
    buf = io.BytesIO()
    thumb.save(buf, format="JPEG", quality=quality, optimize=True)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _flatten_rgb(img: Any) -> Any:
    """RGB copy of an image; transparency composited on white (JPEG has no alpha)."""
    from PIL import Image

    if img.mode in ("RGBA", "LA", "P", "PA"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, (255, 255, 255))
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")
