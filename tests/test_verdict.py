"""Paired comparison and verdict: hand-computed standard errors, TOST, Holm, and the verdict rules."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest

from vlmparity.compare import calibration
from vlmparity.compare import verdict as v
from vlmparity.errors import ConfigError, DataError

# MME question counts per category (research/lmms-eval.md §1.6), two questions per image.
PERCEPTION = {
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
COGNITION = {
    "commonsense_reasoning": 140,
    "numerical_calculation": 40,
    "text_translation": 40,
    "code_reasoning": 40,
}


def mme_questions(counts: dict[str, int]) -> tuple[np.ndarray, np.ndarray]:
    cats = np.repeat(np.array(list(counts)), list(counts.values()))
    imgs = np.array([f"{c}/{i // 2}" for c, n in counts.items() for i in range(n)])
    return cats, imgs


def pattern(n: int, right_per_10: int) -> np.ndarray:
    """Deterministic correctness: question i right when (7 i mod 10) < right_per_10."""
    return (np.arange(n) * 7 % 10) < right_per_10


def flip(ok: np.ndarray, lose: int, gain: int) -> np.ndarray:
    """Copy of ok with the first `lose` right answers made wrong and the first `gain` wrong ones right."""
    out = ok.copy()
    out[np.flatnonzero(ok)[:lose]] = False
    out[np.flatnonzero(~ok)[:gain]] = True
    return out


def spread_flip(ok: np.ndarray, lose: int) -> np.ndarray:
    """Copy of ok with `lose` right answers, evenly spread over the run, made wrong."""
    out = ok.copy()
    right = np.flatnonzero(ok)
    out[right[np.linspace(0, right.size - 1, lose).astype(int)]] = False
    return out


def mme_results(a: np.ndarray, b: np.ndarray) -> list[v.PairedResult]:
    pc, pi = mme_questions(PERCEPTION)
    cc, ci = mme_questions(COGNITION)
    cats, imgs = np.concatenate([pc, cc]), np.concatenate([pi, ci])
    p = np.arange(a.size) < pc.size
    return [
        v.compare_accuracy(a, b, metric="mme_acc", clusters=imgs, strata=cats),
        v.compare_mme_score(pc, pi, a[p], b[p], metric="mme_perception_score"),
        v.compare_mme_score(cc, ci, a[~p], b[~p], metric="mme_cognition_score"),
    ]


# ----------------------------------------------------------------------------- tests of the tests


def test_tost_pvalue_hand_values() -> None:
    # delta 0, se 0.005, margin 0.01: both one-sided z = 2 -> p = 1 - Phi(2) = 0.02275.
    assert v.tost_pvalue(0.0, 0.005, 0.01) == pytest.approx(0.02275, abs=1e-5)
    # delta 0.004: lower z = 0.014/0.005 = 2.8 -> 0.002555; upper z = -0.006/0.005 = -1.2 -> 0.11507.
    assert v.tost_pvalue(0.004, 0.005, 0.01) == pytest.approx(0.11507, abs=1e-5)
    assert v.tost_pvalue(-0.004, 0.005, 0.01) == pytest.approx(0.11507, abs=1e-5)


def test_diff_pvalue_hand_value() -> None:
    # z = 1.96 -> two-sided 0.05.
    assert v.diff_pvalue(0.0196, 0.01) == pytest.approx(0.05, abs=1e-4)


# ----------------------------------------------------------------------------- standard errors


def test_accuracy_se_by_hand() -> None:
    # n = 10, one question A right / B wrong: d = -1 once, delta = -0.1.
    # Centred: (-0.9)^2 + 9 * 0.1^2 = 0.9; / n^2 = 0.009; * n/(n-1) = 0.01; floor 1/n^2 = 0.01 -> se sqrt(0.02).
    a = np.ones(10, dtype=bool)
    b = flip(a, 1, 0)
    r = v.compare_accuracy(a, b)
    assert r.delta == pytest.approx(-0.1)
    assert r.se == pytest.approx(0.141421, abs=1e-6)
    assert (r.discordant_ab, r.discordant_ba) == (1, 0)
    assert r.p_mcnemar == pytest.approx(1.0)  # one discordant question: binomial 1 of 1 -> p = 1
    assert r.unit == "fraction"


def test_clustered_accuracy_se_by_hand() -> None:
    # 8 questions in 4 pairs; both questions of pair 0 go right -> wrong: delta = -2/8 = -0.25.
    # Cluster contributions (d_j - delta * 2) / 8: pair 0 (-2 + 0.5)/8 = -0.1875, others 0.0625.
    # Sum of squares 0.03515625 + 3 * 0.00390625 = 0.046875; * 4/3 = 0.0625; + 1/64 -> se 0.279508.
    a = np.ones(8, dtype=bool)
    b = flip(a, 2, 0)
    clusters = ["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"]
    assert v.compare_accuracy(a, b, clusters=clusters).se == pytest.approx(0.279508, abs=1e-6)
    # Treated as independent questions: 2 * 0.75^2 + 6 * 0.25^2 = 1.5; / 64 * 8/7 + 1/64 -> se 0.205939.
    assert v.compare_accuracy(a, b).se == pytest.approx(0.205939, abs=1e-6)


def test_mme_score_se_by_hand() -> None:
    # X: 4 images all right for A (score 200); B misses one question of image x0 (200 -> 50):
    # delta = -150/4 = -37.5. Y: 2 images all right in both runs. Scores 400 and 362.5.
    # Design variance: X contributions [-37.5, 0, 0, 0], centred sum of squares 1054.6875 * 4/3 = 1406.25.
    # Floor: one flipped question's (impact / images)^2 averaged over the 12 questions and both runs:
    # A: 8 * (150/4)^2 + 4 * (150/2)^2 = 33750; B: 7 * 1406.25 + (50/4)^2 + 22500 = 32500;
    # (33750 + 32500) / 2 / 12 = 2760.4167. se = sqrt(1406.25 + 2760.4167) = 64.5497.
    cats = ["X"] * 8 + ["Y"] * 4
    imgs = [f"x{i // 2}" for i in range(8)] + [f"y{i // 2}" for i in range(4)]
    a = np.ones(12, dtype=bool)
    b = a.copy()
    b[1] = False
    r = v.compare_mme_score(cats, imgs, a, b, metric="mme_cognition_score")
    assert (r.a_value, r.b_value, r.delta) == pytest.approx((400.0, 362.5, -37.5))
    assert r.se == pytest.approx(64.5497, abs=1e-3)
    assert r.margin == 20.0
    assert r.unit == "points"
    assert r.p_mcnemar is None


def test_default_margins() -> None:
    assert v.ACCURACY_MARGIN == 0.01
    assert v.MME_MARGIN == {"mme_perception_score": 50.0, "mme_cognition_score": 20.0}
    with pytest.raises(DataError):
        v.compare_mme_score(["X", "X"], ["x", "x"], [True, True], [True, True], metric="other_score")


# ----------------------------------------------------------------------------- verdicts on built runs


def test_identical_runs_large_n_equivalent() -> None:
    a = pattern(900, 6)
    r = v.compare_accuracy(a, a.copy(), metric="mmmu_acc")
    assert r.verdict == "equivalent"
    assert (r.ci_low, r.ci_high) == (0.0, 0.0)
    assert (r.discordant_ab, r.discordant_ba, r.p_mcnemar) == (0, 0, 1.0)


def test_identical_mme_runs_equivalent_with_zero_width_intervals() -> None:
    a = pattern(2374, 8)
    verdict = v.decide(mme_results(a, a.copy()))
    assert verdict.verdict == "equivalent"
    assert verdict.exit_code == 0
    for r in verdict.metrics:
        assert r.verdict == "equivalent"
        assert (r.ci_low, r.ci_high) == (0.0, 0.0)


def test_five_point_drop_mmmu_size_not_equivalent() -> None:
    # 45 of 900 right answers lost (-5 points) plus 20 flips each way that cancel out.
    a = pattern(900, 6)
    b = flip(flip(a, 20, 20), 45, 0)
    r = v.compare_accuracy(a, b, metric="mmmu_acc")
    assert r.delta == pytest.approx(-0.05)
    assert r.verdict == "not equivalent"
    assert r.ci_high is not None and r.ci_high < 0
    verdict = v.decide([r])
    assert (verdict.verdict, verdict.exit_code) == ("not equivalent", 1)


def test_five_point_drop_mme_size_not_equivalent() -> None:
    # 119 of 2374 answers (5 points) go from right to wrong, spread over all categories.
    a = pattern(2374, 8)
    b = spread_flip(a, 119)
    verdict = v.decide(mme_results(a, b))
    assert verdict.verdict == "not equivalent"
    by_metric = {r.metric: r for r in verdict.metrics}
    assert by_metric["mme_acc"].verdict == "not equivalent"
    assert by_metric["mme_perception_score"].delta < -50


def test_tiny_n_inconclusive_with_sample_estimate() -> None:
    # n = 20, one flip each way: delta 0. Variance: 2/400 * 20/19 + 1/400 = 0.0077632, so the variance per
    # sample is 0.155263; TOST power 80 % at delta 0 needs margin/se >= z(0.95) + z(0.90) = 2.926405:
    # n = 0.155263 * 8.563847 / 0.01^2 = 13296.5 -> 13277 more -> rounded up to ~14000.
    a = np.array([True] * 10 + [False] * 10)
    b = flip(a, 1, 1)
    r = v.compare_accuracy(a, b)
    assert r.verdict == "inconclusive"
    assert r.n_more == 14000
    assert r.label == "inconclusive (need ~14000 more samples)"
    verdict = v.decide([r])
    assert (verdict.verdict, verdict.exit_code, verdict.n_more) == ("inconclusive", 2, 14000)


def test_tiny_identical_runs_are_not_equivalent() -> None:
    # No discordance seen in 10 questions says little: the floor keeps it inconclusive.
    a = pattern(10, 6)
    r = v.compare_accuracy(a, a.copy())
    assert r.verdict == "inconclusive"
    assert r.n_more is not None and r.n_more > 0


# ----------------------------------------------------------------------------- Holm in the verdict


def _result(
    metric: str, *, p_tost: float, p_diff: float, delta: float, margin: float = 0.01
) -> v.PairedResult:
    base = v.compare_accuracy(pattern(100, 5), pattern(100, 5), metric=metric, n_boot=0)
    return replace(base, p_tost=p_tost, p_diff=p_diff, delta=delta, margin=margin)


def test_holm_on_tost_p_values() -> None:
    # TOST p 0.01, 0.04, 0.03 -> Holm 0.03, 0.06, 0.06: only the first metric is shown equivalent.
    results = [
        _result("m1", p_tost=0.01, p_diff=0.9, delta=0.0),
        _result("m2", p_tost=0.04, p_diff=0.9, delta=0.0),
        _result("m3", p_tost=0.03, p_diff=0.9, delta=0.0),
    ]
    verdict = v.decide(results)
    assert [r.p_tost_holm for r in verdict.metrics] == pytest.approx([0.03, 0.06, 0.06])
    assert [r.verdict for r in verdict.metrics] == ["equivalent", "inconclusive", "inconclusive"]
    assert verdict.verdict == "inconclusive"


def test_all_equivalent_after_holm() -> None:
    # 0.01, 0.02 -> Holm 0.02, 0.02: both below 0.05.
    results = [_result("m1", p_tost=0.01, p_diff=1, delta=0), _result("m2", p_tost=0.02, p_diff=1, delta=0)]
    assert v.decide(results).verdict == "equivalent"


def test_holm_on_difference_p_values() -> None:
    # Difference p 0.02, 0.03 -> Holm 0.04, 0.04: both flagged (|delta| > margin).
    flagged = v.decide(
        [
            _result("m1", p_tost=0.9, p_diff=0.02, delta=-0.03),
            _result("m2", p_tost=0.9, p_diff=0.03, delta=-0.02),
        ]
    )
    assert [r.verdict for r in flagged.metrics] == ["not equivalent", "not equivalent"]
    assert flagged.verdict == "not equivalent"
    # 0.03, 0.04 -> Holm 0.06, 0.06: neither survives the correction.
    kept = v.decide(
        [
            _result("m1", p_tost=0.9, p_diff=0.03, delta=-0.03),
            _result("m2", p_tost=0.9, p_diff=0.04, delta=-0.02),
        ]
    )
    assert kept.verdict == "inconclusive"


def test_significant_difference_inside_margin_is_not_flagged() -> None:
    r = v.decide([_result("m1", p_tost=0.2, p_diff=0.001, delta=-0.005)]).metrics[0]
    assert r.verdict == "inconclusive"


def test_one_metric_not_equivalent_decides_overall() -> None:
    results = [
        _result("m1", p_tost=0.001, p_diff=1, delta=0),
        _result("m2", p_tost=0.99, p_diff=0.001, delta=-0.05),
    ]
    verdict = v.decide(results)
    assert verdict.verdict == "not equivalent"
    assert verdict.reasons == ("m2: not equivalent",)


def test_decide_needs_metrics() -> None:
    with pytest.raises(DataError):
        v.decide([])


def test_verdict_is_json_serialisable() -> None:
    a = pattern(2374, 8)
    verdict = v.decide(mme_results(a, spread_flip(a, 30)))
    data = json.loads(json.dumps(asdict(verdict)))
    assert data["metrics"][0]["metric"] == "mme_acc"
    assert set(data) >= {"verdict", "label", "exit_code", "alpha", "n_more", "reasons", "metrics"}


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("task", ["mmmu", "mme"])
def test_false_alarm_rate_not_above_nominal(task: str) -> None:
    # Equally accurate backends disagreeing on 10 % of questions, over several seeds: the share called
    # "not equivalent" must not exceed alpha = 5 % beyond sampling error (400 trials: se 1.1 %).
    rates = [
        calibration.verdict_rates(task, trials=100, divergence=0.10, seed=seed)[v.NOT_EQUIVALENT]
        for seed in range(4)
    ]
    assert float(np.mean(rates)) <= 0.05 + 0.025


@pytest.mark.parametrize("task", ["mmmu", "mme"])
def test_five_point_drop_flagged_at_full_size(task: str) -> None:
    rates = calibration.verdict_rates(task, trials=100, divergence=0.05, drop=0.05, seed=9)
    assert rates[v.NOT_EQUIVALENT] >= 0.95


def test_simulated_candidate_has_the_requested_divergence_and_drop() -> None:
    # Expected: reference 60 % right; P(lose) = (0.05 + 0.02) / 0.6, P(gain) = 0.05 / 0.4, so the runs
    # disagree on 0.6 * 0.1167 + 0.4 * 0.125 = 0.12 of questions and B is 2 points worse.
    a, b = calibration.simulate_pairs(2000, 50, 0.6, 0.10, 0.02, np.random.default_rng(0))
    assert float(np.mean(a != b)) == pytest.approx(0.12, abs=0.005)
    assert float(np.mean(b) - np.mean(a)) == pytest.approx(-0.02, abs=0.003)


def test_bad_margin_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        v.compare_accuracy([True, False], [True, True], margin=0.0)
    with pytest.raises(ConfigError):
        v.compare_mme_score(["X", "X"], ["x", "x"], [True, True], [True, True], margin=-5.0)
