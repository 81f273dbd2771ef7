"""Paired comparison of a reference run A and a candidate run B, and the equivalence verdict.

Method (one framework for every metric, so Holm applies to like p-values):
- the difference d = B - A gets a design-based standard error (questions, or images within
  categories, as the resampling unit) plus a floor: the variance one extra discordant question would
  add (Agresti & Min's +0.5 per discordant cell). Zero disagreements among a handful of samples is
  weak evidence, so identical answers on 10 questions stay inconclusive; at full size the floor is
  negligible. The test of "no difference" uses the variance under that null (uncentred), as McNemar.
- equivalence: two one-sided z-tests (TOST) of |d| < margin; p_tost = max of the two one-sided p's.
  Holm over the metrics' p_tost; a metric is `equivalent` when its Holm-adjusted p_tost < alpha.
  For one metric this is "the (1 - 2 alpha) interval d +- z se lies inside +-margin".
- difference: McNemar's exact test for accuracies on independent questions, otherwise a two-sided
  z-test. A metric is `not equivalent` when its Holm-adjusted difference p < alpha AND |d| > margin.
  For one metric this covers "the 95 % interval lies wholly outside +-margin" (it excludes 0 and its
  centre is beyond the margin). Under equally accurate backends each condition alone is a level-alpha
  test, and Holm keeps the chance that any metric is flagged at alpha too.
- the reported interval (ci_low, ci_high) is the paired percentile bootstrap, a description of the
  difference; the verdict does not use it, so it does not depend on the bootstrap seed.
- inconclusive: n_more = paired samples for the TOST to reach 80 % power if the true difference is 0,
  at the observed variance per sample and at the level Holm would test this metric at.

Units: accuracies and their margin are fractions (margin 0.01 = 1 percentage point); MME scores
and their margin are score points.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, replace

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats as sps

from vlmparity.compare import stats
from vlmparity.errors import ConfigError, DataError

ALPHA = 0.05
POWER = 0.80
ACCURACY_MARGIN = 0.01  # 1 percentage point, as a fraction
MME_MAX_SCORE = {"mme_perception_score": 2000.0, "mme_cognition_score": 800.0}
# 2.5 % of the maximum: 50 perception, 20 cognition points, i.e. the mean over categories of
# (acc + acc_plus) / 2 moving by 2.5 points. Not 1 % (20 / 8): one flipped answer in a 20-image
# category (OCR and three cognition categories) moves the score by 2.5 to 7.5 points, so a margin of
# one or two flips cannot be certified even by identical answers on the full benchmark. The 1-point
# accuracy margin on the pooled MME question accuracy remains the sensitive test; the score margins
# catch regressions concentrated in a few categories, which the pooled accuracy dilutes.
MME_MARGIN_FRACTION = 0.025
MME_MARGIN = {name: top * MME_MARGIN_FRACTION for name, top in MME_MAX_SCORE.items()}
# Pseudo discordant questions added to the variance (half each way, as Agresti & Min's +0.5 per cell).
PSEUDO_DISCORDANT = 1.0

EQUIVALENT = "equivalent"
NOT_EQUIVALENT = "not equivalent"
INCONCLUSIVE = "inconclusive"
EXIT_CODES = {EQUIVALENT: 0, NOT_EQUIVALENT: 1, INCONCLUSIVE: 2}


@dataclass(frozen=True)
class PairedResult:
    """One metric compared between reference A and candidate B on the same samples."""

    metric: str
    unit: str  # "fraction" (accuracies) or "points" (MME scores); delta, ci, se, margin share it
    n: int  # paired questions
    n_clusters: int  # resampling units (questions, or images)
    a_value: float
    b_value: float
    delta: float  # b_value - a_value
    ci_low: float | None  # paired bootstrap interval of delta (None when n_boot = 0)
    ci_high: float | None
    confidence: float
    se: float  # standard error of delta used by the tests (floored, see module docstring)
    margin: float
    discordant_ab: int  # questions A got right and B got wrong
    discordant_ba: int  # questions A got wrong and B got right
    p_mcnemar: float | None  # exact McNemar (accuracies only)
    p_diff: float  # two-sided test of "no difference" used for the verdict
    p_tost: float  # TOST p-value for |delta| < margin
    p_diff_holm: float  # Holm-adjusted over the metrics judged together
    p_tost_holm: float
    alpha: float
    verdict: str  # equivalent | not equivalent | inconclusive
    n_more: int | None  # inconclusive: about how many more paired samples the TOST needs (power 80 %)
    label: str  # verdict text, e.g. "inconclusive (need ~1300 more samples)"


@dataclass(frozen=True)
class Verdict:
    """The overall verdict over several metrics, with Holm correction across them."""

    verdict: str
    label: str
    exit_code: int  # 0 equivalent, 1 not equivalent, 2 inconclusive
    alpha: float
    n_more: int | None
    reasons: tuple[str, ...]
    metrics: tuple[PairedResult, ...]


# --------------------------------------------------------------------------- tests


def tost_pvalue(delta: float, se: float, margin: float) -> float:
    """TOST p-value for H1: -margin < true delta < margin (normal approximation)."""
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


def required_n(
    n: int, se: float, margin: float, alpha: float, power: float = POWER, delta: float = 0.0
) -> float:
    """Paired samples for the TOST to reach `power` if the true difference is `delta`.

    The variance per sample (se^2 * n) is taken as known; power at delta = 0 needs
    margin / se >= z(1 - alpha) + z((1 + power) / 2), since both one-sided tests must reject.
    """
    room = margin - abs(delta)
    if room <= 0:
        return math.inf
    z_beta = sps.norm.ppf((1 + power) / 2) if delta == 0 else sps.norm.ppf(power)
    z = float(sps.norm.ppf(1 - alpha) + z_beta)
    return se * se * n * (z / room) ** 2


def _round_up(x: float) -> int:
    """Round up to two significant digits (an estimate should not look more precise than it is)."""
    if x <= 0:
        return 0
    digits = max(0, math.floor(math.log10(x)) - 1)
    step = 10**digits
    return int(math.ceil(x / step) * step)


def _n_more(r: PairedResult, alpha: float) -> int | None:
    """More samples needed, assuming true difference 0 (or the observed one if 0 already suffices)."""
    need = required_n(r.n, r.se, r.margin, alpha)
    if need <= r.n:
        need = required_n(r.n, r.se, r.margin, alpha, delta=r.delta)
    if not math.isfinite(need) or need <= r.n:
        return None
    return max(1, _round_up(need - r.n))


def _label(verdict: str, n_more: int | None) -> str:
    if verdict != INCONCLUSIVE:
        return verdict
    if n_more is None:
        return f"{INCONCLUSIVE} (the observed difference is close to the margin)"
    return f"{INCONCLUSIVE} (need ~{n_more} more samples)"


def judge(results: Sequence[PairedResult], alpha: float = ALPHA) -> list[PairedResult]:
    """Holm-adjust the metrics' p-values together and set each metric's verdict."""
    p_tost_adj = stats.holm([r.p_tost for r in results])
    p_diff_adj = stats.holm([r.p_diff for r in results])
    # Holm tests the i-th smallest TOST p at alpha / (k - i): the level this metric has to reach.
    order = np.argsort([r.p_tost for r in results], kind="stable")
    level = np.empty(len(results))
    level[order] = alpha / (len(results) - np.arange(len(results)))
    judged = []
    for r, pt, pd, lvl in zip(results, p_tost_adj, p_diff_adj, level, strict=True):
        if pt < alpha:
            verdict = EQUIVALENT
        elif pd < alpha and abs(r.delta) > r.margin:
            verdict = NOT_EQUIVALENT
        else:
            verdict = INCONCLUSIVE
        base = replace(r, p_tost_holm=pt, p_diff_holm=pd, alpha=alpha, verdict=verdict)
        n_more = _n_more(base, float(lvl)) if verdict == INCONCLUSIVE else None
        judged.append(replace(base, n_more=n_more, label=_label(verdict, n_more)))
    return judged


def decide(results: Sequence[PairedResult], alpha: float = ALPHA) -> Verdict:
    """Overall verdict: not equivalent if any metric is; equivalent if all are; else inconclusive."""
    if not results:
        raise DataError("no metrics to compare", hint="the two runs share no task")
    judged = judge(results, alpha)
    verdicts = {r.verdict for r in judged}
    if NOT_EQUIVALENT in verdicts:
        overall = NOT_EQUIVALENT
    elif verdicts == {EQUIVALENT}:
        overall = EQUIVALENT
    else:
        overall = INCONCLUSIVE
    needs = [r.n_more for r in judged if r.verdict == INCONCLUSIVE and r.n_more is not None]
    n_more = max(needs) if overall == INCONCLUSIVE and needs else None
    reasons = tuple(f"{r.metric}: {r.label}" for r in judged if r.verdict == overall)
    label = overall if overall != INCONCLUSIVE or n_more is None else _label(overall, n_more)
    return Verdict(overall, label, EXIT_CODES[overall], alpha, n_more, reasons, tuple(judged))


# --------------------------------------------------------------------------- metrics


def _check_margin(margin: float, alpha: float) -> None:
    if not margin > 0 or not math.isfinite(margin):
        raise ConfigError(f"margin must be a positive number, got {margin}")
    if not 0 < alpha < 0.5:
        raise ConfigError(f"alpha must be between 0 and 0.5, got {alpha}")


def _stratum_variance(contrib: stats.FloatArray, strata: stats.IntArray) -> float:
    """Design-based variance of a sum of per-cluster contributions, clusters drawn within strata."""
    total = 0.0
    for s in range(int(strata.max()) + 1):
        e = contrib[strata == s]
        if e.size >= 2:
            total += e.size / (e.size - 1) * float(np.sum((e - e.mean()) ** 2))
    return total


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
) -> PairedResult:
    """Paired accuracy difference B - A per question (fractions), judged on its own (see `decide`).

    `clusters` (e.g. MME image) makes the resampling unit the cluster; `strata` (e.g. category or
    subject) resamples within each stratum.
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
    floor = PSEUDO_DISCORDANT / n**2
    se = math.sqrt(_stratum_variance((d - delta * size) / n, cl_strata) + floor)
    # The test of no difference uses the variance under that null (uncentred), like McNemar's.
    se_null = math.sqrt(float(np.sum((d / n) ** 2)) + floor)

    p_mcnemar = stats.mcnemar_exact(n_ab, n_ba)
    # McNemar assumes independent questions; with clusters the z-test uses the cluster-robust se.
    p_diff = p_mcnemar if clusters is None else diff_pvalue(delta, se_null)
    ci_low = ci_high = None
    if n_boot > 0:
        draws = stats.paired_accuracy_draws(ok_a, ok_b, cl, cl_strata, n_boot, stats.rng_from(seed))
        ci_low, ci_high = stats.percentile_interval(draws, confidence)
    result = PairedResult(
        metric=metric,
        unit="fraction",
        n=n,
        n_clusters=m,
        a_value=acc_a,
        b_value=acc_b,
        delta=delta,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        se=se,
        margin=margin,
        discordant_ab=n_ab,
        discordant_ba=n_ba,
        p_mcnemar=p_mcnemar,
        p_diff=p_diff,
        p_tost=tost_pvalue(delta, se, margin),
        p_diff_holm=p_diff,
        p_tost_holm=0.0,
        alpha=alpha,
        verdict="",
        n_more=None,
        label="",
    )
    return judge([result], alpha)[0]


