"""Statistics checked against hand computation (formulas and arithmetic in the comments)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from vlmparity import stats
from vlmparity.errors import DataError

# ----------------------------------------------------------------------------- Wilson


def test_wilson_8_of_10_textbook() -> None:
    # z = 1.959964; centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.992073 / 1.384146 = 0.716740;
    # half = z * sqrt(0.016 + z^2/400) / 1.384146 = 0.226578 -> [0.4902, 0.9433].
    ci = stats.wilson_interval(8, 10)
    assert ci.estimate == 0.8
    assert ci.low == pytest.approx(0.4902, abs=1e-4)
    assert ci.high == pytest.approx(0.9433, abs=1e-4)


def test_wilson_ends() -> None:
    # k = 0: low 0, high = (z^2/n) / (1 + z^2/n) = 0.3841459 / 1.3841459 = 0.27753 (n = 10).
    zero = stats.wilson_interval(0, 10)
    assert zero.low == pytest.approx(0.0, abs=1e-12)
    assert zero.high == pytest.approx(0.27753, abs=1e-5)
    # k = n mirrors it: [1 - 0.27753, 1].
    full = stats.wilson_interval(10, 10)
    assert full.low == pytest.approx(0.72247, abs=1e-5)
    assert full.high == pytest.approx(1.0, abs=1e-12)


def test_wilson_rejects_impossible_counts() -> None:
    with pytest.raises(DataError):
        stats.wilson_interval(3, 0)
    with pytest.raises(DataError):
        stats.wilson_interval(11, 10)


def test_normal_quantile_95_is_the_published_value() -> None:
    # Phi^-1(0.975) = 1.95996398454005423552... (tables); the constant must be that, correctly rounded
    assert stats.normal_quantile(0.975) == 1.959963984540054
    # other levels: Phi^-1(0.995) = 2.57582930354890076...; Phi^-1(0.5) = 0
    assert stats.normal_quantile(0.995) == pytest.approx(2.5758293035489008, abs=1e-15)
    assert stats.normal_quantile(0.5) == 0.0


def test_wilson_does_not_import_scipy() -> None:
    # importing scipy.stats costs ~0.5 s per process, more than rescoring a run: the 95 % interval
    # (every interval `run`, `compare` and `report` compute) must not need it
    import subprocess
    import sys

    code = (
        "import sys; from vlmparity import stats; stats.wilson_interval(8, 10); "
        "print('scipy.stats' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ----------------------------------------------------------------------------- McNemar and Holm


def test_mcnemar_exact_hand_values() -> None:
    # 0 vs 5 discordant: two-sided = 2 * 0.5^5 = 0.0625.
    assert stats.mcnemar_exact(0, 5) == pytest.approx(0.0625)
    # 1 vs 9: P(X <= 1) for Bin(10, 1/2) = (1 + 10) / 1024; two-sided doubles it = 22/1024 = 0.021484375.
    assert stats.mcnemar_exact(1, 9) == pytest.approx(22 / 1024)
    assert stats.mcnemar_exact(9, 1) == pytest.approx(22 / 1024)
    # 2 vs 8: 2 * (1 + 10 + 45) / 1024 = 112/1024 = 0.109375.
    assert stats.mcnemar_exact(2, 8) == pytest.approx(112 / 1024)
    # Balanced and empty: no evidence of a difference.
    assert stats.mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert stats.mcnemar_exact(0, 0) == 1.0


def test_holm_hand_values() -> None:
    # Sorted 0.01, 0.03, 0.04 times 3, 2, 1 = 0.03, 0.06, 0.04; running max -> 0.03, 0.06, 0.06.
    assert stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    # Sorted 0.001, 0.02, 0.04, 0.5 times 4, 3, 2, 1 = 0.004, 0.06, 0.08, 0.5.
    assert stats.holm([0.5, 0.001, 0.02, 0.04]) == pytest.approx([0.5, 0.004, 0.06, 0.08])
    # Capped at 1: 0.6 * 2 = 1.2 -> 1, then max(1, 0.7) = 1.
    assert stats.holm([0.6, 0.7]) == pytest.approx([1.0, 1.0])
    assert stats.holm([0.2]) == pytest.approx([0.2])
    assert stats.holm([]) == []


# ----------------------------------------------------------------------------- agreement


def test_agreement_rate_and_interval() -> None:
    res = stats.agreement(["Yes", "No", "Yes"], ["Yes", "Yes", "Yes"])
    assert (res.n, res.n_agree) == (3, 2)
    assert res.rate == pytest.approx(2 / 3)
    wilson = stats.wilson_interval(2, 3)
    assert (res.low, res.high) == pytest.approx((wilson.low, wilson.high))


def test_agreement_compares_objects_and_checks_alignment() -> None:
    assert stats.agreement([["a", "b"], None], [["a", "b"], None]).rate == 1.0
    with pytest.raises(DataError):
        stats.agreement(["a"], ["a", "b"])
    with pytest.raises(DataError):
        stats.agreement([], [])


# ----------------------------------------------------------------------------- MME score


def test_mme_score_hand_case() -> None:
    # Category X: image x1 both right -> 100 + 100 = 200; image x2 one right -> 50 + 0 = 50; mean 125.
    # Category Y: image y1 none right -> 0. Score = 125 + 0 = 125.
    cats = ["X", "X", "X", "X", "Y", "Y"]
    imgs = ["x1", "x1", "x2", "x2", "y1", "y1"]
    ok = [True, True, True, False, False, False]
    assert stats.cluster_score(cats, imgs, ok) == pytest.approx(125.0)
    assert stats.stratum_scores(cats, imgs, ok) == pytest.approx({"X": 125.0, "Y": 0.0})


def test_mme_score_all_right_is_200_per_category() -> None:
    cats = ["A", "A", "B", "B", "B", "B"]
    imgs = ["a1", "a1", "b1", "b1", "b2", "b2"]
    assert stats.cluster_score(cats, imgs, [True] * 6) == pytest.approx(400.0)


def test_mme_score_order_does_not_matter() -> None:
    cats = ["X", "Y", "X", "X", "Y", "X"]
    imgs = ["x2", "y1", "x1", "x2", "y1", "x1"]
    ok = [False, True, True, True, True, True]
    # x1: 200, x2: 50 -> X = 125; y1: 200 -> total 325.
    assert stats.cluster_score(cats, imgs, ok) == pytest.approx(325.0)


def test_mme_image_in_two_categories_is_rejected() -> None:
    with pytest.raises(DataError):
        stats.cluster_score(["X", "Y"], ["img", "img"], [True, True])


# ----------------------------------------------------------------------------- bootstraps


def _half_and_half(category: str, m: int) -> tuple[list[str], list[str], list[bool]]:
    """m images: the first half both right (200), the second half both wrong (0)."""
    cats = [category] * (2 * m)
    imgs = [f"{category}/{i // 2}" for i in range(2 * m)]
    ok = [i // 2 < m // 2 for i in range(2 * m)]
    return cats, imgs, ok


def test_mme_bootstrap_matches_analytic_standard_error() -> None:
    # 100 images scoring 200 or 0 (half each): mean 100, population sd 100, bootstrap se = 100/sqrt(100)
    # = 10, so the percentile interval is close to 100 -+ 1.96 * 10 = [80.4, 119.6].
    cats, imgs, ok = _half_and_half("X", 100)
    ci = stats.cluster_score_interval(cats, imgs, ok, n_boot=4000, seed=1)
    assert ci.estimate == pytest.approx(100.0)
    assert ci.low == pytest.approx(80.4, abs=2.0)
    assert ci.high == pytest.approx(119.6, abs=2.0)


def test_mme_bootstrap_is_stratified_by_category() -> None:
    # Two such categories: score 200, variances add: se = sqrt(2) * 10 = 14.14 -> [172.3, 227.7].
    c1, i1, o1 = _half_and_half("X", 100)
    c2, i2, o2 = _half_and_half("Y", 100)
    ci = stats.cluster_score_interval(c1 + c2, i1 + i2, o1 + o2, n_boot=4000, seed=2)
    assert ci.estimate == pytest.approx(200.0)
    assert ci.low == pytest.approx(200 - 1.96 * 10 * math.sqrt(2), abs=2.5)
    assert ci.high == pytest.approx(200 + 1.96 * 10 * math.sqrt(2), abs=2.5)


def test_mme_bootstrap_contains_estimate_and_shrinks_with_n() -> None:
    # Images cycling through 2, 1, 0 right answers; 4x the images should halve the width (1/sqrt(n)).
    def build(m: int) -> tuple[list[str], list[str], list[bool]]:
        cats, imgs, ok = [], [], []
        for i in range(m):
            right = i % 3
            cats += ["X", "X"]
            imgs += [f"x{i}", f"x{i}"]
            ok += [right >= 1, right >= 2]
        return cats, imgs, ok

    small = stats.cluster_score_interval(*build(60), seed=3)
    large = stats.cluster_score_interval(*build(240), seed=3)
    for ci in (small, large):
        assert ci.low < ci.estimate < ci.high
    ratio = (large.high - large.low) / (small.high - small.low)
    assert 0.35 < ratio < 0.65


def test_mme_bootstrap_is_reproducible_by_seed() -> None:
    cats, imgs, ok = _half_and_half("X", 50)
    first = stats.cluster_score_interval(cats, imgs, ok, seed=7)
    again = stats.cluster_score_interval(cats, imgs, ok, seed=np.random.default_rng(7))
    assert (first.low, first.high) == (again.low, again.high)


def test_all_right_gives_zero_width_interval() -> None:
    cats = ["X"] * 20
    imgs = [f"x{i // 2}" for i in range(20)]
    ci = stats.cluster_score_interval(cats, imgs, [True] * 20)
    assert (ci.low, ci.estimate, ci.high) == pytest.approx((200.0, 200.0, 200.0))


def test_paired_accuracy_bootstrap_matches_analytic() -> None:
    # 1000 questions, 100 right for A and wrong for B: d = -1 on 10 %, delta = -0.1,
    # se = sqrt(0.1 * 0.9 / 1000) = 0.009487 -> [-0.1186, -0.0814].
    a = np.ones(1000, dtype=bool)
    b = a.copy()
    b[:100] = False
    cl = np.arange(1000, dtype=np.intp)
    draws = stats.paired_accuracy_draws(a, b, cl, np.zeros(1000, dtype=np.intp), 4000, stats.rng_from(0))
    low, high = stats.percentile_interval(draws, 0.95)
    assert low == pytest.approx(-0.1186, abs=0.003)
    assert high == pytest.approx(-0.0814, abs=0.003)


def test_paired_mme_bootstrap_identical_runs_zero_width() -> None:
    cats, imgs, ok = _half_and_half("X", 30)
    table = stats.cluster_table(cats, imgs)
    arr = np.array(ok)
    draws = stats.paired_cluster_draws(table, arr, arr.copy(), 500, stats.rng_from(0))
    assert np.all(draws == 0.0)


def test_paired_mme_bootstrap_resamples_both_runs_together() -> None:
    # X: 100 images all right for A; B misses one question on 50 of them (200 -> 50, diff -150).
    # Mean diff -75, sd 75, se 7.5 -> [-89.7, -60.3]. Y is identical in both runs and adds nothing;
    # unpaired resampling would add the runs' own spread and widen the interval several times.
    cats = ["X"] * 200 + ["Y"] * 40
    imgs = [f"x{i // 2}" for i in range(200)] + [f"y{i // 2}" for i in range(40)]
    a = np.array([True] * 200 + [i % 4 < 2 for i in range(40)])
    b = a.copy()
    b[0:100:2] = False  # first question of images x0..x49
    table = stats.cluster_table(cats, imgs)
    draws = stats.paired_cluster_draws(table, a, b, 4000, stats.rng_from(5))
    low, high = stats.percentile_interval(draws, 0.95)
    assert low == pytest.approx(-75 - 1.96 * 7.5, abs=1.5)
    assert high == pytest.approx(-75 + 1.96 * 7.5, abs=1.5)
