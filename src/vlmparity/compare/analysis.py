"""The comparison of a candidate run with the reference: paired metrics, verdict, agreement, disagreements.

Pure: takes a `Joined` (see `join.py`) and settings, returns an `Analysis`. Metrics per task:
- `mme`: `mme_acc` (question accuracy, images as clusters within categories), `mme_perception_score`
  and `mme_cognition_score` (images resampled within categories);
- `mmmu_val`: `mmmu_acc` (questions within subjects).
All of one candidate's metrics go to one `decide` (Holm across them).

Failures (an endpoint error, a timeout, a sample the run never answered) are handled by a policy,
named like the runs' scoring policies but applied to the pair:
- `answered` (default): the verdict uses only samples both endpoints answered (for MME, only images
  whose questions both answered, so acc_plus stays meaningful). Failures are judged separately by the
  error-rate gate, so an infrastructure problem never reads as an accuracy difference;
- `strict`: every pair, a failure is a wrong answer.
Both are computed; the other policy's verdict is shown for information. (`lmms-eval`, which scores a
failure's error text like an answer and so may give it a random MMMU letter, is not offered: a
random letter is noise in a paired test.) The values the verdict compares are therefore *paired*
values: means over the pairs used; the runs' own per-policy scores are reported beside them.

MMMU's random letter for a multiple-choice answer without one is drawn per sample here (seeded by the
sample id, `runner.PAIRED_FALLBACK`), not from lmms-eval's one sequence: identical raw answers then get
identical letters, so the fallback adds no spurious disagreement. The runs' own reported `mmmu_acc`
keeps lmms-eval's sequence and can differ from the paired value by a few fallback letters.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from vlmparity import stats
from vlmparity.backends import backend_kinds, get_backend
from vlmparity.compare import verdict as v
from vlmparity.compare.join import Joined, LoadedRun, Pair, Side, TaskJoin, is_missing
from vlmparity.errors import ConfigError
from vlmparity.runner import PAIRED_FALLBACK
from vlmparity.tasks.base import Sample

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


@dataclass(frozen=True)
class Settings:
    """Margins (accuracy as a fraction, MME in score points), alpha, policy and the error-rate gate."""

    margin: float = v.ACCURACY_MARGIN
    mme_margin_perception: float = v.MME_MARGIN["mme_perception_score"]
    mme_margin_cognition: float = v.MME_MARGIN["mme_cognition_score"]
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
        for name in ("margin", "mme_margin_perception", "mme_margin_cognition"):
            value = getattr(self, name)
            if not value > 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be a positive number, got {value}")
        if not 0 < self.alpha < 0.5:
            raise ConfigError(f"--alpha must be between 0 and 0.5, got {self.alpha}")

    @property
    def other_policy(self) -> str:
        return POLICY_PARITY if self.policy == POLICY_EXCLUDED else POLICY_EXCLUDED


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
    """One MME category's score or one MMMU subject's accuracy for both endpoints."""

    group: str
    metric: str  # mme_perception_score | mme_cognition_score | mmmu_acc
    a: float
    b: float
    n: int  # questions


@dataclass(frozen=True)
class Health:
    """What one endpoint returned for the paired samples: outcome counts and the error rate."""

    label: str
    n: int
    outcomes: dict[str, int]
    failures: int  # errors the endpoint returned (missing excluded)
    missing: int  # no stored answer (an interrupted run)

    @property
    def error_rate(self) -> float:
        return self.failures / self.n if self.n else 0.0


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

# Scoring policies by JSON key, with the names tables show (`runner.POLICY_LABELS` once it has them).
POLICY_DISPLAY = {"lmms_eval": "lmms-eval", "strict": "strict", "answered": "answered"}
POLICY_KEYS = {"errors_excluded": "answered"}  # a store scored before the policies were renamed


def own_scores(run: LoadedRun) -> dict[str, dict[str, dict[str, float]]]:
    """A run's own metrics per task and named scoring policy, as `vlmparity run` reports them (MMMU's
    sequential lmms-eval draw): task -> policy key (lmms_eval, strict, answered) -> metric -> value.

    MME also gets `mme_acc`, its question accuracy (the metric the verdict compares besides the scores).
    """
    out: dict[str, dict[str, dict[str, float]]] = {}
    for task, score in run.scores.items():
        policies = getattr(score, "policies", None) or (score.parity, score.excluded)
        per: dict[str, dict[str, float]] = {}
        for pol in policies:
            if not pol.n:  # nothing left to score under this policy
                continue
            values = {k: float(x) for k, x in pol.result.metrics.items()}
            if task == "mme" and pol.accuracy is not None:
                values["mme_acc"] = float(pol.accuracy.estimate)
            per[POLICY_KEYS.get(pol.policy, pol.policy)] = values
        out[task] = per
    return out


# ----- selection of pairs per policy --------------------------------------------------------------------


def _both_answered(p: Pair) -> bool:
    return p.a.answered and p.b.answered


def used_pairs(task: str, pairs: Sequence[Pair], policy: str) -> list[Pair]:
    """The pairs a policy's metrics use: all (parity), or those both endpoints answered (excluded).

    MME drops whole images under `excluded`: an image enters only if both endpoints answered every
    one of its questions, so acc_plus compares like with like.
    """
    if policy == POLICY_PARITY:
        return list(pairs)
    if task == "mme":
        broken = {p.sample.cluster for p in pairs if not _both_answered(p)}
        return [p for p in pairs if p.sample.cluster not in broken]
    return [p for p in pairs if _both_answered(p)]


# ----- metrics ---------------------------------------------------------------------------------------


def available_counts(task: str, plan: Plan | None) -> dict[str, int]:
    """Questions of each metric in the data set a plan was drawn from (its full size), by metric."""
    if plan is None:
        return {}
    if task == "mme":
        from vlmparity.tasks.mme import COGNITION_METRIC, PERCEPTION_METRIC, metric_for

        out = {"mme_acc": plan.total, PERCEPTION_METRIC: 0, COGNITION_METRIC: 0}
        for stratum in plan.strata:
            out[metric_for(stratum.group)] += stratum.available
        return out
    return {_accuracy_metric(task): plan.total}


def _accuracy_metric(task: str) -> str:
    return "mmmu_acc" if task.startswith("mmmu") else f"{task}_acc"


def _size(metric: str, available: Mapping[str, int], used: int) -> dict[str, Any]:
    """`available`, `task_per_metric` and `task_remaining` for one metric of a task whose verdict uses
    `used` samples (nothing when the data set size is unknown)."""
    total = max(available.values(), default=0)
    n = available.get(metric)
    if not n or not total:
        return {}
    return {"available": n, "task_per_metric": total / n, "task_remaining": max(0, total - used)}


def task_metrics(
    task: str, pairs: Sequence[Pair], s: Settings, available: Mapping[str, int] | None = None
) -> list[v.PairedResult]:
    """The paired metrics of one task over the given pairs (each judged on its own; `decide` re-judges).

    `available`: questions per metric in the data set (see `available_counts`), for "how many more".
    """
    if not pairs:
        return []
    sizes = dict(available or {})
    a = [p.a.correct for p in pairs]
    b = [p.b.correct for p in pairs]
    common: dict[str, Any] = {"alpha": s.alpha, "n_boot": s.n_boot, "seed": s.seed}
    if task == "mme":
        from vlmparity.tasks.mme import COGNITION_METRIC, PERCEPTION_METRIC, metric_for

        cats = [p.sample.group for p in pairs]
        images = [p.sample.cluster for p in pairs]
        out = [
            v.compare_accuracy(
                a,
                b,
                metric="mme_acc",
                clusters=images,
                strata=cats,
                margin=s.margin,
                **common,
                **_size("mme_acc", sizes, len(pairs)),
            )
        ]
        margins = {PERCEPTION_METRIC: s.mme_margin_perception, COGNITION_METRIC: s.mme_margin_cognition}
        for metric in (PERCEPTION_METRIC, COGNITION_METRIC):
            idx = [i for i, c in enumerate(cats) if metric_for(c) == metric]
            if idx:
                out.append(
                    v.compare_mme_score(
                        [cats[i] for i in idx],
                        [images[i] for i in idx],
                        [a[i] for i in idx],
                        [b[i] for i in idx],
                        metric=metric,
                        margin=margins[metric],
                        **common,
                        **_size(metric, sizes, len(pairs)),
                    )
                )
        return out
    metric = _accuracy_metric(task)
    strata = [p.sample.group for p in pairs]
    return [
        v.compare_accuracy(
            a, b, metric=metric, strata=strata, margin=s.margin, **common, **_size(metric, sizes, len(pairs))
        )
    ]


def group_values(task: str, pairs: Sequence[Pair]) -> list[GroupValue]:
    """Per MME category (score, acc + acc_plus) or MMMU subject (accuracy), for both endpoints."""
    if not pairs:
        return []
    by_group: dict[str, list[Pair]] = {}
    for p in pairs:
        by_group.setdefault(p.sample.group, []).append(p)
    out = []
    if task == "mme":
        from vlmparity.tasks.mme import COGNITION, PERCEPTION, metric_for

        rank = {c: i for i, c in enumerate((*PERCEPTION, *COGNITION))}
        for group in sorted(by_group, key=lambda g: (rank.get(g, len(rank)), g)):
            ps = by_group[group]
            images = [p.sample.cluster for p in ps]
            cats = [group] * len(ps)
            score_a = stats.mme_category_scores(cats, images, [p.a.correct for p in ps])[group]
            score_b = stats.mme_category_scores(cats, images, [p.b.correct for p in ps])[group]
            out.append(GroupValue(group, metric_for(group), score_a, score_b, len(ps)))
        return out
    metric = "mmmu_acc" if task.startswith("mmmu") else f"{task}_acc"
    for group in sorted(by_group):
        ps = by_group[group]
        n = len(ps)
        out.append(
            GroupValue(group, metric, sum(p.a.correct for p in ps) / n, sum(p.b.correct for p in ps) / n, n)
        )
    return out


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


# ----- health -----------------------------------------------------------------------------------------


def health(label: str, sides: Sequence[Side]) -> Health:
    """Outcome counts of one endpoint over the paired samples."""
    counts = Counter(s.outcome for s in sides)
    missing = sum(1 for s in sides if is_missing(s))
    failures = sum(1 for s in sides if not s.answered and not is_missing(s))
    return Health(label, len(sides), dict(sorted(counts.items())), failures, missing)


def _failure_detail(h: Health) -> str:
    from vlmparity.store import ANSWERED

    parts = [f"{k}={n}" for k, n in h.outcomes.items() if k not in ANSWERED and k != "missing"]
    return ", ".join(parts)


@dataclass(frozen=True)
class ImageLimit:
    """What one run knows about its image limit: the server kind, the limit it reported, `--max-images`."""

    kind: str = ""
    server_limit: int | None = None
    max_images: int | None = None


def image_limit_of(run: LoadedRun) -> ImageLimit:
    """The run's backend kind, the image limit its server reported and its `--max-images`, from the store."""
    options = run.ref.run.config.get("options") or {}
    max_images = options.get("max_images") if isinstance(options, dict) else None
    return ImageLimit(
        kind=run.ref.run.kind,
        server_limit=run.ref.run.image_limit,
        max_images=max_images if isinstance(max_images, int) else None,
    )


