"""The comparison of a candidate run with the reference: paired metrics, verdict, agreement, disagreements.

Pure: takes a `Joined` (see `join.py`) and settings, returns an `Analysis`. The metrics of a task are
its `MetricSpec`s (`task.metric_specs()`): an ACCURACY is the share of questions answered right, its
clusters resampled within strata (`Sample.cluster` within `Sample.group`; McNemar's exact test when
every cluster is one question); a CLUSTER_SCORE is MME's kind of score (clusters within strata). MME
has `mme_acc`, `mme_perception_score` and `mme_cognition_score`; MMMU-val `mmmu_acc`. All of one
candidate's metrics go to one `decide` (Holm across them).

Failures (an endpoint error, a timeout, a sample the run never answered) are handled by a policy,
named like the runs' scoring policies but applied to the pair:
- `answered` (default): the verdict uses only samples both endpoints answered, and only clusters
  whose questions both answered (MME: whole images, so acc_plus stays meaningful). Failures are judged
  separately by the error-rate gate (`health.py`), so an infrastructure problem never reads as an
  accuracy difference;
- `strict`: every pair, a failure is a wrong answer.
Both are computed; the other policy's verdict is shown for information. (`lmms-eval`, which scores a
failure's error text like an answer and so may give it a random MMMU letter, is not offered: a
random letter is noise in a paired test.) The values the verdict compares are therefore *paired*
values: means over the pairs used; the runs' own per-policy scores are reported beside them.

MMMU's random letter for a multiple-choice answer without one is drawn per sample here (seeded by the
sample id, `join.PAIRED_FALLBACK`), not from lmms-eval's one sequence: identical raw answers then get
identical letters, so the fallback adds no spurious disagreement. The runs' own reported `mmmu_acc`
keeps lmms-eval's sequence and can differ from the paired value by a few fallback letters.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlmparity import stats
from vlmparity.compare import verdict as v
from vlmparity.compare.health import (
    Health,
    fallback_counts,
    health,
    image_limit_of,
    notes,
    problems,
)
from vlmparity.compare.join import Joined, LoadedRun, Pair, Side
from vlmparity.errors import ConfigError
from vlmparity.tasks.base import ACCURACY, MetricSpec, Sample, Task, get_task, task_names

if TYPE_CHECKING:
    from vlmparity.data.sampling import Plan

POLICY_EXCLUDED = "answered"
POLICY_PARITY = "strict"
POLICIES = (POLICY_EXCLUDED, POLICY_PARITY)
# Earlier names of the verdict policies, still accepted.
POLICY_ALIASES = {"excluded": POLICY_EXCLUDED, "errors_excluded": POLICY_EXCLUDED, "parity": POLICY_PARITY}
DEFAULT_MAX_ERROR_RATE = 0.02
# The CLI's exit code for infrastructure failures (vlmparity.cli.EXIT_INFRA; a test checks they agree).
# Not imported from the CLI: the arrows point from cli to compare.
EXIT_INFRA = 3

# Disagreement kinds, in the order the terminal lists them (regressions first: they decide CI).
REGRESSION = "regression"  # reference right, candidate wrong
IMPROVEMENT = "improvement"  # reference wrong, candidate right
FAILURE = "failure"  # one side failed (error, timeout, missing), the other answered
OTHER_ANSWER = "other answer"  # both answered, different parsed answers, same correctness
WORDING = "wording"  # same parsed answer, different raw text
KINDS = (REGRESSION, IMPROVEMENT, FAILURE, OTHER_ANSWER, WORDING)


def default_margins() -> dict[str, float]:
    """The default margin of every registered task's metric that is not an accuracy (`margin` sets
    those), from its `MetricSpec`: metric -> margin in its unit (MME: 50 and 20 score points)."""
    return {
        spec.name: spec.margin
        for name in task_names()
        for spec in get_task(name).metric_specs()
        if spec.kind != ACCURACY
    }


@dataclass(frozen=True)
class Settings:
    """Margins (every accuracy's as a fraction; the others per metric in their unit), alpha, policy and
    the error-rate gate."""

    margin: float = v.ACCURACY_MARGIN
    margins: Mapping[str, float] = field(default_factory=default_margins)
    alpha: float = v.ALPHA
    policy: str = POLICY_EXCLUDED
    max_error_rate: float = DEFAULT_MAX_ERROR_RATE
    n_boot: int = stats.DEFAULT_N_BOOT
    seed: int = 0

    def __post_init__(self) -> None:
        policy = POLICY_ALIASES.get(self.policy, self.policy)
        if policy in ("lmms-eval", "lmms_eval"):
            raise ConfigError(
                "--policy lmms-eval cannot decide a verdict: it scores a failure's error text like an "
                "answer (on MMMU a random letter), noise in a paired test",
                hint=f"choose one of {', '.join(POLICIES)}",
            )
        if policy not in POLICIES:
            raise ConfigError(
                f"unknown --policy {self.policy!r}", hint=f"choose one of {', '.join(POLICIES)}"
            )
        object.__setattr__(self, "policy", policy)
        if not 0 <= self.max_error_rate <= 1:
            raise ConfigError(f"--max-error-rate must be between 0 and 1, got {self.max_error_rate}")
        if not self.margin > 0:
            raise ConfigError(f"--margin must be a positive number, got {self.margin}")
        for metric, value in self.margins.items():
            if not value > 0:
                raise ConfigError(f"the margin of {metric} must be a positive number, got {value}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"--alpha must be between 0 and 0.5, got {self.alpha}")

    @property
    def other_policy(self) -> str:
        return POLICY_PARITY if self.policy == POLICY_EXCLUDED else POLICY_EXCLUDED

    def margin_for(self, spec: MetricSpec) -> float:
        """The margin a metric is judged with: `margin` for an accuracy, else its own (default: the spec's)."""
        if spec.kind == ACCURACY:
            return self.margin
        return float(self.margins.get(spec.name, spec.margin))


@dataclass(frozen=True)
class Disagreement:
    """One sample the two endpoints answered differently."""

    task: str
    sample: Sample
    kind: str
    a: Side
    b: Side

    @property
    def sample_id(self) -> str:
        return self.sample.id


@dataclass(frozen=True)
class GroupValue:
    """One stratum's value for both endpoints under the most specific metric it feeds (an MME category's
    score, an MMMU subject's accuracy)."""

    group: str
    metric: str  # e.g. mme_perception_score | mme_cognition_score | mmmu_acc
    a: float
    b: float
    n: int  # questions


@dataclass(frozen=True)
class TaskAnalysis:
    """One task: paired metrics under the chosen and the other policy, agreement, disagreements."""

    task: str
    n_pairs: int
    n_used: int  # pairs the chosen policy's metrics use
    metrics: tuple[v.PairedResult, ...]  # judged together with every other task's (Holm)
    other_metrics: tuple[v.PairedResult, ...]  # the other policy, for information
    raw_agreement: stats.Agreement | None
    parsed_agreement: stats.Agreement | None
    disagreements: tuple[Disagreement, ...]
    groups: tuple[GroupValue, ...]
    health_a: Health
    health_b: Health
    mismatched: tuple[str, ...]
    only_reference: tuple[str, ...]
    only_candidate: tuple[str, ...]
    skipped: tuple[str, ...]
    random_fallbacks: tuple[int, int] = (0, 0)  # answers given a random letter (reference, candidate)


@dataclass(frozen=True)
class Analysis:
    """A candidate compared with the reference: per-task results, the verdict, infrastructure problems."""

    reference: str
    candidate: str
    settings: Settings
    tasks: tuple[TaskAnalysis, ...]
    verdict: v.Verdict
    other_verdict: v.Verdict | None  # the other policy's verdict (information only)
    health_a: Health
    health_b: Health
    problems: tuple[str, ...]  # infrastructure failures: exit 3 whatever the verdict
    notes: tuple[str, ...] = field(default_factory=tuple)
    # each run's own metrics (`own_scores`): endpoint label -> task -> policy key -> metric -> value
    scores: dict[str, dict[str, dict[str, dict[str, float]]]] = field(default_factory=dict)
    # a sequential comparison (`compare --sequential`): design, looks, where and why it stopped
    sequential: Mapping[str, Any] | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_INFRA if self.problems else self.verdict.exit_code

    @property
    def disagreements(self) -> list[Disagreement]:
        return [d for t in self.tasks for d in t.disagreements]


# ----- each run's own scores per named policy -------------------------------------------------------------

# Scoring policies stored under an earlier name (a store scored before the policies were renamed).
POLICY_KEYS = {"errors_excluded": "answered"}


def task_of(name: str) -> Task:
    """The registered task of that name."""
    return get_task(name)


def own_scores(run: LoadedRun) -> dict[str, dict[str, dict[str, float]]]:
    """A run's own metrics per task and named scoring policy, as `vlmparity run` reports them (MMMU's
    sequential lmms-eval draw): task -> policy key (lmms_eval, strict, answered) -> metric -> value.

    A question accuracy the comparison adds (an ACCURACY spec that is not an lmms-eval metric, MME's
    `mme_acc`) is the run's question accuracy.
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task, score in run.scores.items():
        added = [s.name for s in task_of(task).metric_specs() if s.kind == ACCURACY and not s.lmms_eval]
        policies = getattr(score, "policies", None) or (score.parity, score.excluded)
        per: dict[str, dict[str, float]] = {}
        for pol in policies:
            if not pol.n:  # nothing left to score under this policy
                continue
            values = {k: float(x) for k, x in pol.result.metrics.items()}
            if pol.accuracy is not None:
                values.update(dict.fromkeys(added, float(pol.accuracy.estimate)))
            per[POLICY_KEYS.get(pol.policy, pol.policy)] = values
        out[task] = per
    return out


# ----- selection of pairs per policy --------------------------------------------------------------------


def _both_answered(p: Pair) -> bool:
    return p.a.answered and p.b.answered


def used_pairs(task: str, pairs: Sequence[Pair], policy: str) -> list[Pair]:
    """The pairs a policy's metrics use: all (parity), or those both endpoints answered (excluded).

    Whole clusters under `excluded`: a cluster (an MME image) enters only if both endpoints answered
    every one of its questions, so acc_plus compares like with like (a cluster of one question: the pair).
    """
    if policy == POLICY_PARITY:
        return list(pairs)
    broken = {p.sample.cluster for p in pairs if not _both_answered(p)}
    return [p for p in pairs if p.sample.cluster not in broken]


# ----- metrics ---------------------------------------------------------------------------------------


def _stratum_sample(task: str, group: str) -> Sample:
    """A stand-in sample of one stratum, to ask a spec's `members` whether the stratum feeds it."""
    return Sample(task=task, id="", doc_id=-1, target="", group=group, cluster="", images=())


def available_counts(task: str, plan: Plan | None) -> dict[str, int]:
    """Questions of each metric in the data set a plan was drawn from (its full size), by metric."""
    if plan is None:
        return {}
    return {
        spec.name: sum(s.available for s in plan.strata if spec.members(_stratum_sample(task, s.group)))
        for spec in task_of(task).metric_specs()
    }


def _size(metric: str, available: Mapping[str, int], used: int) -> dict[str, Any]:
    """`available`, `task_per_metric` and `task_remaining` for one metric of a task whose verdict uses
    `used` samples (nothing when the data set size is unknown)."""
    total = max(available.values(), default=0)
    n = available.get(metric)
    if not n or not total:
        return {}
    return {"available": n, "task_per_metric": total / n, "task_remaining": max(0, total - used)}


def _clustered(pairs: Sequence[Pair]) -> bool:
    """Whether the task's clusters group several questions (MME's images), or each is one question."""
    return any(p.sample.cluster != p.sample.id for p in pairs)


def task_metrics(
    task: str, pairs: Sequence[Pair], s: Settings, available: Mapping[str, int] | None = None
) -> list[v.PairedResult]:
    """The paired metrics of one task over the given pairs (each judged on its own; `decide` re-judges),
    in its specs' order; a metric no pair feeds is left out.

    `available`: questions per metric in the data set (see `available_counts`), for "how many more".
    """
    if not pairs:
        return []
    sizes = dict(available or {})
    common: dict[str, Any] = {"alpha": s.alpha, "n_boot": s.n_boot, "seed": s.seed}
    clustered = _clustered(pairs)
    out = []
    for spec in task_of(task).metric_specs():
        fed = [p for p in pairs if spec.members(p.sample)]
        if not fed:
            continue
        a = [p.a.correct for p in fed]
        b = [p.b.correct for p in fed]
        strata = [p.sample.group for p in fed]
        clusters = [p.sample.cluster for p in fed]
        extra = {**common, **_size(spec.name, sizes, len(pairs)), "margin": s.margin_for(spec)}
        if spec.kind == ACCURACY:
            out.append(
                v.compare_accuracy(
                    a, b, metric=spec.name, clusters=clusters if clustered else None, strata=strata, **extra
                )
            )
        else:
            out.append(v.compare_cluster_score(strata, clusters, a, b, metric=spec.name, **extra))
    return out


def _group_value(spec: MetricSpec, group: str, ps: Sequence[Pair]) -> GroupValue:
    n = len(ps)
    if spec.kind == ACCURACY:
        return GroupValue(
            group, spec.name, sum(p.a.correct for p in ps) / n, sum(p.b.correct for p in ps) / n, n
        )
    clusters = [p.sample.cluster for p in ps]
    strata = [group] * n
    score_a = stats.stratum_scores(strata, clusters, [p.a.correct for p in ps])[group]
    score_b = stats.stratum_scores(strata, clusters, [p.b.correct for p in ps])[group]
    return GroupValue(group, spec.name, score_a, score_b, n)


def group_values(task: str, pairs: Sequence[Pair]) -> list[GroupValue]:
    """Per stratum its value under the most specific metric it feeds (the one fed by the fewest pairs;
    MME: the category's score, MMMU: the subject's accuracy), for both endpoints; in the specs' order,
    then the strata's document order."""
    if not pairs:
        return []
    by_group: dict[str, list[Pair]] = {}
    for p in sorted(pairs, key=lambda p: p.sample.doc_id):
        by_group.setdefault(p.sample.group, []).append(p)
    specs = list(task_of(task).metric_specs())
    fed = {spec.name: sum(1 for p in pairs if spec.members(p.sample)) for spec in specs}
    chosen: list[tuple[int, GroupValue]] = []
    for group, ps in by_group.items():
        feeding = [(fed[spec.name], i, spec) for i, spec in enumerate(specs) if spec.members(ps[0].sample)]
        if feeding:
            _, i, spec = min(feeding, key=lambda x: (x[0], x[1]))
            chosen.append((i, _group_value(spec, group, ps)))
    return [g for _, g in sorted(chosen, key=lambda x: x[0])]


# ----- agreement and disagreements ---------------------------------------------------------------------


def _agreement(pairs: Sequence[Pair], key: Callable[[Side], Any]) -> stats.Agreement | None:
    answered = [p for p in pairs if _both_answered(p)]
    if not answered:
        return None
    return stats.agreement([key(p.a) for p in answered], [key(p.b) for p in answered])


def classify(p: Pair) -> str | None:
    """The kind of disagreement of a pair, or None when both endpoints answered alike."""
    if not p.a.answered or not p.b.answered:
        if p.a.answered or p.b.answered:
            return FAILURE
        return None  # both failed: an infrastructure matter, counted in Health
    if p.a.correct and not p.b.correct:
        return REGRESSION
    if p.b.correct and not p.a.correct:
        return IMPROVEMENT
    if p.a.parsed != p.b.parsed:
        return OTHER_ANSWER
    if p.a.text != p.b.text:
        return WORDING
    return None


def disagreements(task: str, pairs: Sequence[Pair]) -> list[Disagreement]:
    """Every pair the endpoints answered differently, in document order."""
    out = []
    for p in pairs:
        kind = classify(p)
        if kind is not None:
            out.append(Disagreement(task, p.sample, kind, p.a, p.b))
    return out


def top_disagreements(items: Sequence[Disagreement], n: int) -> list[Disagreement]:
    """The `n` most telling disagreements: regressions, improvements, failures, other answers; not wording."""
    rank = {k: i for i, k in enumerate(KINDS)}
    ordered = sorted((d for d in items if d.kind != WORDING), key=lambda d: rank[d.kind])
    return ordered[: max(0, n)]


# ----- the whole comparison ----------------------------------------------------------------------------


def _policy_metrics(joined: Joined, policy: str, s: Settings) -> list[list[v.PairedResult]]:
    out = []
    for t in joined.tasks:
        plan = joined.reference.plans.get(t.task)
        available = available_counts(t.task, plan.plan if plan is not None else None)
        out.append(task_metrics(t.task, used_pairs(t.task, t.pairs, policy), s, available))
    return out


def _judged(
    per_task: list[list[v.PairedResult]], alpha: float
) -> tuple[v.Verdict | None, list[list[v.PairedResult]]]:
    """One `decide` over every task's metrics; the judged metrics handed back per task."""
    flat = [r for rs in per_task for r in rs]
    if not flat:
        return None, per_task
    verdict = v.decide(flat, alpha)
    out, i = [], 0
    for rs in per_task:
        out.append(list(verdict.metrics[i : i + len(rs)]))
        i += len(rs)
    return verdict, out


def analyse(joined: Joined, settings: Settings | None = None) -> Analysis:
    """Compare the joined candidate with the reference under `settings`."""
    s = settings or Settings()
    a_label, b_label = joined.reference.label, joined.candidate.label
    all_pairs = [p for t in joined.tasks for p in t.pairs]
    ha = health(a_label, [p.a for p in all_pairs])
    hb = health(b_label, [p.b for p in all_pairs])
    limits = (image_limit_of(joined.reference), image_limit_of(joined.candidate))
    issues = problems(joined.tasks, ha, hb, s.max_error_rate, limits)

    chosen = _policy_metrics(joined, s.policy, s)
    verdict, chosen = _judged(chosen, s.alpha)
    if verdict is None:
        issues.append("no paired sample left to compare under the chosen policy")
        verdict = v.Verdict(
            v.INCONCLUSIVE, f"{v.INCONCLUSIVE} (nothing to compare)", 2, s.alpha, None, (), ()
        )
    failures_anywhere = any(not (p.a.answered and p.b.answered) for p in all_pairs)
    if failures_anywhere:
        other = _policy_metrics(joined, s.other_policy, s)
        other_verdict, other = _judged(other, s.alpha)
    else:  # without failures both policies use the same samples
        other, other_verdict = chosen, verdict

    tasks = []
    for t, metrics, other_metrics in zip(joined.tasks, chosen, other, strict=True):
        used = used_pairs(t.task, t.pairs, s.policy)
        tasks.append(
            TaskAnalysis(
                task=t.task,
                n_pairs=len(t.pairs),
                n_used=len(used),
                metrics=tuple(metrics),
                other_metrics=tuple(other_metrics),
                raw_agreement=_agreement(t.pairs, lambda x: x.text),
                parsed_agreement=_agreement(t.pairs, lambda x: _hashable(x.parsed)),
                disagreements=tuple(disagreements(t.task, t.pairs)),
                groups=tuple(group_values(t.task, used)),
                health_a=health(a_label, [p.a for p in t.pairs]),
                health_b=health(b_label, [p.b for p in t.pairs]),
                mismatched=t.mismatched,
                only_reference=t.only_reference,
                only_candidate=t.only_candidate,
                skipped=t.skipped,
                random_fallbacks=fallback_counts(t.pairs),
            )
        )
    return Analysis(
        reference=a_label,
        candidate=b_label,
        settings=s,
        tasks=tuple(tasks),
        verdict=verdict,
        other_verdict=other_verdict,
        health_a=ha,
        health_b=hb,
        problems=tuple(issues),
        notes=tuple(
            [f"{t}: evaluated by only one of the two runs, not compared" for t in joined.unpaired_tasks]
            + notes(joined.tasks, a_label, b_label)
        ),
        scores={a_label: own_scores(joined.reference), b_label: own_scores(joined.candidate)},
    )


def _hashable(value: Any) -> Any:
    """Parsed answers as comparable values (MMMU open questions parse to lists)."""
    if isinstance(value, list):
        return tuple(_hashable(x) for x in value)
    return value


def overall_exit_code(analyses: Sequence[Analysis]) -> int:
    """One exit code for several candidates: infrastructure first, then the worst verdict."""
    codes = {a.exit_code for a in analyses}
    for code in (EXIT_INFRA, v.EXIT_CODES[v.NOT_EQUIVALENT], v.EXIT_CODES[v.INCONCLUSIVE]):
        if code in codes:
            return code
    return v.EXIT_CODES[v.EQUIVALENT]
