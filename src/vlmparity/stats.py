"""Pure statistics for one run and for paired runs: Wilson, McNemar, Holm, cluster scores, bootstraps.

Units: accuracies are fractions in [0, 1] (as lmms-eval's `mmmu_acc`); MME scores are score points
(perception max 2000, cognition max 800). Nothing here does I/O. Bootstraps take a seed (or a
`numpy.random.Generator`) so that the same inputs always give the same interval.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vlmparity.errors import DataError

Seed = int | np.random.Generator | None
FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

DEFAULT_N_BOOT = 2000
# Phi^-1(0.975), the two-sided 95 % normal quantile, correctly rounded: the value scipy.stats.norm.ppf
# returns (statistics.NormalDist().inv_cdf is one ulp off). A constant because importing scipy.stats
# costs ~0.5 s per process, more than rescoring a whole run; other levels still ask scipy.
_Z_975 = 1.959963984540054
# Cap on the number of index draws held in memory at once by the bootstrap (about 16 MB of int64).
_CHUNK_ELEMENTS = 2_000_000


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided confidence interval."""

    estimate: float
    low: float
    high: float
    confidence: float
    method: str


@dataclass(frozen=True)
class Agreement:
    """How often two runs gave the same answer to the same sample."""

    n: int
    n_agree: int
    rate: float
    low: float
    high: float


# --------------------------------------------------------------------------- single-run intervals


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> Interval:
    """Wilson score interval for a proportion k/n (n > 0)."""
    if n <= 0 or not 0 <= k <= n:
        raise DataError(f"cannot compute an interval for {k} of {n}", hint="need 0 <= k <= n and n > 0")
    z = normal_quantile(0.5 + confidence / 2)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # Clip only the rounding error at the ends (k=0 or k=n give exactly 0 / 1 in exact arithmetic).
    return Interval(p, max(0.0, centre - half), min(1.0, centre + half), confidence, "wilson")


def normal_quantile(p: float) -> float:
    """The standard normal quantile at `p` (scipy's `norm.ppf`; 0.975 without importing scipy)."""
    if p == 0.975:
        return _Z_975
    from scipy import stats as sps

    return float(sps.norm.ppf(p))