@dataclass(frozen=True)
class Unsupported:
    """One endpoint's `unsupported` samples (too many images): how many, why, and what to do."""

    n: int
    what: str  # "vllm: 46 of 900 mmmu_val samples"
    why: str
    remedy: str

    def text(self, extra: str = "") -> str:
        return f"{self.what} unsupported ({extra}{self.why}): {self.remedy}"


def unsupported_advice(
    label: str, joined_tasks: Sequence[TaskJoin], side: str, limit: ImageLimit
) -> Unsupported | None:
    """Why one endpoint's samples (side "a" or "b") were `unsupported` and what to do, if any were."""
    parts, n, most = [], 0, 0
    for t in joined_tasks:
        refused = [p for p in t.pairs if getattr(p, side).outcome == "unsupported"]
        if refused:
            parts.append(f"{len(refused)} of {len(t.pairs)} {t.task} samples")
            n += len(refused)
            most = max([most, *(p.sample.image_count for p in refused)])
    if not parts:
        return None
    many = f"{most} image{'s' if most != 1 else ''}"
    rerun = (
        "or rerun with --multi-image skip (those samples left out for every endpoint, and counted) or "
        "--multi-image merge (their images tiled into one)"
    )
    k = limit.server_limit
    if k is not None and (limit.max_images is None or k <= limit.max_images):
        why = f"the server accepts {k} image{'s' if k != 1 else ''} per request, they have up to {most}"
        option = get_backend(limit.kind).raise_image_limit(most) if limit.kind in backend_kinds() else None
        if option:
            fix = (
                f"restart it with {option} and rerun the same "
                "`vlmparity run` (the refused samples are sent again)"
            )
        else:
            fix = f"raise the server's limit to {many} per request and rerun the same `vlmparity run`"
    elif limit.max_images is not None:
        why = f"--max-images {limit.max_images}, they have up to {most}"
        fix = f"rerun with --max-images {most} (or without it) if the server accepts {many}"
    else:
        why = f"the server refused them as having too many images, they have up to {most}"
        fix = f"raise the server's limit to {many} per request"
    return Unsupported(n, f"{label}: {', '.join(parts)}", why, f"{fix}, {rerun}")


