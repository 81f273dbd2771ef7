"""`compare` judges a task from its `MetricSpec`s alone: a toy task (defined here, registered for the test
only) gets its accuracy and its cluster score, their margins, sizes, groups and sequential parts with no
edit to `compare/`. Expected values are worked out by hand from the answers below."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from vlmparity.compare import analysis as an
from vlmparity.compare import verdict as v
from vlmparity.compare.join import Pair, Side
from vlmparity.compare.looks import part_of
from vlmparity.data.sampling import plan_all
from vlmparity.tasks import base
from vlmparity.tasks.base import ACCURACY, CLUSTER_SCORE, MetricSpec, Sample

TASK = "toy_specs"


def _scored(sample: Sample) -> bool:
    return sample.group != "g3"  # the score leaves stratum g3 out


class ToyTask:
    """Only what `compare` asks of a task: its metrics and its sequential parts."""

    name = TASK

    def metric_specs(self) -> Sequence[MetricSpec]:
        return (
            MetricSpec("toy_acc", ACCURACY, margin=0.05, lmms_eval=False),
            MetricSpec("toy_score", CLUSTER_SCORE, margin=30.0, max_value=400.0, members=_scored),
        )

    def stop_part(self, sample: Sample) -> str:
        return f"{TASK}/{'scored' if _scored(sample) else 'rest'}"


@pytest.fixture
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(base._REGISTRY, TASK, ToyTask)


def _samples() -> list[Sample]:
    """Three strata of two clusters of two questions each: 12 questions in document order."""
    out = []
    for g in ("g1", "g2", "g3"):
        for c in ("c1", "c2"):
            for q in ("q1", "q2"):
                out.append(Sample(TASK, f"{g}-{c}-{q}", len(out), "yes", g, f"{g}-{c}", ()))
    return out


def _side(correct: bool) -> Side:
    return Side("ok", "yes" if correct else "no", "yes" if correct else "no", correct)


def _pairs() -> list[Pair]:
    """The reference answers everything right; the candidate misses g1-c1-q1 and g3-c2-q2."""
    wrong = {"g1-c1-q1", "g3-c2-q2"}
    return [Pair(s, _side(True), _side(s.id not in wrong)) for s in _samples()]


def test_each_spec_is_judged_with_its_kind_members_and_margin(toy: Any) -> None:
    results = {r.metric: r for r in an.task_metrics(TASK, _pairs(), an.Settings(n_boot=0))}
    assert list(results) == ["toy_acc", "toy_score"]  # the specs' order
    acc = results["toy_acc"]
    # every question: 12 of 12 vs 10 of 12; clusters of two questions, so the clustered z-test
    assert (acc.unit, acc.n, acc.n_clusters) == ("fraction", 12, 6)
    assert (acc.a_value, acc.b_value) == (1.0, pytest.approx(10 / 12))
    assert (acc.discordant_ab, acc.discordant_ba, acc.difference_test) == (2, 0, "z-test (clustered)")
    assert acc.margin == 0.01  # an accuracy takes --margin (Settings.margin), not the spec's 0.05
    score = results["toy_score"]
    # g1 and g2 only: per stratum the mean over clusters of acc + acc_plus (in %). Reference 200 + 200;
    # candidate g1: c1 one of two right (50 + 0), c2 200 -> 125; g2 200: 325.
    assert (score.unit, score.n, score.n_clusters) == ("points", 8, 4)
    assert (score.a_value, score.b_value, score.delta) == (400.0, 325.0, -75.0)
    assert (score.discordant_ab, score.discordant_ba) == (1, 0)
    assert score.margin == 30.0  # the spec's default margin
    assert an.Settings().margins["toy_score"] == 30.0
    wider = an.task_metrics(TASK, _pairs(), an.Settings(n_boot=0, margins={"toy_score": 80.0}))
    assert wider[1].margin == 80.0
    assert v.default_margin("toy_score") == 30.0


def test_groups_sizes_and_parts_come_from_the_specs(toy: Any) -> None:
    groups = {g.group: g for g in an.group_values(TASK, _pairs())}
    # g1, g2 feed the score (its stratum value: the mean over clusters of acc + acc_plus); g3 only the accuracy
    assert (groups["g1"].metric, groups["g1"].a, groups["g1"].b, groups["g1"].n) == ("toy_score", 200, 125, 4)
    assert (groups["g2"].metric, groups["g2"].b) == ("toy_score", 200)
    assert (groups["g3"].metric, groups["g3"].a, groups["g3"].b) == ("toy_acc", 1.0, 0.75)
    assert an.available_counts(TASK, plan_all(_samples())) == {"toy_acc": 12, "toy_score": 8}
    assert [part_of(s) for s in _samples()[::4]] == [f"{TASK}/scored", f"{TASK}/scored", f"{TASK}/rest"]


def test_the_answered_policy_drops_whole_clusters(toy: Any) -> None:
    pairs = _pairs()
    failed = Side("timeout", None, None, False)
    pairs[0] = Pair(pairs[0].sample, pairs[0].a, failed)  # g1-c1-q1 failed: its cluster g1-c1 leaves
    used = an.used_pairs(TASK, pairs, an.POLICY_EXCLUDED)
    assert {p.sample.cluster for p in pairs} - {p.sample.cluster for p in used} == {"g1-c1"}
    assert len(used) == 10 and len(an.used_pairs(TASK, pairs, an.POLICY_PARITY)) == 12
