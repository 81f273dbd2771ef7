"""Paired comparison of a reference run A and a candidate run B, and the equivalence verdict.

One interval decides, and it is the interval every output shows (terminal, verdict.json, report,
forest plot). Per metric, for the difference d = B - A:

- the decision interval at one-sided level `level` is d +- h, with
  h = sqrt((z(1 - level) * se)^2 + u(level)^2): `se` is the design-based standard error (questions,
  or images within categories, as the resampling unit) and u is an exact bound for the case where the
  runs disagree nowhere: the one-sided Clopper-Pearson upper bound 1 - level^(1/m) of the share of the
  m units (questions or images) on which they disagree, times what that share can move the metric (1
  for an accuracy; the questions' score impacts for MME scores). With no disagreement se = 0 and the
  interval is exactly the exact bound; with many disagreements u is negligible. A few disagreements
  among a handful of questions are weak evidence, so identical answers on 10 questions stay
  inconclusive while identical answers on the full benchmark are equivalent.
- three outcomes, read from the interval and the +-margin band: inside -> `equivalent` (for one
  metric this is TOST at level alpha: the (1 - 2 alpha) interval inside the band); wholly outside ->
  `not equivalent` (the difference is provably beyond the margin); straddling an edge -> `inconclusive`.
- several metrics: Holm's step-down over each metric's p-value of the claim its data point to
  (p_equivalence or p_nonequivalence: the smallest level at which its interval is inside, or wholly
  outside, the band). The metric ranked r-th is judged at level alpha / (k - r + 1) while every earlier
  one was decided; once one is not, the rest are judged at the level it failed at. Each metric's
  interval is shown at the level it was judged at, so "inside the band" means exactly "equivalent".
- the paired percentile bootstrap (boot_low, boot_high) and the test of "no difference" (McNemar's
  exact test, or a z-test with the variance under no difference) are descriptions; the verdict uses
  neither.
- certified_margin: the smallest margin the data certify now (the interval's farthest end from 0).
- inconclusive: n_more = about how many more paired samples (of the task) would certify the margin if
  the rest of the data behaved like what was seen (same difference, same variance per sample), capped
  by the samples the data set still holds; when even all of them would not do, full_margin is the
  margin the full data set would certify and n_more is None.

Units: accuracies and their margin are fractions (margin 0.01 = 1 percentage point); cluster scores
(MME's) and their margin are score points. Which statistic a metric gets, and its default margin, come
from the task's `MetricSpec` (kind ACCURACY or CLUSTER_SCORE). The words of a verdict (labels, reasons)
are written by `vlmparity.report.labels` from the numbers here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from vlmparity import stats
from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import get_task, task_names

ALPHA = 0.05
ACCURACY_MARGIN = 0.01  # 1 percentage point, as a fraction: `--margin`'s default for every accuracy
# Pseudo discordant questions added to the null variance of the descriptive z-test of "no difference".
PSEUDO_DISCORDANT = 1.0
_NORMAL = statistics.NormalDist()
_LEVEL_MAX = 0.5  # a (1 - 2 level) interval needs level < 0.5
_LEVEL_MIN = 1e-300

EQUIVALENT = "equivalent"
NOT_EQUIVALENT = "not equivalent"
INCONCLUSIVE = "inconclusive"
EXIT_CODES = {EQUIVALENT: 0, NOT_EQUIVALENT: 1, INCONCLUSIVE: 2}


@dataclass(frozen=True)
class LookJudgement:
    """How a sequential look judged a metric: its state there and the difference test against its bound."""

    state: str  # equivalent | not equivalent | open (inconclusive at the last look)
    look: int  # 0-based
    looks: int
    z: float  # |z| of the test of no difference
    bound: float  # the look's boundary for a difference (two-sided, the metric's share of alpha)


@dataclass(frozen=True)
class PairedResult:
    """One metric compared between reference A and candidate B on the same samples."""

    metric: str
    unit: str  # "fraction" (accuracies) or "points" (cluster scores); delta, intervals, se, margin share it
    n: int  # paired questions
    n_clusters: int  # resampling units (questions, or images)
    a_value: float  # paired values: the mean over the pairs used (see the analysis for which)
    b_value: float
    delta: float  # b_value - a_value
    se: float  # design-based standard error of delta (the normal part of the decision interval)
    exact_units: int  # units counted by the exact bound (questions, or images when clustered)
    exact_scale: float  # how far a share 1 of disagreeing units can move the metric (1 for accuracies)
    margin: float
    discordant_ab: int  # questions A got right and B got wrong
    discordant_ba: int  # questions A got wrong and B got right
    p_difference: float  # two-sided test of "no difference" (a description, not the verdict)
    difference_test: str  # "McNemar exact" | "z-test (clustered)" | "z-test"
    p_equivalence: float  # smallest level at which the decision interval lies inside +-margin (1: none < 0.5)
    p_nonequivalence: float  # smallest level at which it lies wholly outside (1: none < 0.5)
    boot_low: float | None  # paired percentile bootstrap of delta (None when n_boot = 0): a description
    boot_high: float | None
    boot_confidence: float
    available: int | None = None  # questions of this metric in the data set (None: unknown)
    task_per_metric: float = 1.0  # task samples per question of this metric (a part of the task: > 1)
    task_remaining: int | None = None  # task samples the data set holds beyond those compared
    # set by `judge`:
    alpha: float = ALPHA
    level: float = ALPHA  # one-sided level the metric is judged at (Holm): the interval is (1 - 2 level)
    ci_low: float = math.nan  # the decision interval
    ci_high: float = math.nan
    certified_margin: float = math.nan  # the smallest margin the data certify now
    p_equivalence_holm: float = 1.0
    p_nonequivalence_holm: float = 1.0
    verdict: str = ""  # equivalent | not equivalent | inconclusive
    n_more: int | None = None  # inconclusive: about how many more task samples would settle it
    remaining: int | None = None  # task samples the data set holds beyond those compared
    full_margin: float | None = None  # inconclusive and out of reach: the margin all the data would certify
    label: str = ""  # verdict text, e.g. "equivalent within ±0.52 pp": written by `report.labels`
    # a sequential look's judgement (`compare.sequential.examine`), None for the fixed-size verdict
    look: LookJudgement | None = None

    @property
    def confidence(self) -> float:
        """Coverage of the decision interval, 1 - 2 level."""
        return 1.0 - 2.0 * self.level

    def half_width(self, level: float, n: float | None = None) -> float:
        """Half-width of the decision interval at one-sided `level`, with `n` paired questions (default: n)."""
        return half_width(self, level, n)


@dataclass(frozen=True)
class Verdict:
    """The overall verdict over several metrics, with Holm correction across them."""

    verdict: str
    label: str
    exit_code: int  # 0 equivalent, 1 not equivalent, 2 inconclusive
    alpha: float
    n_more: int | None
    reasons: tuple[str, ...]  # "metric: label" of the metrics that decided it (`report.labels` writes them)
    metrics: tuple[PairedResult, ...]


# --------------------------------------------------------------------------- the decision interval


def exact_zero_bound(level: float, units: float) -> float:
    """One-sided Clopper-Pearson upper bound of a proportion when 0 of `units` were seen: 1 - level^(1/units)."""
    if units <= 0:
        return 1.0
    return float(-math.expm1(math.log(level) / units))


def half_width(r: PairedResult, level: float, n: float | None = None) -> float:
    """sqrt((z(1 - level) se)^2 + u(level)^2), projected to `n` paired questions (same variance per question)."""
    n_now = r.n
    n_new = float(n_now if n is None else n)
    se = r.se * math.sqrt(n_now / n_new) if n_new > 0 else math.inf
    units = r.exact_units * n_new / n_now if n_now else 0.0
    z = -_NORMAL.inv_cdf(level)  # z(1 - level); pure Python: bisections call this often
    u = r.exact_scale * exact_zero_bound(level, units)
    return math.hypot(z * se, u)


def decision_interval(r: PairedResult, level: float) -> tuple[float, float]:
    """The (1 - 2 level) decision interval of the difference."""
    h = half_width(r, level)
    return r.delta - h, r.delta + h


def _inside(r: PairedResult, level: float) -> bool:
    return abs(r.delta) + half_width(r, level) < r.margin


def _outside(r: PairedResult, level: float) -> bool:
    return abs(r.delta) - half_width(r, level) > r.margin


def _smallest_level(test: Callable[[float], bool]) -> float:
    """The smallest level in (0, 0.5) at which `test(level)` holds (monotone in level); 1 if none."""
    if not test(_LEVEL_MAX):
        return 1.0
    if test(_LEVEL_MIN):
        return 0.0
    lo, hi = math.log(_LEVEL_MIN), math.log(_LEVEL_MAX)
    for _ in range(200):
        mid = (lo + hi) / 2
        if test(math.exp(mid)):
            hi = mid
        else:
            lo = mid
        if hi - lo < 1e-10:
            break
    return math.exp(hi)


def equivalence_pvalue(r: PairedResult) -> float:
    """Smallest level at which the decision interval lies inside +-margin (TOST's p for this interval)."""
    return _smallest_level(lambda level: _inside(r, level))


def nonequivalence_pvalue(r: PairedResult) -> float:
    """Smallest level at which the decision interval lies wholly outside +-margin."""
    return _smallest_level(lambda level: _outside(r, level))


def tost_pvalue(delta: float, se: float, margin: float) -> float:
    """TOST p-value for H1: -margin < true delta < margin (normal approximation, no exact part)."""
    if se <= 0:
        return 0.0 if abs(delta) < margin else 1.0
    p_low = float(sps.norm.sf((delta + margin) / se))  # H0: delta <= -margin
    p_high = float(sps.norm.cdf((delta - margin) / se))  # H0: delta >= +margin
    return max(p_low, p_high)


def diff_pvalue(delta: float, se: float) -> float:
    """Two-sided z-test p-value for H0: true delta = 0."""
    if se <= 0:
        return 1.0 if delta == 0 else 0.0
    return float(2 * sps.norm.sf(abs(delta) / se))


# --------------------------------------------------------------------------- how many more samples


def _round_up(x: float) -> int:
    """Round up to two significant digits (an estimate should not look more precise than it is)."""
    if x <= 0:
        return 0
    digits = max(0, math.floor(math.log10(x)) - 1)
    step = 10**digits
    return int(math.ceil(x / step) * step)


def _settles(r: PairedResult, level: float, n: float) -> bool:
    """Would `n` paired questions settle the metric if the rest looked like what was seen?"""
    h = half_width(r, level, n)
    if abs(r.delta) < r.margin:
        return abs(r.delta) + h < r.margin
    return abs(r.delta) - h > r.margin


def _smallest_n(r: PairedResult, level: float, top: float) -> float | None:
    """The smallest question count in (n, top] that settles the metric, or None."""
    if not _settles(r, level, top):
        return None
    lo, hi = float(r.n), float(top)  # not settled at lo, settled at hi
    while hi - lo > 0.5:
        mid = (lo + hi) / 2
        if _settles(r, level, mid):
            hi = mid
        else:
            lo = mid
    return math.ceil(hi)


def _planning(r: PairedResult) -> PairedResult:
    """n_more (task samples, capped by what the data hold) or full_margin, for an inconclusive metric."""
    scale = r.task_per_metric
    if r.available is not None:
        top = float(max(r.available, r.n))
        remaining = max(0, math.floor((top - r.n) * scale + 1e-9))
        if r.task_remaining is not None:  # a --limit plan may have taken this metric's part unevenly
            remaining = min(remaining, r.task_remaining)
    else:
        top, remaining = 1e12, None
    need = _smallest_n(r, r.level, top) if top > r.n else None
    if need is None:
        full = abs(r.delta) + half_width(r, r.level, top) if r.available is not None else None
        return replace(r, n_more=None, remaining=remaining, full_margin=full)
    more = max(1, _round_up((need - r.n) * scale))
    if remaining is not None:
        more = min(more, remaining)
    return replace(r, n_more=more, remaining=remaining, full_margin=None)


# --------------------------------------------------------------------------- the verdict


def at_interval(
    r: PairedResult, alpha: float, level: float, interval: tuple[float, float], verdict: str, **more: Any
) -> PairedResult:
    """`r` judged at one-sided `level` with this decision interval (the fixed-size verdict's, or a sequential
    look's): what the interval certifies, the verdict, no planning yet (`_planning` adds it)."""
    low, high = interval
    return replace(
        r,
        alpha=alpha,
        level=level,
        ci_low=low,
        ci_high=high,
        certified_margin=max(abs(low), abs(high)),
        verdict=verdict,
        n_more=None,
        remaining=None,
        full_margin=None,
        **more,
    )


def judge(results: Sequence[PairedResult], alpha: float = ALPHA) -> list[PairedResult]:
    """Holm step-down over the metrics (see the module docstring): each metric's level, interval, verdict."""
    k = len(results)
    claim = [min(r.p_equivalence, r.p_nonequivalence) for r in results]
    order = [int(i) for i in np.argsort(claim, kind="stable")]
    out: list[PairedResult | None] = [None] * k
    stop_level: float | None = None
    running = 0.0  # Holm-adjusted claim p-value so far (monotone)
    for rank, i in enumerate(order):
        r = results[i]
        own = alpha / (k - rank)
        level = own if stop_level is None else stop_level
        eq, ne = _inside(r, level), _outside(r, level)
        if stop_level is None and not (eq or ne):
            stop_level = own
        p_eq_holm = max(running, min(1.0, (k - rank) * r.p_equivalence))
        p_ne_holm = max(running, min(1.0, (k - rank) * r.p_nonequivalence))
        running = max(running, min(1.0, (k - rank) * claim[i]))
        verdict = EQUIVALENT if eq else NOT_EQUIVALENT if ne else INCONCLUSIVE
        judged = at_interval(
            r,
            alpha,
            level,
            decision_interval(r, level),
            verdict,
            p_equivalence_holm=p_eq_holm,
            p_nonequivalence_holm=p_ne_holm,
        )
        if verdict == INCONCLUSIVE:
            judged = _planning(judged)
        out[i] = judged
    return [r for r in out if r is not None]


def _overall_label(overall: str, judged: Sequence[PairedResult]) -> tuple[str, int | None]:
    if overall != INCONCLUSIVE:
        return overall, None
    open_ = [r for r in judged if r.verdict == INCONCLUSIVE]
    out_of_reach = [r.metric for r in open_ if r.n_more is None]
    if out_of_reach:
        return f"{INCONCLUSIVE} (not settled even with the whole data set: {', '.join(out_of_reach)})", None
    n_more = max(r.n_more for r in open_ if r.n_more is not None)
    return f"{INCONCLUSIVE} (need ~{n_more} more samples)", n_more


def decide(results: Sequence[PairedResult], alpha: float = ALPHA) -> Verdict:
    """Overall verdict: not equivalent if any metric is; equivalent if all are; else inconclusive."""
    if not results:
        raise DataError("no metrics to compare", hint="the two runs share no task")
    _check_alpha(alpha)
    judged = judge(results, alpha)
    verdicts = {r.verdict for r in judged}
    if NOT_EQUIVALENT in verdicts:
        overall = NOT_EQUIVALENT
    elif verdicts == {EQUIVALENT}:
        overall = EQUIVALENT
    else:
        overall = INCONCLUSIVE
    label, n_more = _overall_label(overall, judged)
    return Verdict(overall, label, EXIT_CODES[overall], alpha, n_more, (), tuple(judged))


# --------------------------------------------------------------------------- metrics


def _check_alpha(alpha: float) -> None:
    if not 0 < alpha < 0.5:
        raise ConfigError(f"alpha must be between 0 and 0.5, got {alpha}")


def _check_margin(margin: float, alpha: float) -> None:
    if not margin > 0 or not math.isfinite(margin):
        raise ConfigError(f"margin must be a positive number, got {margin}")
    _check_alpha(alpha)


def _stratum_variance(contrib: stats.FloatArray, strata: stats.IntArray) -> float:
    """Design-based variance of a sum of per-cluster contributions, clusters drawn within strata."""
    total = 0.0
    for s in range(int(strata.max()) + 1):
        e = contrib[strata == s]
        if e.size >= 2:
            total += e.size / (e.size - 1) * float(np.sum((e - e.mean()) ** 2))
    return total


def default_margin(metric: str) -> float:
    """The default margin of a registered task's metric (its `MetricSpec.margin`)."""
    for name in task_names():
        for spec in get_task(name).metric_specs():
            if spec.name == metric:
                return spec.margin
    raise DataError(f"no default margin for {metric}", hint="pass margin= in the metric's unit")


def _judged_alone(
    *,
    alpha: float,
    boot: tuple[float | None, float | None],
    confidence: float,
    available: int | None,
    task_per_metric: float,
    task_remaining: int | None,
    **measured: Any,
) -> PairedResult:
    """A metric's result from what was measured, with its p-values, judged on its own (`decide` re-judges)."""
    r = PairedResult(
        **measured,
        p_equivalence=1.0,
        p_nonequivalence=1.0,
        boot_low=boot[0],
        boot_high=boot[1],
        boot_confidence=confidence,
        available=available,
        task_per_metric=task_per_metric,
        task_remaining=task_remaining,
    )
    r = replace(r, p_equivalence=equivalence_pvalue(r), p_nonequivalence=nonequivalence_pvalue(r))
    return judge([r], alpha)[0]


def compare_accuracy(
    a: ArrayLike,
    b: ArrayLike,
    *,
    metric: str = "acc",
    clusters: ArrayLike | Sequence[Hashable] | None = None,
    strata: ArrayLike | Sequence[Hashable] | None = None,
    margin: float = ACCURACY_MARGIN,
    alpha: float = ALPHA,
    n_boot: int = stats.DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: stats.Seed = 0,
    available: int | None = None,
    task_per_metric: float = 1.0,
    task_remaining: int | None = None,
) -> PairedResult:
    """Paired accuracy difference B - A per question (fractions), judged on its own (see `decide`).

    `clusters` (e.g. MME image) makes the resampling unit the cluster; `strata` (e.g. category or
    subject) resamples within each stratum. `available`: questions of this metric in the data set;
    `task_per_metric`, `task_remaining`: task samples per such question and left beyond those compared.
    """
    _check_margin(margin, alpha)
    ok_a = stats.as_bool(a, "reference correctness")
    ok_b = stats.as_bool(b, "candidate correctness")
    n = ok_a.size
    if ok_b.size != n:
        raise DataError(f"runs differ in length ({n} vs {ok_b.size})", hint="align runs by sample")
    cl = stats.codes(clusters, n, "clusters")[0] if clusters is not None else np.arange(n, dtype=np.intp)
    st = stats.codes(strata, n, "strata")[0] if strata is not None else np.zeros(n, dtype=np.intp)
    cl_strata = stats.cluster_strata(cl, st)
    m = cl_strata.size

    acc_a, acc_b = float(ok_a.mean()), float(ok_b.mean())
    delta = acc_b - acc_a
    n_ab = int(np.sum(ok_a & ~ok_b))
    n_ba = int(np.sum(~ok_a & ok_b))

    # Linearised (ratio) contributions of each cluster to delta.
    d = np.bincount(cl, weights=ok_b.astype(float) - ok_a.astype(float), minlength=m)
    size = np.bincount(cl, minlength=m)
    se = math.sqrt(_stratum_variance((d - delta * size) / n, cl_strata))

    p_mcnemar = stats.mcnemar_exact(n_ab, n_ba)
    if clusters is None:
        p_difference, test = p_mcnemar, "McNemar exact"
    else:  # McNemar assumes independent questions; the z-test uses the variance under no difference
        se_null = math.sqrt(float(np.sum((d / n) ** 2)) + PSEUDO_DISCORDANT / n**2)
        p_difference, test = diff_pvalue(delta, se_null), "z-test (clustered)"
    boot: tuple[float | None, float | None] = (None, None)
    if n_boot > 0:
        draws = stats.paired_accuracy_draws(ok_a, ok_b, cl, cl_strata, n_boot, stats.rng_from(seed))
        boot = stats.percentile_interval(draws, confidence)
    return _judged_alone(
        alpha=alpha,
        boot=boot,
        confidence=confidence,
        available=available,
        task_per_metric=task_per_metric,
        task_remaining=task_remaining,
        metric=metric,
        unit="fraction",
        n=n,
        n_clusters=m,
        a_value=acc_a,
        b_value=acc_b,
        delta=delta,
        se=se,
        exact_units=m,
        # A share p of the clusters disagreeing moves the accuracy by at most p * (largest cluster / mean).
        exact_scale=float(size.max()) * m / n,
        margin=margin,
        discordant_ab=n_ab,
        discordant_ba=n_ba,
        p_difference=p_difference,
        difference_test=test,
    )


def compare_cluster_score(
    strata: ArrayLike,
    clusters: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    *,
    metric: str = "score",
    margin: float | None = None,
    alpha: float = ALPHA,
    n_boot: int = stats.DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: stats.Seed = 0,
    available: int | None = None,
    task_per_metric: float = 1.0,
    task_remaining: int | None = None,
) -> PairedResult:
    """Paired cluster-score difference B - A (points, a CLUSTER_SCORE metric: the sum over strata of the
    mean over clusters of acc + acc_plus, MME's score), clusters resampled within strata.

    Pass only the questions that feed the metric (its `MetricSpec.members`). `margin` defaults to the
    registered metric's own (`MetricSpec.margin`: MME's 2.5 % of the maximum, 50 perception, 20 cognition).
    """
    if margin is None:
        margin = default_margin(metric)
    _check_margin(margin, alpha)
    table = stats.cluster_table(strata, clusters)
    ok_a = stats.as_bool(a, "reference correctness")
    ok_b = stats.as_bool(b, "candidate correctness")
    n = table.question_cluster.size
    if ok_a.size != n or ok_b.size != n:
        raise DataError(f"runs differ in length ({ok_a.size}, {ok_b.size}, {n} questions)", hint="align runs")
    sa, sb = stats.cluster_scores(table, ok_a), stats.cluster_scores(table, ok_b)
    counts = np.bincount(table.category, minlength=table.category_names.size)
    per_cluster_weight = 1.0 / counts[table.category]  # each stratum contributes its mean
    score_a = float(np.sum(sa * per_cluster_weight))
    score_b = float(np.sum(sb * per_cluster_weight))
    delta = score_b - score_a

    contrib = (sb - sa) * per_cluster_weight
    se = math.sqrt(_stratum_variance(contrib, table.category))
    se_null = math.sqrt(float(np.sum(contrib**2)) + PSEUDO_DISCORDANT * _mean_sq_impact(table, ok_a, ok_b))

    boot: tuple[float | None, float | None] = (None, None)
    if n_boot > 0:
        boot = stats.percentile_interval(
            stats.paired_cluster_draws(table, ok_a, ok_b, n_boot, stats.rng_from(seed)), confidence
        )
    return _judged_alone(
        alpha=alpha,
        boot=boot,
        confidence=confidence,
        available=available,
        task_per_metric=task_per_metric,
        task_remaining=task_remaining,
        metric=metric,
        unit="points",
        n=n,
        n_clusters=table.size.size,
        a_value=score_a,
        b_value=score_b,
        delta=delta,
        se=se,
        exact_units=n,
        exact_scale=_impact_sum(table, ok_a, ok_b, per_cluster_weight),
        margin=margin,
        discordant_ab=int(np.sum(ok_a & ~ok_b)),
        discordant_ba=int(np.sum(~ok_a & ok_b)),
        p_difference=diff_pvalue(delta, se_null),
        difference_test="z-test (clustered)",
    )


def _impacts(table: stats.ClusterTable, ok: NDArray[np.bool_], weight: stats.FloatArray) -> stats.FloatArray:
    """How far flipping each question alone moves the score: (100/size + 100 if the image's other
    questions are all right) over the category's image count."""
    q = table.question_cluster
    right = np.bincount(q, weights=ok.astype(float), minlength=table.size.size)
    others_right = right[q] - ok == table.size[q] - 1
    impact: stats.FloatArray = (100.0 / table.size[q] + 100.0 * others_right) * weight[q]
    return impact


def _impact_sum(
    table: stats.ClusterTable, ok_a: NDArray[np.bool_], ok_b: NDArray[np.bool_], weight: stats.FloatArray
) -> float:
    """Score change if every question flipped, each by its own impact (mean of both runs'): a share p of
    questions disagreeing, spread like the questions, moves the score by about p times this."""
    return float(np.sum((_impacts(table, ok_a, weight) + _impacts(table, ok_b, weight)) / 2))


def _mean_sq_impact(table: stats.ClusterTable, ok_a: NDArray[np.bool_], ok_b: NDArray[np.bool_]) -> float:
    """Variance one extra discordant question, placed at random, would add to the score difference."""
    counts = np.bincount(table.category, minlength=table.category_names.size)
    weight = 1.0 / counts[table.category]
    sq = (_impacts(table, ok_a, weight) ** 2 + _impacts(table, ok_b, weight) ** 2) / 2
    return float(np.mean(sq))