def problems(
    joined_tasks: Sequence[TaskJoin],
    ha: Health,
    hb: Health,
    s: Settings,
    limits: tuple[ImageLimit, ImageLimit] = (ImageLimit(), ImageLimit()),
) -> list[str]:
    """Infrastructure failures that make the comparison untrustworthy (exit 3).

    `limits` (reference, candidate) explain `unsupported` failures: the limit and what to do about it.
    """
    out = []
    mismatched = sum(len(t.mismatched) for t in joined_tasks)
    if mismatched:
        first = next(f"{t.task} {t.mismatched[0]!r}" for t in joined_tasks if t.mismatched)
        out.append(
            f"{mismatched} sample(s) were sent different requests (request_hash differs; first: {first}): "
            "excluded from the comparison; rerun both with the same data, generation and image options"
        )
    for h, side, limit in ((ha, "a", limits[0]), (hb, "b", limits[1])):
        if h.missing:
            out.append(
                f"{h.label} has no answer for {h.missing} of {h.n} sample(s) (an interrupted run?): "
                "rerun its `vlmparity run` command to finish it"
            )
        if h.n and h.error_rate > s.max_error_rate:
            gate = f"above --max-error-rate {100 * s.max_error_rate:g}%"
            advice = unsupported_advice(h.label, joined_tasks, side, limit)
            if advice is not None and advice.n == h.failures:
                # every failure is an image-limit refusal: one line saying so and what to do
                out.append(advice.text(f"{100 * h.error_rate:.1f}% of requests, {gate}; "))
                continue
            out.append(
                f"{h.label}: {h.failures} of {h.n} requests failed ({100 * h.error_rate:.1f}%: "
                f"{_failure_detail(h)}), {gate}; once the cause is fixed, rerun its `vlmparity run` with "
                "--rerun-errors (a plain rerun resends only transient failures)"
            )
            if advice is not None:
                out.append(advice.text())
    for t in joined_tasks:
        if not t.pairs:
            out.append(f"{t.task}: no sample of the two runs can be paired")
    return out


