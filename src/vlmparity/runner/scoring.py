"""Scoring a run from the store: the three failure policies, outcome counts and each metric's interval.

A pure function of the store: `score_endpoint` reads one endpoint's stored results and scores every
planned task under the three policies (`lmms-eval`: a failure is scored from the text lmms-eval would
have recorded for it; `strict`: a failure is a wrong answer; `answered`: failures left out). A metric's
95 % interval follows its kind in the task's `metric_specs()`: Wilson for an accuracy over the samples
that feed it, the stratified cluster bootstrap for a cluster score (MME's perception and cognition).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from vlmparity.store import ANSWERED, ResultRecord, SampleRecord, Store
from vlmparity.tasks.base import (
    ACCURACY,
    CLUSTER_SCORE,
    FALLBACK_PER_SAMPLE,
    Answer,
    MetricSpec,
    Sample,
    SampleScore,
    Task,
    TaskResult,
)
from vlmparity.tasks.failure_text import (
    DEFAULT_MAX_RETRIES,
    OPENAI_STYLE_MESSAGE,
    OPENAI_STYLES,
    lmms_eval_failure_text,
)

if TYPE_CHECKING:
    from vlmparity.runner.plan import TaskPlan

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
# The random-fallback mode of paired comparisons (a task's `score(..., fallback=)`, MMMU's): the letter
# drawn for an unparseable multiple-choice answer depends on (seed, sample_id) only, so two endpoints
# that gave the same raw answer get the same letter. Reported per-run scores keep lmms-eval's sequence.
PAIRED_FALLBACK = FALLBACK_PER_SAMPLE


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
    intervals: Mapping[str, Bounds]  # per metric: Wilson (accuracies) or bootstrap (cluster scores)


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


def _wilson(k: int, n: int) -> Bounds | None:
    if n == 0:
        return None
    from vlmparity.stats import wilson_interval

    iv = wilson_interval(k, n)
    return Bounds(iv.estimate, iv.low, iv.high, "wilson")


def _interval(
    spec: MetricSpec, value: float, rows: Sequence[tuple[Sample, SampleScore]], seed: int
) -> Bounds | None:
    """One metric's interval over the samples that feed it, by the kind of its statistic."""
    if spec.kind == CLUSTER_SCORE:
        from vlmparity.stats import cluster_score_interval

        iv = cluster_score_interval(
            [s.group for s, _ in rows],
            [s.cluster for s, _ in rows],
            [sc.correct for _, sc in rows],
            n_boot=N_BOOT,
            seed=seed,
        )
        return Bounds(value, iv.low, iv.high, iv.method)
    if spec.kind != ACCURACY:
        raise ValueError(f"metric {spec.name!r}: unknown kind {spec.kind!r}")
    wil = _wilson(sum(1 for _, sc in rows if sc.correct), len(rows))
    return None if wil is None else Bounds(value, wil.low, wil.high, "wilson")


def _intervals(
    task: Task, samples: Sequence[Sample], scores: Sequence[SampleScore], result: TaskResult, seed: int
) -> dict[str, Bounds]:
    """Per metric of `result` the task declares (`metric_specs`): its interval over its member samples."""
    kept = [(s, sc) for s, sc in zip(samples, scores, strict=True) if sc.scored]
    specs = {spec.name: spec for spec in task.metric_specs()}
    out: dict[str, Bounds] = {}
    for metric, value in result.metrics.items():
        spec = specs.get(metric)
        if spec is None:
            continue
        rows = [(s, sc) for s, sc in kept if spec.members(s)]
        bounds = _interval(spec, float(value), rows, seed) if rows else None
        if bounds is not None:
            out[metric] = bounds
    return out


def _policy(
    task: Task, policy: str, samples: Sequence[Sample], scores: Sequence[SampleScore], seed: int
) -> PolicyScore:
    result = task.aggregate(samples, scores, allow_partial_pairs=policy == POLICY_ANSWERED)
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


@dataclass
class _Kept:
    """The samples of a task that were sent (or are due), with their current results."""

    samples: list[Sample] = field(default_factory=list)
    records: list[ResultRecord | None] = field(default_factory=list)
    treatments: dict[str, str] = field(default_factory=dict)
    skipped: int = 0
    merged: int = 0


def _kept(
    samples: Sequence[Sample], sample_records: Mapping[str, SampleRecord], results: Mapping[str, ResultRecord]
) -> _Kept:
    out = _Kept()
    for sample in samples:
        srec = sample_records.get(sample.id)
        treatment = srec.treatment if srec is not None else "full"
        if treatment == "skipped":
            out.skipped += 1
            continue
        if treatment == "merged":
            out.merged += 1
        out.treatments[sample.id] = treatment
        rec = results.get(sample.id)
        if rec is not None and srec is not None and rec.request_hash != srec.request_hash:
            rec = None  # stale: the result of an older request
        out.samples.append(sample)
        out.records.append(rec)
    return out


def _lmms_answers(
    answers: Sequence[Answer], records: Sequence[ResultRecord | None], max_retries: int, style: str
) -> tuple[list[Answer], dict[str, str]]:
    """lmms-eval's answers: a failed request is the text lmms-eval would have recorded, scored like any
    answer (it takes its MMMU random draw in document order). A missing result (an unfinished run) has no
    such text: it is wrong and takes no draw under every policy."""
    failure_texts: dict[str, str] = {}
    out = []
    for a, rec in zip(answers, records, strict=True):
        if a.text is None and rec is not None:
            text = lmms_eval_failure_text(
                rec.outcome,
                rec.status,
                rec.error_body,
                rec.server_message,
                max_retries=max_retries,
                style=style,
            )
            failure_texts[a.sample_id] = text
            out.append(replace(a, text=text))
        else:
            out.append(a)
    return out, failure_texts


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
    random fallbacks drawn per sample).
    """
    kept = _kept(samples, sample_records, results)
    answers = [answer_for(s, r) for s, r in zip(kept.samples, kept.records, strict=True)]
    outcomes: dict[str, int] = {}
    for a in answers:
        outcomes[a.outcome] = outcomes.get(a.outcome, 0) + 1
    lmms_answers, failure_texts = _lmms_answers(answers, kept.records, max_retries, openai_style)
    todo = kept.samples
    lmms_scores = task.score(todo, lmms_answers, seed=seed) if todo else []
    # strict: a failure is wrong and takes no draw; answered: the same scores with the failures left out
    # (so the two agree on every answered question, fallbacks included).
    strict_scores = task.score(todo, answers, seed=seed) if todo and failure_texts else lmms_scores
    answered_scores = [
        sc if a.text is not None else replace(sc, scored=False)
        for sc, a in zip(strict_scores, answers, strict=True)
    ]
    paired_scores = task.score(todo, answers, seed=seed, fallback=PAIRED_FALLBACK) if paired and todo else []
    return TaskScore(
        endpoint=endpoint,
        task=task.name,
        samples=tuple(todo),
        records=tuple(kept.records),
        answers=tuple(answers),
        scores=tuple(lmms_scores),
        lmms_eval=_policy(task, POLICY_LMMS_EVAL, todo, lmms_scores, seed),
        strict=_policy(task, POLICY_STRICT, todo, strict_scores, seed),
        answered=_policy(task, POLICY_ANSWERED, todo, answered_scores, seed),
        outcomes=outcomes,
        skipped=kept.skipped,
        merged=kept.merged,
        treatments=kept.treatments,
        paired=tuple(paired_scores),
        failure_texts=failure_texts,
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
