"""Simulated paired runs for checking the verdict's error rates (no HTTP, no data sets).

A reference run answers each question right with probability `accuracy`. The candidate copies it
and then flips answers: `divergence` is the expected fraction of questions answered differently,
half in each direction, so both runs are equally accurate; `drop` (a fraction) flips that many
more right answers to wrong, a true accuracy loss of `drop`.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats as sps

from vlmparity.compare import verdict as v
from vlmparity.tasks.base import get_task

# MME question counts per category (MME paper, research/lmms-eval.md §1.6): 2 questions per image.
MME_PERCEPTION = {
    "existence": 60,
    "count": 60,
    "position": 60,
    "color": 60,
    "posters": 294,
    "celebrity": 340,
    "scene": 400,
    "landmark": 400,
    "artwork": 400,
    "OCR": 40,
}
MME_COGNITION = {
    "commonsense_reasoning": 140,
    "numerical_calculation": 40,
    "text_translation": 40,
    "code_reasoning": 40,
}
MMMU_SUBJECTS = 30  # MMMU-val: 30 subjects x 30 questions = 900
MMMU_PER_SUBJECT = 30


@dataclass(frozen=True)
class MmeLayout:
    """Category, image and half (perception or cognition) of every MME question."""

    categories: NDArray[np.str_]
    images: NDArray[np.str_]
    perception: NDArray[np.bool_]


def mme_layout() -> MmeLayout:
    """The 2374 MME questions: 1187 images with two questions each."""
    counts = {**MME_PERCEPTION, **MME_COGNITION}
    cats = np.repeat(np.array(list(counts)), list(counts.values()))
    within = np.concatenate([np.arange(c) // 2 for c in counts.values()])
    images = np.char.add(np.char.add(cats, "/"), within.astype(str))
    return MmeLayout(cats, images, np.isin(cats, list(MME_PERCEPTION)))


def mmmu_subjects() -> NDArray[np.str_]:
    """Subject label of each of the 900 MMMU-val questions."""
    return np.repeat(np.array([f"subject_{i:02d}" for i in range(MMMU_SUBJECTS)]), MMMU_PER_SUBJECT)


def simulate_pairs(
    n: int, trials: int, accuracy: float, divergence: float, drop: float, rng: np.random.Generator
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Correctness of reference and candidate, shape (trials, n)."""
    a = rng.random((trials, n)) < accuracy
    p_lose = (divergence / 2 + drop) / accuracy  # P(B wrong | A right)
    p_gain = (divergence / 2) / (1 - accuracy)  # P(B right | A wrong)
    if not (0 <= p_lose <= 1 and 0 <= p_gain <= 1):
        raise ValueError("divergence/drop too large for this accuracy")
    u = rng.random((trials, n))
    flip = np.where(a, u < p_lose, u < p_gain)
    return a, a ^ flip


def mmmu_verdict(
    a: NDArray[np.bool_], b: NDArray[np.bool_], subjects: NDArray[np.str_], n_boot: int = 0
) -> v.Verdict:
    """Overall verdict of one simulated MMMU comparison (mmmu_acc, questions within subjects)."""
    return v.decide([v.compare_accuracy(a, b, metric="mmmu_acc", strata=subjects, n_boot=n_boot)])


def mme_verdict(a: NDArray[np.bool_], b: NDArray[np.bool_], layout: MmeLayout, n_boot: int = 0) -> v.Verdict:
    """Overall verdict of one simulated MME comparison: question accuracy, perception, cognition."""
    p, c = layout.perception, ~layout.perception
    results = [
        v.compare_accuracy(
            a, b, metric="mme_acc", clusters=layout.images, strata=layout.categories, n_boot=n_boot
        ),
        v.compare_cluster_score(
            layout.categories[p], layout.images[p], a[p], b[p], metric="mme_perception_score", n_boot=n_boot
        ),
        v.compare_cluster_score(
            layout.categories[c], layout.images[c], a[c], b[c], metric="mme_cognition_score", n_boot=n_boot
        ),
    ]
    return v.decide(results)


