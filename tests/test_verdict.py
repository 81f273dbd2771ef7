"""Paired comparison and verdict: hand-computed standard errors, TOST, Holm, and the verdict rules."""

from __future__ import annotations

import json
from dataclasses import asdict, replace

import numpy as np
import pytest
from scipy import stats as sps

from vlmparity.compare import calibration
from vlmparity.compare import verdict as v
from vlmparity.errors import ConfigError, DataError
from vlmparity.report.labels import labelled_verdict, metric_label

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
        v.compare_cluster_score(pc, pi, a[p], b[p], metric="mme_perception_score"),
        v.compare_cluster_score(cc, ci, a[~p], b[~p], metric="mme_cognition_score"),
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
    # Centred: (-0.9)^2 + 9 * 0.1^2 = 0.9; / n^2 = 0.009; * n/(n-1) = 0.01 -> se 0.1 (no floor: the exact
    # part of the decision interval covers small counts).
    a = np.ones(10, dtype=bool)
    b = flip(a, 1, 0)
    r = v.compare_accuracy(a, b)
    assert r.delta == pytest.approx(-0.1)
    assert r.se == pytest.approx(0.1, abs=1e-9)
    assert (r.discordant_ab, r.discordant_ba) == (1, 0)
    assert r.p_difference == pytest.approx(1.0)  # McNemar: binomial 1 of 1 -> p = 1
    assert r.difference_test == "McNemar exact"
    assert r.unit == "fraction"


def test_clustered_accuracy_se_by_hand() -> None:
    # 8 questions in 4 pairs; both questions of pair 0 go right -> wrong: delta = -2/8 = -0.25.
    # Cluster contributions (d_j - delta * 2) / 8: pair 0 (-2 + 0.5)/8 = -0.1875, others 0.0625.
    # Sum of squares 0.03515625 + 3 * 0.00390625 = 0.046875; * 4/3 = 0.0625 -> se 0.25.
    a = np.ones(8, dtype=bool)
    b = flip(a, 2, 0)
    clusters = ["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"]
    r = v.compare_accuracy(a, b, clusters=clusters)
    assert r.se == pytest.approx(0.25, abs=1e-9)
    assert (r.exact_units, r.exact_scale) == (4, pytest.approx(1.0))
    assert r.difference_test == "z-test (clustered)"
    # Treated as independent questions: 2 * 0.75^2 + 6 * 0.25^2 = 1.5; / 64 * 8/7 -> se 0.163663.
    assert v.compare_accuracy(a, b).se == pytest.approx(0.163663, abs=1e-6)


def test_mme_score_se_by_hand() -> None:
    # X: 4 images all right for A (score 200); B misses one question of image x0 (200 -> 50):
    # delta = -150/4 = -37.5. Y: 2 images all right in both runs. Scores 400 and 362.5.
    # Design variance: X contributions [-37.5, 0, 0, 0], centred sum of squares 1054.6875 * 4/3 = 1406.25
    # -> se 37.5. Exact scale: each question's lone-flip impact over its category's images, both runs'
    # mean: A: 8 * 150/4 + 4 * 150/2 = 600; B: x0's questions 150/4 (its other is right) and 50/4
    # (its other is wrong), 6 * 150/4, 4 * 150/2 = 575 -> 587.5.
    cats = ["X"] * 8 + ["Y"] * 4
    imgs = [f"x{i // 2}" for i in range(8)] + [f"y{i // 2}" for i in range(4)]
    a = np.ones(12, dtype=bool)
    b = a.copy()
    b[1] = False
    r = v.compare_cluster_score(cats, imgs, a, b, metric="mme_cognition_score")
    assert (r.a_value, r.b_value, r.delta) == pytest.approx((400.0, 362.5, -37.5))
    assert r.se == pytest.approx(37.5, abs=1e-9)
    assert r.exact_scale == pytest.approx(587.5)
    assert r.exact_units == 12
    assert r.margin == 20.0
    assert r.unit == "points"