def notes(joined_tasks: Sequence[TaskJoin], a: str, b: str) -> list[str]:
    """Things worth saying that do not invalidate the comparison."""
    out = []
    for t in joined_tasks:
        if t.only_reference or t.only_candidate:
            out.append(
                f"{t.task}: {len(t.only_reference)} sample(s) only in {a}, {len(t.only_candidate)} only in "
                f"{b} (different sampling plans): compared on the {len(t.pairs)} in both"
            )
        if t.skipped:
            out.append(f"{t.task}: {len(t.skipped)} sample(s) skipped (--multi-image skip): not compared")
        fa, fb = fallback_counts(t.pairs)
        if fa or fb:
            out.append(
                f"{t.task}: {fa} answer(s) of {a} and {fb} of {b} had no option letter; their random letter "
                f"is drawn per sample (seeded by the sample id: {PAIRED_FALLBACK}), so identical answers get identical letters (the runs' own "
                "reported scores use lmms-eval's sequential draw and may differ slightly)"
            )
    return out


def fallback_counts(pairs: Sequence[Pair]) -> tuple[int, int]:
    """Answers given a random letter on each side (MMMU multiple choice without a parseable letter)."""
    return sum(p.a.random_fallback for p in pairs), sum(p.b.random_fallback for p in pairs)


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
    issues = problems(joined.tasks, ha, hb, s, limits)

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


def parsed_text(value: Any) -> str:
    """A parsed answer for display: "—" for none, lists joined."""
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(parsed_text(x) for x in value) or "—"
    return str(value)