def verdict_rates(
    task: str,
    *,
    trials: int,
    divergence: float,
    drop: float = 0.0,
    accuracy: float = 0.6,
    seed: int = 0,
    n: int | None = None,
) -> dict[str, float]:
    """Fraction of simulated comparisons ending in each overall verdict (task: "mmmu" or "mme")."""
    rng = np.random.default_rng(seed)
    tally: Counter[str] = Counter()
    if task == "mme":
        layout = mme_layout()
        a, b = simulate_pairs(layout.categories.size, trials, accuracy, divergence, drop, rng)
        for i in range(trials):
            tally[mme_verdict(a[i], b[i], layout).verdict] += 1
    elif task == "mmmu":
        subjects = mmmu_subjects() if n is None else np.repeat(np.array(["all"]), n)
        a, b = simulate_pairs(subjects.size, trials, accuracy, divergence, drop, rng)
        for i in range(trials):
            tally[mmmu_verdict(a[i], b[i], subjects).verdict] += 1
    else:
        raise ValueError(f"unknown task {task!r}")
    return {k: tally[k] / trials for k in (v.EQUIVALENT, v.INCONCLUSIVE, v.NOT_EQUIVALENT)}


# ----- vectorised: many simulated comparisons at once (fixed-size and sequential verdicts) -----------------

# The tasks simulated here, and their four metrics (the tasks' specs), in the order the analysis judges them:
# mme_acc, mme_perception_score, mme_cognition_score, mmmu_acc.
SIMULATED_TASKS = ("mme", "mmmu_val")
SPECS = tuple(spec for name in SIMULATED_TASKS for spec in get_task(name).metric_specs())
METRICS = tuple(spec.name for spec in SPECS)
UNITS = tuple(spec.unit for spec in SPECS)
# the default margins: accuracies, then the two MME scores (score points)
DEFAULT_MARGINS = (SPECS[0].margin, SPECS[1].margin, SPECS[2].margin)


@dataclass(frozen=True)
class Layout:
    """Full MME + MMMU-val: per question its task, stratum, image (MME) and sequential key."""

    mme: MmeLayout
    mmmu_subjects: NDArray[np.str_]
    mme_keys: NDArray[np.float64]  # balanced-order key of each MME question (its image's)
    mmmu_keys: NDArray[np.float64]

    @property
    def total(self) -> int:
        return int(self.mme.categories.size + self.mmmu_subjects.size)


def full_layout(seed: int = 0) -> Layout:
    """MME (2374 questions) and MMMU-val (900) with the balanced order `data.sampling.sequential_keys`."""
    from vlmparity.data.sampling import sequential_keys
    from vlmparity.tasks.base import Sample

    mme = mme_layout()
    subjects = mmmu_subjects()
    samples = [
        Sample("mme", f"q{i}", i, "", str(c), str(img), ())
        for i, (c, img) in enumerate(zip(mme.categories, mme.images, strict=True))
    ] + [Sample("mmmu_val", f"m{i}", i, "", str(s), f"m{i}", ()) for i, s in enumerate(subjects)]
    keys = np.asarray(sequential_keys(samples, seed))
    n = mme.categories.size
    return Layout(mme, subjects, keys[:n], keys[n:])