def test_default_margins() -> None:
    assert v.ACCURACY_MARGIN == 0.01
    assert {m: v.default_margin(m) for m in ("mme_perception_score", "mme_cognition_score")} == {
        "mme_perception_score": 50.0,
        "mme_cognition_score": 20.0,
    }
    with pytest.raises(DataError):
        v.compare_cluster_score(["X", "X"], ["x", "x"], [True, True], [True, True], metric="other_score")


# ----------------------------------------------------------------------------- verdicts on built runs


def _cp_zero(level: float, n: int) -> float:
    """Clopper-Pearson one-sided upper bound of a proportion with 0 successes in n (a beta quantile)."""
    return float(sps.beta.ppf(1 - level, 1, n))


def test_identical_runs_large_n_equivalent_with_the_exact_interval() -> None:
    # 0 discordant of 900: the difference is exactly 0 with no variance; the decision interval is the exact
    # bound on the share of questions answered differently, +-CP(0 of 900) at level alpha = 0.05.
    a = pattern(900, 6)
    r = v.compare_accuracy(a, a.copy(), metric="mmmu_acc")
    bound = _cp_zero(0.05, 900)  # 0.3323 %
    assert r.verdict == "equivalent"
    assert (r.ci_low, r.ci_high) == (pytest.approx(-bound, rel=1e-9), pytest.approx(bound, rel=1e-9))
    assert r.certified_margin == pytest.approx(bound, rel=1e-9)
    assert metric_label(r) == "equivalent within ±0.33 pp"
    assert (r.discordant_ab, r.discordant_ba, r.p_difference) == (0, 0, 1.0)
    # The equivalence p is the level at which the bound reaches the margin: 0.99^900.
    assert r.p_equivalence == pytest.approx(0.99**900, rel=1e-6)


def test_identical_mme_runs_equivalent() -> None:
    a = pattern(2374, 8)
    verdict = v.decide(mme_results(a, a.copy()))
    assert verdict.verdict == "equivalent"
    assert verdict.exit_code == 0
    for r in verdict.metrics:
        assert r.verdict == "equivalent"
        assert r.ci_low == pytest.approx(-r.ci_high) and r.ci_high > 0
        bound = r.exact_scale * _cp_zero(r.level, r.exact_units)
        assert r.ci_high == pytest.approx(bound, rel=1e-9)
        assert r.ci_high < r.margin


def test_identical_answers_on_a_few_questions_need_more_samples() -> None:
    # 0 of 180 discordant certifies only +-CP(0 of 180) = 1.65 pp. The exact bound falls below 1 pp from
    # n = 299 on (0.05^(1/n) > 0.99 <=> n > 298.07): 119 more, rounded up to two digits: 120 of the 720 left.
    a = pattern(180, 6)
    r = v.compare_accuracy(a, a.copy(), available=900)
    assert r.verdict == "inconclusive"
    assert r.certified_margin == pytest.approx(_cp_zero(0.05, 180), rel=1e-9)
    assert min(n for n in range(180, 400) if _cp_zero(0.05, n) < 0.01) == 299
    assert (r.n_more, r.remaining) == (120, 720)
    assert (
        metric_label(r)
        == "inconclusive: certifies ±1.65 pp, not ±1.00 pp; need ~120 more samples (720 remain)"
    )
    # The count never exceeds what the data set still holds...
    capped = v.compare_accuracy(a, a.copy(), available=299)
    assert (capped.n_more, capped.remaining) == (119, 119)
    assert metric_label(capped).endswith("need ~119 more samples (all 119 remaining)")
    # ... and is said in task samples when the metric covers a part of the task (here half of it).
    half = v.compare_accuracy(a, a.copy(), available=900, task_per_metric=2.0)
    assert (half.n_more, half.remaining) == (240, 1440)