def compare_mme_score(
    categories: ArrayLike,
    clusters: ArrayLike,
    a: ArrayLike,
    b: ArrayLike,
    *,
    metric: str = "mme_perception_score",
    margin: float | None = None,
    alpha: float = ALPHA,
    n_boot: int = stats.DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: stats.Seed = 0,
) -> PairedResult:
    """Paired MME score difference B - A (points), images resampled within categories.

    Pass only the questions of one half (perception or cognition). `margin` defaults to 2.5 % of
    the metric's maximum (50 perception, 20 cognition; see MME_MARGIN).
    """
    if margin is None:
        if metric not in MME_MARGIN:
            raise DataError(f"no default margin for {metric}", hint="pass margin= in score points")
        margin = MME_MARGIN[metric]
    _check_margin(margin, alpha)
    table = stats.mme_clusters(categories, clusters)
    ok_a = stats.as_bool(a, "reference correctness")
    ok_b = stats.as_bool(b, "candidate correctness")
    n = table.question_cluster.size
    if ok_a.size != n or ok_b.size != n:
        raise DataError(f"runs differ in length ({ok_a.size}, {ok_b.size}, {n} questions)", hint="align runs")
    sa, sb = stats.mme_cluster_scores(table, ok_a), stats.mme_cluster_scores(table, ok_b)
    counts = np.bincount(table.category, minlength=table.category_names.size)
    per_cluster_weight = 1.0 / counts[table.category]  # each category contributes its mean
    score_a = float(np.sum(sa * per_cluster_weight))
    score_b = float(np.sum(sb * per_cluster_weight))
    delta = score_b - score_a

    contrib = (sb - sa) * per_cluster_weight
    floor = _score_floor(table, ok_a, ok_b, per_cluster_weight)
    se = math.sqrt(_stratum_variance(contrib, table.category) + floor)
    se_null = math.sqrt(float(np.sum(contrib**2)) + floor)  # variance under "no difference"

    ci_low = ci_high = None
    if n_boot > 0:
        draws = stats.paired_mme_draws(table, ok_a, ok_b, n_boot, stats.rng_from(seed))
        ci_low, ci_high = stats.percentile_interval(draws, confidence)
    result = PairedResult(
        metric=metric,
        unit="points",
        n=n,
        n_clusters=table.size.size,
        a_value=score_a,
        b_value=score_b,
        delta=delta,
        ci_low=ci_low,
        ci_high=ci_high,
        confidence=confidence,
        se=se,
        margin=margin,
        discordant_ab=int(np.sum(ok_a & ~ok_b)),
        discordant_ba=int(np.sum(~ok_a & ok_b)),
        p_mcnemar=None,
        p_diff=diff_pvalue(delta, se_null),
        p_tost=tost_pvalue(delta, se, margin),
        p_diff_holm=0.0,
        p_tost_holm=0.0,
        alpha=alpha,
        verdict="",
        n_more=None,
        label="",
    )
    return judge([result], alpha)[0]


def _score_floor(
    table: stats.MmeClusters,
    ok_a: NDArray[np.bool_],
    ok_b: NDArray[np.bool_],
    per_cluster_weight: stats.FloatArray,
) -> float:
    """Variance two extra discordant questions, placed at random, would add to the score difference.

    Flipping one question moves its image's score by 100/size (acc) plus 100 when the image's other
    questions are all right (acc_plus); the score moves by that over the category's image count.
    """
    q = table.question_cluster
    impacts_sq = []
    for ok in (ok_a, ok_b):
        right = np.bincount(q, weights=ok.astype(float), minlength=table.size.size)
        others_right = right[q] - ok == table.size[q] - 1
        impact = 100.0 / table.size[q] + 100.0 * others_right
        impacts_sq.append((impact * per_cluster_weight[q]) ** 2)
    return PSEUDO_DISCORDANT * float(np.mean((impacts_sq[0] + impacts_sq[1]) / 2))