def mcnemar_exact(n_ab: int, n_ba: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of n_ab vs n_ba discordant pairs at 1/2."""
    total = n_ab + n_ba
    if total == 0:
        return 1.0
    from scipy import stats as sps

    return float(sps.binomtest(n_ab, total, 0.5, alternative="two-sided").pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order (reject where adjusted < alpha)."""
    p = np.asarray(pvalues, dtype=float)
    k = p.size
    if k == 0:
        return []
    order = np.argsort(p, kind="stable")
    scaled = np.minimum(1.0, p[order] * (k - np.arange(k)))
    adjusted_sorted = np.maximum.accumulate(scaled)  # monotone: never below an earlier step
    adjusted = np.empty(k)
    adjusted[order] = adjusted_sorted
    return [float(x) for x in adjusted]


def agreement(a: Sequence[object], b: Sequence[object], confidence: float = 0.95) -> Agreement:
    """Fraction of aligned samples where the two runs' answers are equal, with a Wilson interval."""
    if len(a) != len(b):
        raise DataError(f"answer lists differ in length ({len(a)} vs {len(b)})", hint="align runs by sample")
    if not a:
        raise DataError("no samples to compare", hint="the two runs share no sample ids")
    n_agree = sum(1 for x, y in zip(a, b, strict=True) if x == y)
    ci = wilson_interval(n_agree, len(a), confidence)
    return Agreement(len(a), n_agree, n_agree / len(a), ci.low, ci.high)


# --------------------------------------------------------------------------- input handling


def as_bool(values: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Per-sample correctness as a 1-D boolean array."""
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise DataError(f"{name} must be one value per sample")
    if arr.size == 0:
        raise DataError(f"{name} is empty", hint="nothing was scored")
    return arr.astype(bool)


def codes(labels: ArrayLike | Sequence[Hashable], n: int, name: str) -> tuple[IntArray, NDArray[np.object_]]:
    """Integer codes 0..k-1 for labels (one per sample) and the distinct labels."""
    arr = np.asarray(labels, dtype=object)
    if arr.shape != (n,):
        raise DataError(f"{name} has {arr.size} entries for {n} samples", hint="one label per sample")
    uniq, inverse = np.unique(arr.astype(str), return_inverse=True)
    return inverse.astype(np.intp), uniq.astype(object)


def cluster_strata(cluster_codes: IntArray, strata_codes: IntArray) -> IntArray:
    """Stratum of each cluster; every cluster must lie in one stratum (an MME image in one category)."""
    m = int(cluster_codes.max()) + 1
    first = np.full(m, -1, dtype=np.intp)
    # Reversed assignment leaves the first occurrence's stratum in place.
    first[cluster_codes[::-1]] = strata_codes[::-1]
    if np.any(first[cluster_codes] != strata_codes):
        raise DataError("a cluster spans several strata", hint="an image id must belong to one category")
    return first


# --------------------------------------------------------------------------- cluster scores
# A cluster score (MME's scoring, the CLUSTER_SCORE metric kind): per cluster acc (share of its questions
# right) + acc_plus (all of them right), averaged over the clusters of each stratum, summed over strata.


@dataclass(frozen=True)
class ClusterTable:
    """One row per image (cluster): its category and the per-question counts needed for the score."""

    category_names: NDArray[np.object_]
    category: IntArray  # per cluster
    size: IntArray  # questions per cluster (2 in MME)
    question_cluster: IntArray  # per question: its cluster


def cluster_table(categories: ArrayLike, clusters: ArrayLike) -> ClusterTable:
    """Index the questions by image (cluster) and category."""
    cats = np.asarray(categories, dtype=object)
    n = cats.size
    if n == 0:
        raise DataError("no questions to score")
    cat_codes, cat_names = codes(cats, n, "categories")
    cl_codes, _ = codes(clusters, n, "clusters")
    cl_cat = cluster_strata(cl_codes, cat_codes)
    size = np.bincount(cl_codes).astype(np.intp)
    return ClusterTable(cat_names, cl_cat, size, cl_codes)


def cluster_scores(table: ClusterTable, correct: NDArray[np.bool_]) -> FloatArray:
    """Per image: acc + acc_plus, acc = 100*correct/size, acc_plus = 100 when all its questions are right."""
    k = np.bincount(table.question_cluster, weights=correct.astype(float), minlength=table.size.size)
    scores: FloatArray = 100.0 * k / table.size + 100.0 * (k == table.size)
    return scores


def _sum_of_category_means(table: ClusterTable, cluster_values: FloatArray) -> float:
    n_cat = table.category_names.size
    sums = np.bincount(table.category, weights=cluster_values, minlength=n_cat)
    counts = np.bincount(table.category, minlength=n_cat)
    return float(np.sum(sums / counts))


def stratum_scores(categories: ArrayLike, clusters: ArrayLike, correct: ArrayLike) -> dict[str, float]:
    """Score per stratum: mean over its clusters of acc + acc_plus (max 200; MME: per category)."""
    table = cluster_table(categories, clusters)
    ok = as_bool(correct, "correct")
    values = cluster_scores(table, ok)
    n_cat = table.category_names.size
    sums = np.bincount(table.category, weights=values, minlength=n_cat)
    counts = np.bincount(table.category, minlength=n_cat)
    return {str(name): float(s / c) for name, s, c in zip(table.category_names, sums, counts, strict=True)}


def cluster_score(categories: ArrayLike, clusters: ArrayLike, correct: ArrayLike) -> float:
    """Cluster score of a set of questions: the sum over the strata present of the stratum scores."""
    table = cluster_table(categories, clusters)
    return _sum_of_category_means(table, cluster_scores(table, as_bool(correct, "correct")))


# --------------------------------------------------------------------------- bootstrap machinery


def rng_from(seed: Seed) -> np.random.Generator:
    """A Generator from a seed, or the Generator itself."""
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def stratified_cluster_sums(
    values: FloatArray, strata: IntArray, n_boot: int, rng: np.random.Generator
) -> FloatArray:
    """Bootstrap sums: for each resample, draw m_s clusters with replacement inside each stratum s.

    `values` is (m clusters, k columns); returns (n_boot, n_strata, k) column sums per stratum.
    Paired statistics pass both runs as columns, so both see the same resampled clusters.
    """
    n_strata = int(strata.max()) + 1
    out = np.zeros((n_boot, n_strata, values.shape[1]))
    for s in range(n_strata):
        v = values[strata == s]
        m = v.shape[0]
        if m == 0:
            continue
        step = max(1, _CHUNK_ELEMENTS // m)
        for start in range(0, n_boot, step):
            stop = min(n_boot, start + step)
            idx = rng.integers(0, m, size=(stop - start, m))
            for col in range(v.shape[1]):
                out[start:stop, s, col] = v[idx, col].sum(axis=1)
    return out


def percentile_interval(draws: FloatArray, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval."""
    tail = (1 - confidence) / 2
    low, high = np.quantile(draws, [tail, 1 - tail])
    return float(low), float(high)


def cluster_score_interval(
    categories: ArrayLike,
    clusters: ArrayLike,
    correct: ArrayLike,
    *,
    n_boot: int = DEFAULT_N_BOOT,
    confidence: float = 0.95,
    seed: Seed = 0,
) -> Interval:
    """Cluster score with a stratified cluster bootstrap interval (clusters resampled within strata)."""
    table = cluster_table(categories, clusters)
    values = cluster_scores(table, as_bool(correct, "correct"))
    estimate = _sum_of_category_means(table, values)
    sums = stratified_cluster_sums(values[:, None], table.category, n_boot, rng_from(seed))
    counts = np.bincount(table.category, minlength=table.category_names.size)
    draws = (sums[:, :, 0] / counts).sum(axis=1)
    low, high = percentile_interval(draws, confidence)
    return Interval(estimate, low, high, confidence, f"stratified cluster bootstrap, B={n_boot}")


# --------------------------------------------------------------------------- paired bootstraps


def paired_accuracy_draws(
    a: NDArray[np.bool_],
    b: NDArray[np.bool_],
    cluster_codes: IntArray,
    strata_of_cluster: IntArray,
    n_boot: int,
    rng: np.random.Generator,
) -> FloatArray:
    """Bootstrap draws of acc(B) - acc(A): clusters resampled within strata, questions pooled."""
    m = strata_of_cluster.size
    da = np.bincount(cluster_codes, weights=a.astype(float), minlength=m)
    db = np.bincount(cluster_codes, weights=b.astype(float), minlength=m)
    size = np.bincount(cluster_codes, minlength=m).astype(float)
    columns = np.column_stack([db - da, size])
    sums = stratified_cluster_sums(columns, strata_of_cluster, n_boot, rng).sum(axis=1)
    draws: FloatArray = sums[:, 0] / sums[:, 1]
    return draws


def paired_cluster_draws(
    table: ClusterTable, a: NDArray[np.bool_], b: NDArray[np.bool_], n_boot: int, rng: np.random.Generator
) -> FloatArray:
    """Bootstrap draws of score(B) - score(A), the same images resampled for both runs."""
    diff = cluster_scores(table, b) - cluster_scores(table, a)
    sums = stratified_cluster_sums(diff[:, None], table.category, n_boot, rng)
    counts = np.bincount(table.category, minlength=table.category_names.size)
    draws: FloatArray = (sums[:, :, 0] / counts).sum(axis=1)
    return draws