def test_tiny_identical_runs_are_not_equivalent() -> None:
    # No discordance seen in 10 questions says little: the exact bound is +-25.9 pp.
    a = pattern(10, 6)
    r = v.compare_accuracy(a, a.copy())
    assert r.verdict == "inconclusive"
    assert r.ci_high == pytest.approx(_cp_zero(0.05, 10), rel=1e-9)
    assert r.n_more == 290  # 299 - 10 = 289, rounded up to two digits; no data set size: no cap


def test_decision_interval_adds_the_normal_and_the_exact_parts() -> None:
    # n = 20, one flip each way: delta 0, se^2 = 2/400 * 20/19. At level 0.05 the half-width is
    # sqrt((z se)^2 + CP(0 of 20)^2).
    a = np.array([True] * 10 + [False] * 10)
    b = flip(a, 1, 1)
    r = v.compare_accuracy(a, b)
    se = float(np.sqrt(2 / 400 * 20 / 19))
    z = float(sps.norm.ppf(0.95))
    h = float(np.hypot(z * se, _cp_zero(0.05, 20)))
    assert r.se == pytest.approx(se)
    assert (r.ci_low, r.ci_high) == (pytest.approx(-h), pytest.approx(h))
    assert r.verdict == "inconclusive"
    # More samples: the same variance per question and the exact bound of the larger count.
    need = next(n for n in range(21, 100_000) if np.hypot(z * se * np.sqrt(20 / n), _cp_zero(0.05, n)) < 0.01)
    more = need - 20
    step = 10 ** (len(str(more)) - 2)
    assert r.n_more == -(-more // step) * step
    assert metric_label(r).startswith("inconclusive: certifies ±")
    verdict = v.decide([r])
    assert (verdict.verdict, verdict.exit_code, verdict.n_more) == ("inconclusive", 2, r.n_more)
    assert verdict.label == f"inconclusive (need ~{r.n_more} more samples)"


def test_five_point_drop_mmmu_size_not_equivalent() -> None:
    # 45 of 900 right answers lost (-5 points) plus 20 flips each way that cancel out.
    a = pattern(900, 6)
    b = flip(flip(a, 20, 20), 45, 0)
    r = v.compare_accuracy(a, b, metric="mmmu_acc")
    assert r.delta == pytest.approx(-0.05)
    assert r.verdict == "not equivalent"
    assert r.ci_high < -r.margin  # wholly outside the band
    assert metric_label(r) == f"not equivalent: at least {100 * -r.ci_high:.2f} pp lower"
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


def test_margin_out_of_reach_at_full_size_says_so() -> None:
    # 300 of 900 questions, 20 flips each way: se = sqrt(40/300^2 * 300/299). All 900 would give
    # se * sqrt(300/900) and the exact bound of 900: |delta| + half-width stays above 1 pp.
    a = pattern(300, 6)
    b = flip(a, 20, 20)
    r = v.compare_accuracy(a, b, metric="mmmu_acc", available=900)
    se = float(np.sqrt(40 / 300**2 * 300 / 299))
    z = float(sps.norm.ppf(0.95))
    full = float(np.hypot(z * se * np.sqrt(300 / 900), _cp_zero(0.05, 900)))
    assert r.verdict == "inconclusive"
    assert r.n_more is None
    assert r.full_margin == pytest.approx(full, rel=1e-6)
    assert metric_label(r).endswith(
        f"out of reach even with all 900 samples of the data set (they would certify about ±{100 * full:.2f} pp)"
    )
    assert v.decide([r]).label == "inconclusive (not settled even with the whole data set: mmmu_acc)"
    # Every sample already compared: nothing more exists.
    big = v.compare_accuracy(pattern(900, 6), flip(pattern(900, 6), 60, 60), metric="mmmu_acc", available=900)
    assert big.verdict == "inconclusive"
    assert metric_label(big).endswith("every sample of the data set (900) is compared already")


# ----------------------------------------------------------------------------- Holm in the verdict


def _result(metric: str, *, delta: float, se: float, margin: float = 0.01) -> v.PairedResult:
    """A metric with a purely normal interval (no exact part), so its p-values are the textbook ones."""
    base = v.compare_accuracy(pattern(100, 5), pattern(100, 5), metric=metric, n_boot=0)
    r = replace(base, delta=delta, se=se, exact_scale=0.0, margin=margin)
    return replace(r, p_equivalence=v.equivalence_pvalue(r), p_nonequivalence=v.nonequivalence_pvalue(r))


def _se_for_tost(p: float, margin: float = 0.01) -> float:
    """The se at which delta 0 has TOST p-value p: sf(margin / se) = p."""
    return margin / float(sps.norm.isf(p))


def test_equivalence_pvalue_is_the_tost_pvalue_without_exact_part() -> None:
    r = _result("m", delta=0.004, se=0.005)
    # TOST: lower z = 0.014/0.005 = 2.8 -> 0.002555; upper z = -0.006/0.005 = -1.2 -> 0.11507.
    assert r.p_equivalence == pytest.approx(0.11507, abs=1e-5)
    assert v.tost_pvalue(0.004, 0.005, 0.01) == pytest.approx(0.11507, abs=1e-5)
    beyond = _result("m", delta=-0.03, se=0.01)  # (0.03 - 0.01) / 0.01 = 2 -> 0.02275
    assert beyond.p_nonequivalence == pytest.approx(0.02275, abs=1e-5)


def test_holm_on_equivalence_with_intervals_at_the_judged_level() -> None:
    # TOST p 0.01, 0.04, 0.03 -> Holm 0.03, 0.06, 0.06: only the first metric is equivalent. The first is
    # judged at 0.05/3, the second-ranked (0.03) at 0.05/2, where Holm stops: the last one is shown at 0.025.
    results = [
        _result("m1", delta=0.0, se=_se_for_tost(0.01)),
        _result("m2", delta=0.0, se=_se_for_tost(0.04)),
        _result("m3", delta=0.0, se=_se_for_tost(0.03)),
    ]
    verdict = v.decide(results)
    assert [r.p_equivalence_holm for r in verdict.metrics] == pytest.approx([0.03, 0.06, 0.06], rel=1e-6)
    assert [r.verdict for r in verdict.metrics] == ["equivalent", "inconclusive", "inconclusive"]
    assert [r.level for r in verdict.metrics] == pytest.approx([0.05 / 3, 0.025, 0.025])
    for r in verdict.metrics:
        h = float(sps.norm.isf(r.level)) * r.se
        assert (r.ci_low, r.ci_high) == (pytest.approx(-h), pytest.approx(h))
        assert (r.verdict == "equivalent") == (r.ci_high < r.margin)
    assert verdict.verdict == "inconclusive"


def test_holm_stop_keeps_a_later_metric_inconclusive_and_its_interval_says_so() -> None:
    # 0.02, 0.03, 0.04: the smallest already fails (0.06), so Holm rejects nothing, although 0.04 alone
    # would pass at 0.05. Every interval is shown at 0.05/3, and none lies inside the band.
    results = [_result(f"m{i}", delta=0.0, se=_se_for_tost(p)) for i, p in enumerate((0.02, 0.03, 0.04))]
    verdict = v.decide(results)
    assert [r.verdict for r in verdict.metrics] == ["inconclusive"] * 3
    assert [r.level for r in verdict.metrics] == pytest.approx([0.05 / 3] * 3)
    assert all(r.ci_high > r.margin for r in verdict.metrics)


def test_all_equivalent_after_holm() -> None:
    # 0.01, 0.02 -> Holm 0.02, 0.02: both below 0.05.
    results = [
        _result("m1", delta=0.0, se=_se_for_tost(0.01)),
        _result("m2", delta=0.0, se=_se_for_tost(0.02)),
    ]
    assert v.decide(results).verdict == "equivalent"


def test_holm_on_nonequivalence() -> None:
    # Beyond-margin p 0.02, 0.03 -> Holm 0.04, 0.04: both not equivalent (intervals wholly outside).
    def se_for(p: float, delta: float) -> float:
        return (abs(delta) - 0.01) / float(sps.norm.isf(p))

    flagged = v.decide(
        [
            _result("m1", delta=-0.03, se=se_for(0.02, -0.03)),
            _result("m2", delta=-0.02, se=se_for(0.03, -0.02)),
        ]
    )
    assert [r.p_nonequivalence_holm for r in flagged.metrics] == pytest.approx([0.04, 0.04], rel=1e-6)
    assert [r.verdict for r in flagged.metrics] == ["not equivalent", "not equivalent"]
    assert all(r.ci_high < -r.margin for r in flagged.metrics)
    assert flagged.verdict == "not equivalent"
    # 0.03, 0.04 -> Holm 0.06, 0.06: neither survives the correction.
    kept = v.decide(
        [
            _result("m1", delta=-0.03, se=se_for(0.03, -0.03)),
            _result("m2", delta=-0.02, se=se_for(0.04, -0.02)),
        ]
    )
    assert kept.verdict == "inconclusive"


def test_significant_difference_inside_margin_is_not_flagged() -> None:
    # Delta -0.8 pp with se 0.2 pp: far from 0 (z = 4), but the interval [-1.13, -0.47] crosses -1 pp.
    r = v.decide([_result("m1", delta=-0.008, se=0.002)]).metrics[0]
    assert r.verdict == "inconclusive"
    assert r.ci_low < -r.margin < r.ci_high


def test_one_metric_not_equivalent_decides_overall() -> None:
    results = [
        _result("m1", delta=0.0, se=0.001),
        _result("m2", delta=-0.05, se=0.005),
    ]
    verdict = labelled_verdict(v.decide(results))
    assert verdict.verdict == "not equivalent"
    assert verdict.reasons == (f"m2: {verdict.metrics[1].label}",)
    assert verdict.metrics[1].label.startswith("not equivalent: at least ")


@pytest.mark.parametrize("seed", range(6))
def test_the_shown_interval_is_the_one_decided_on(seed: int) -> None:
    # Random MME + MMMU comparisons: every metric's verdict is read off its interval and the band, the
    # interval is delta +- sqrt((z se)^2 + exact^2) at its level, and the levels follow Holm's schedule.
    rng = np.random.default_rng(seed)
    a = rng.random(2374) < 0.8
    b = a ^ (rng.random(2374) < rng.choice([0.0, 0.005, 0.02, 0.08]))
    m_a = rng.random(900) < 0.5
    m_b = m_a ^ (rng.random(900) < rng.choice([0.0, 0.01, 0.05]))
    results = [*mme_results(a, b), v.compare_accuracy(m_a, m_b, metric="mmmu_acc", margin=0.02)]
    verdict = v.decide(results)
    claims = [min(r.p_equivalence, r.p_nonequivalence) for r in verdict.metrics]
    k = len(claims)
    schedule, stopped = {}, None
    for rank, i in enumerate(np.argsort(claims, kind="stable")):
        own = 0.05 / (k - rank)
        level = own if stopped is None else stopped
        if stopped is None and claims[i] >= own:
            stopped = level = own
        schedule[int(i)] = level
    for i, r in enumerate(verdict.metrics):
        assert r.level == pytest.approx(schedule[i], rel=1e-6)
        h = float(np.hypot(sps.norm.isf(r.level) * r.se, r.exact_scale * _cp_zero(r.level, r.exact_units)))
        assert (r.ci_low, r.ci_high) == (pytest.approx(r.delta - h), pytest.approx(r.delta + h))
        inside = -r.margin < r.ci_low and r.ci_high < r.margin
        outside = r.ci_low > r.margin or r.ci_high < -r.margin
        expected = "equivalent" if inside else "not equivalent" if outside else "inconclusive"
        assert r.verdict == expected
        assert (r.p_equivalence_holm < 0.05) == (r.verdict == "equivalent")
        assert r.certified_margin == pytest.approx(max(abs(r.ci_low), abs(r.ci_high)))


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
        v.compare_cluster_score(["X", "X"], ["x", "x"], [True, True], [True, True], margin=-5.0)