def simulate(
    p_lose: NDArray[np.float64] | float,
    p_gain: NDArray[np.float64] | float,
    n: int,
    trials: int,
    accuracy: float,
    rng: np.random.Generator,
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Reference right with probability `accuracy`; the candidate flips a right answer with probability
    p_lose and a wrong one with p_gain (per question arrays allowed). Shape (trials, n)."""
    a = rng.random((trials, n)) < accuracy
    u = rng.random((trials, n))
    flip = np.where(a, u < p_lose, u < p_gain)
    return a, a ^ flip


def flip_rates(accuracy: float, divergence: float, drop: float | NDArray[np.float64]) -> tuple[Any, Any]:
    """(p_lose, p_gain): `divergence` of the questions answered differently, half each way, plus a true
    loss of `drop` (right answers turned wrong)."""
    p_lose = (divergence / 2 + np.asarray(drop)) / accuracy
    p_gain = (divergence / 2) / (1 - accuracy)
    if np.any(p_lose > 1) or p_gain > 1:
        raise ValueError("divergence/drop too large for this accuracy")
    return p_lose, p_gain


@dataclass(frozen=True)
class MetricStats:
    """Per trial: the difference, its design-based se and the exact bound's units and scale."""

    delta: NDArray[np.float64]
    se: NDArray[np.float64]
    units: NDArray[np.float64]
    scale: NDArray[np.float64]
    margin: float
    samples: int  # task samples used
    p_diff: NDArray[np.float64]  # two-sided p of "no difference" (McNemar exact, or the null-variance z-test)


def _strat_var(values: NDArray[np.float64], groups: NDArray[np.intp]) -> NDArray[np.float64]:
    """Design-based variance of the sum of `values` (trials x units), units drawn within `groups`."""
    g = np.zeros((groups.size, int(groups.max()) + 1))
    g[np.arange(groups.size), groups] = 1.0
    cnt = g.sum(0)
    s, sq = values @ g, (values**2) @ g
    within = sq - np.divide(s**2, cnt, out=np.zeros_like(s), where=cnt > 0)
    factor = np.divide(cnt, cnt - 1, out=np.zeros_like(cnt), where=cnt > 1)
    out: NDArray[np.float64] = np.maximum(within, 0.0) @ factor
    return out


def accuracy_stats(
    a: NDArray[np.bool_],
    b: NDArray[np.bool_],
    strata: NDArray[np.intp],
    clusters: NDArray[np.intp] | None,
    margin: float,
) -> MetricStats:
    """`verdict.compare_accuracy`'s delta, se and exact-bound terms for every trial (rows)."""
    n = a.shape[1]
    d = b.astype(float) - a.astype(float)
    delta = d.mean(1)
    if clusters is None:
        contrib, cl_strata, m, size_max = d / n, strata, n, 1
        n_ab, n_ba = (d < 0).sum(1), (d > 0).sum(1)
        tot = n_ab + n_ba
        p_diff = np.where(tot > 0, np.minimum(1.0, 2 * sps.binom.cdf(np.minimum(n_ab, n_ba), tot, 0.5)), 1.0)
    else:
        m = int(clusters.max()) + 1
        c = np.zeros((n, m))
        c[np.arange(n), clusters] = 1.0
        size = c.sum(0)
        contrib = (d @ c - delta[:, None] * size[None, :]) / n
        cl_strata = np.zeros(m, dtype=np.intp)
        cl_strata[clusters] = strata
        size_max = int(size.max())
        se_null = np.sqrt((((d @ c) / n) ** 2).sum(1) + v.PSEUDO_DISCORDANT / n**2)
        p_diff = 2 * sps.norm.sf(np.abs(delta) / se_null)
    se = np.sqrt(_strat_var(contrib, cl_strata))
    ones = np.ones_like(delta)
    return MetricStats(delta, se, ones * m, ones * (size_max * m / n), margin, n, p_diff)


def mme_score_stats(
    a: NDArray[np.bool_],
    b: NDArray[np.bool_],
    categories: NDArray[np.intp],
    images: NDArray[np.intp],
    margin: float,
) -> MetricStats:
    """`verdict.compare_cluster_score`'s delta, se and exact-bound terms (images of 2 questions) per trial."""
    n = a.shape[1]
    m = int(images.max()) + 1
    c = np.zeros((n, m))
    c[np.arange(n), images] = 1.0
    size = c.sum(0)
    img_cat = np.zeros(m, dtype=np.intp)
    img_cat[images] = categories
    cat_count = np.bincount(img_cat, minlength=int(categories.max()) + 1).astype(float)
    weight = 1.0 / cat_count[img_cat]

    def scores(ok: NDArray[np.bool_]) -> NDArray[np.float64]:
        k = ok.astype(float) @ c
        out: NDArray[np.float64] = 100.0 * k / size + 100.0 * (k == size)
        return out

    def impacts(ok: NDArray[np.bool_]) -> NDArray[np.float64]:
        k = ok.astype(float) @ c  # right answers per image
        others_right = (k[:, images] - ok) == size[images] - 1
        out: NDArray[np.float64] = (100.0 / size[images] + 100.0 * others_right) * weight[images]
        return out

    contrib = (scores(b) - scores(a)) * weight
    delta = contrib.sum(1)
    se = np.sqrt(_strat_var(contrib, img_cat))
    ia, ib = impacts(a), impacts(b)
    scale = ((ia + ib) / 2).sum(1)
    se_null = np.sqrt((contrib**2).sum(1) + v.PSEUDO_DISCORDANT * ((ia**2 + ib**2) / 2).mean(1))
    p_diff = 2 * sps.norm.sf(np.abs(delta) / se_null)
    return MetricStats(delta, se, np.full(delta.shape, float(n)), scale, margin, n, p_diff)


def comparison_stats(
    layout: Layout,
    mme: tuple[NDArray[np.bool_], NDArray[np.bool_]],
    mmmu: tuple[NDArray[np.bool_], NDArray[np.bool_]],
    fraction: float = 1.0,
    margins: tuple[float, float, float] = DEFAULT_MARGINS,
) -> list[MetricStats]:
    """The four metrics (`METRICS`) over the questions whose balanced-order key is <= `fraction`."""
    acc_margin, perception_margin, cognition_margin = margins
    sel = layout.mme_keys <= fraction + 1e-12
    cats = np.unique(layout.mme.categories, return_inverse=True)[1][sel]
    images = np.unique(layout.mme.images[sel], return_inverse=True)[1]
    a, b = mme[0][:, sel], mme[1][:, sel]
    out = [accuracy_stats(a, b, cats, images, acc_margin)]
    perception = layout.mme.perception[sel]
    for half, margin in ((perception, perception_margin), (~perception, cognition_margin)):
        out.append(
            mme_score_stats(
                a[:, half],
                b[:, half],
                np.unique(cats[half], return_inverse=True)[1],
                np.unique(images[half], return_inverse=True)[1],
                margin,
            )
        )
    sel2 = layout.mmmu_keys <= fraction + 1e-12
    subj = np.unique(layout.mmmu_subjects[sel2], return_inverse=True)[1]
    out.append(accuracy_stats(mmmu[0][:, sel2], mmmu[1][:, sel2], subj, None, acc_margin))
    return out


def half_widths(s: MetricStats, level: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """sqrt((z(1 - level) se)^2 + u(level)^2) per trial (the fixed-size decision interval)."""
    lv = np.asarray(level, dtype=float)
    z = sps.norm.isf(lv)
    u = s.scale * -np.expm1(np.log(lv) / s.units)
    out: NDArray[np.float64] = np.hypot(z * s.se, u)
    return out


def _smallest_levels(s: MetricStats, inside: bool) -> NDArray[np.float64]:
    """Per trial the smallest level in (0, 0.5) at which the interval is inside (or wholly outside) the
    band; 1 if none (`verdict.equivalence_pvalue` / `nonequivalence_pvalue`, vectorised)."""
    ad = np.abs(s.delta)

    def test(level: NDArray[np.float64]) -> NDArray[np.bool_]:
        h = half_widths(s, level)
        ok: NDArray[np.bool_] = (ad + h < s.margin) if inside else (ad - h > s.margin)
        return ok

    n = ad.size
    lo, hi = np.full(n, math.log(1e-300)), np.full(n, math.log(0.5))
    ok_max = test(np.full(n, 0.5))
    for _ in range(80):
        mid = (lo + hi) / 2
        t = test(np.exp(mid))
        hi = np.where(t, mid, hi)
        lo = np.where(t, lo, mid)
    return np.where(ok_max, np.exp(hi), 1.0)


def fixed_verdicts(stats_: Sequence[MetricStats], alpha: float = v.ALPHA) -> NDArray[np.str_]:
    """The fixed-size overall verdict of every trial: Holm over the metrics as `verdict.judge` does."""
    k = len(stats_)
    p_eq = np.stack([_smallest_levels(s, True) for s in stats_])
    p_ne = np.stack([_smallest_levels(s, False) for s in stats_])
    claim = np.minimum(p_eq, p_ne)
    order = np.argsort(claim, axis=0, kind="stable")
    trials = claim.shape[1]
    stop = np.full(trials, np.nan)
    eq_all = np.ones(trials, dtype=bool)
    ne_any = np.zeros(trials, dtype=bool)
    for rank in range(k):
        own = alpha / (k - rank)
        level = np.where(np.isnan(stop), own, stop)
        idx = order[rank]
        eq = np.zeros(trials, dtype=bool)
        ne = np.zeros(trials, dtype=bool)
        for j, s in enumerate(stats_):
            pick = idx == j
            if not pick.any():
                continue
            h = half_widths(s, level)
            ad = np.abs(s.delta)
            eq |= pick & (ad + h < s.margin)
            ne |= pick & (ad - h > s.margin)
        stop = np.where(np.isnan(stop) & ~(eq | ne), own, stop)
        eq_all &= eq
        ne_any |= ne
    return np.where(ne_any, v.NOT_EQUIVALENT, np.where(eq_all, v.EQUIVALENT, v.INCONCLUSIVE))


@dataclass(frozen=True)
class SequentialOutcome:
    """Per trial: the sequential verdict, the look it stopped at (0-based) and the share of samples used."""

    verdict: NDArray[np.str_]
    look: NDArray[np.intp]
    fraction_used: NDArray[np.float64]


# The parts of a full comparison a sequential run stops sending separately, and the metrics each feeds
# (`compare.looks`: a sample is no longer sent once every metric it feeds is equivalent).
PARTS = {"mme perception": (0, 1), "mme cognition": (0, 2), "mmmu": (3,)}


def part_masks(layout: Layout) -> dict[str, tuple[str, NDArray[np.bool_]]]:
    """Per part: its task ("mme" | "mmmu") and which of that task's questions belong to it."""
    p = layout.mme.perception
    return {
        "mme perception": ("mme", p),
        "mme cognition": ("mme", ~p),
        "mmmu": ("mmmu", np.ones(layout.mmmu_subjects.size, dtype=bool)),
    }


def sequential_verdicts(
    layout: Layout,
    mme: tuple[NDArray[np.bool_], NDArray[np.bool_]],
    mmmu: tuple[NDArray[np.bool_], NDArray[np.bool_]],
    times: Sequence[float],
    alpha: float = v.ALPHA,
    margins: tuple[float, float, float] = DEFAULT_MARGINS,
    *,
    eq_family: str | None = None,
    ne_family: str | None = None,
) -> SequentialOutcome:
    """Run the group-sequential design (`compare.sequential`) on every trial: looks at `times`."""
    from vlmparity.compare import sequential as seq

    d = seq.design(times, alpha, seq.weights_of(UNITS), eq_family=eq_family, ne_family=ne_family)
    trials = mme[0].shape[0]
    status = np.zeros((len(METRICS), trials), dtype=np.int8)  # 0 open, 1 equivalent, 2 not equivalent
    stopped = np.full(trials, -1)
    final = np.full(trials, v.INCONCLUSIVE, dtype=object)
    masks = part_masks(layout)
    keys = {"mme": layout.mme_keys, "mmmu": layout.mmmu_keys}
    # a part all of whose metrics are equivalent stops being sent; its samples so far count as used
    part_used = {name: np.full(trials, -1.0) for name in PARTS}
    for k, t in enumerate(d.times):
        stats_ = comparison_stats(layout, mme, mmmu, t, margins)
        live = stopped < 0
        for j, s in enumerate(stats_):
            u = s.scale * -np.expm1(math.log(d.alpha) / s.units)
            h = np.hypot(d.eq_bounds[k] * s.se, u)
            ad = np.abs(s.delta)
            z = sps.norm.isf(s.p_diff / 2)
            eq = ad + h < s.margin
            ne = (z >= d.ne_bounds[j][k]) & (ad >= s.margin)
            open_ = live & (status[j] == 0)
            status[j] = np.where(open_ & eq, 1, np.where(open_ & ne, 2, status[j]))
        any_ne = (status == 2).any(0)
        all_eq = (status == 1).all(0)
        done = live & (any_ne | all_eq)
        for name, rows in PARTS.items():
            task, mask = masks[name]
            sent = float(np.count_nonzero(mask & (keys[task] <= t + 1e-12)))
            finished = (live & (status[list(rows)] == 1).all(0)) | done
            part_used[name] = np.where(finished & (part_used[name] < 0), sent, part_used[name])
        final = np.where(done & any_ne, v.NOT_EQUIVALENT, np.where(done & all_eq, v.EQUIVALENT, final))
        stopped = np.where(done, k, stopped)
    stopped = np.where(stopped < 0, len(d.times) - 1, stopped)
    used = np.zeros(trials)
    for name in PARTS:
        full = float(np.count_nonzero(masks[name][1]))
        used += np.where(part_used[name] < 0, full, part_used[name])
    used /= layout.total
    return SequentialOutcome(final.astype(str), stopped, used)
