"""Sampling plans: lmms-eval --limit semantics with whole MME pairs, and seeded stratified samples."""

from __future__ import annotations

import json
import random

import pytest

from vlmparity.data.sampling import allocate, plan_all, plan_limit, plan_stratified, resolve_limit
from vlmparity.errors import ConfigError
from vlmparity.tasks.base import Sample


def mme(categories: dict[str, int]) -> list[Sample]:
    """MME-like samples: `n` images per category, two consecutive questions per image."""
    out: list[Sample] = []
    for cat, n_images in categories.items():
        for i in range(n_images):
            qid = f"{cat}/{i:04d}.png"
            for q in ("yes-question", "no-question"):
                out.append(Sample("mme", f"{qid} {q}", len(out), "Yes", cat, qid, ()))
    return out


def mmmu(subjects: dict[str, int]) -> list[Sample]:
    """MMMU-like samples: one question per cluster."""
    out: list[Sample] = []
    for subject, n in subjects.items():
        for i in range(1, n + 1):
            sid = f"validation_{subject}_{i}"
            out.append(Sample("mmmu_val", sid, len(out), "A", subject, sid, ()))
    return out


# --- --limit -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "total", "expected"),
    [
        (None, 12, 12),
        (-1, 12, 12),
        (-1.0, 12, 12),
        (0, 12, 0),
        (0.5, 12, 6),
        (0.25, 10, 3),  # ceil(2.5)
        (0.07, 100, 8),  # lmms-eval's float product: 100 * 0.07 = 7.000000000000001, ceil -> 8
        (10.7, 100, 10),  # int(), not round()
        (1, 12, 1),
        (1.0, 12, 1),  # 1.0 is not a fraction: int(1.0)
        (500, 12, 12),
    ],
)
def test_resolve_limit(limit: float | None, total: int, expected: int) -> None:
    assert resolve_limit(limit, total) == expected


def test_negative_limit_other_than_minus_one_is_rejected() -> None:
    with pytest.raises(ConfigError):
        resolve_limit(-2, 10)


def test_limit_takes_the_first_n_in_storage_order() -> None:
    samples = mmmu({"Art": 5, "Math": 5})
    plan = plan_limit(samples, 7)
    assert plan.ids == [s.id for s in samples[:7]]
    assert plan.note == ""
    assert [(s.group, s.taken, s.available) for s in plan.strata] == [("Art", 5, 5), ("Math", 2, 5)]
    assert len(plan_limit(samples, 0)) == 0
    assert len(plan_limit(samples, None)) == 10 and len(plan_limit(samples, 99)) == 10


def test_limit_never_splits_an_mme_image_pair() -> None:
    samples = mme({"existence": 3, "count": 3})
    plan = plan_limit(samples, 3)  # the 3rd question is the first half of existence/0001.png
    assert plan.ids == [s.id for s in samples[:4]]
    assert plan.note == "--limit 3 would split image pair existence/0001.png; took 4"
    assert plan.params["resolved"] == 3
    even = plan_limit(samples, 4)
    assert even.ids == [s.id for s in samples[:4]] and even.note == ""
    frac = plan_limit(samples, 0.25)  # ceil(12 * 0.25) = 3 -> 4
    assert len(frac) == 4


def test_limit_adds_a_partner_stored_elsewhere_in_storage_order() -> None:
    samples = mme({"existence": 3})
    moved = [samples[0], samples[2], samples[3], samples[4], samples[5], samples[1]]
    plan = plan_limit(moved, 2)  # existence/0000.png's second question is last
    assert plan.ids == [moved[0].id, moved[1].id, moved[2].id, moved[5].id]
    assert "existence/0000.png" in plan.note and "existence/0001.png" in plan.note


def test_all_and_describe() -> None:
    samples = mme({"existence": 2, "OCR": 1})
    assert plan_all(samples).describe() == ["all 6 samples", "existence 4/4", "OCR       2/2"]
    lines = plan_limit(samples, 3).describe()
    assert lines[0] == "--limit 3: first 4 of 6 samples"
    assert lines[2:] == ["existence 4/4", "OCR       0/2"]


# --- stratified --------------------------------------------------------------------------------


def test_allocation_is_proportional_by_largest_remainder_with_one_per_stratum() -> None:
    # quotas 5, 3, 1.5, 0.5: floors 5, 3, 1, 0; the one unit left makes c or d whole, and d needs one
    assert allocate({"a": 50, "b": 30, "c": 15, "d": 5}, 10) == {"a": 5, "b": 3, "c": 1, "d": 1}
    # quotas 6, 4, 2: exact
    assert allocate({"a": 30, "b": 20, "c": 10}, 12) == {"a": 6, "b": 4, "c": 2}
    # quotas 6.6, 2.2, 1.1, 0.1: floors 6, 2, 1, 0; left 1 -> a (0.6); d then takes one from a
    assert allocate({"a": 66, "b": 22, "c": 11, "d": 1}, 10) == {"a": 6, "b": 2, "c": 1, "d": 1}
    # fewer units than strata: the largest strata, nobody gets more than its size
    assert allocate({"a": 8, "b": 1, "c": 1}, 2) == {"a": 2, "b": 0, "c": 0}
    assert allocate({"a": 3, "b": 2}, 99) == {"a": 3, "b": 2}


def test_stratified_mmmu_counts_sum_to_n_and_cover_every_subject() -> None:
    samples = mmmu({"Art": 30, "Math": 20, "Physics": 10})
    plan = plan_stratified(samples, 12, seed=0)
    assert len(plan) == 12
    assert {s.group: s.taken for s in plan.strata} == {"Art": 6, "Math": 4, "Physics": 2}
    assert [s.doc_id for s in plan.samples] == sorted(s.doc_id for s in plan.samples)
    small = plan_stratified(samples, 3, seed=5)
    assert {s.group: s.taken for s in small.strata} == {"Art": 1, "Math": 1, "Physics": 1}


def test_stratified_mme_keeps_pairs_whole() -> None:
    # image counts 30, 30, 200, 20 (MME-like proportions): 280 units of 2 questions
    samples = mme({"existence": 30, "count": 30, "celebrity": 200, "OCR": 20})
    for n in (40, 41, 99):
        plan = plan_stratified(samples, n, seed=1)
        assert abs(len(plan) - n) <= 1
        clusters = [s.cluster for s in plan.samples]
        assert all(clusters.count(c) == 2 for c in clusters)
        assert all(s.taken > 0 for s in plan.strata)
        assert sum(s.taken for s in plan.strata) == len(plan)
    plan = plan_stratified(samples, 41, seed=1)
    assert len(plan) == 42 and "keep image pairs whole" in plan.note
    # ceil(41/2) = 21 pairs over 30/30/200/20 images: quotas 2.25, 2.25, 15, 1.5 -> 2, 2, 15, 2
    assert {s.group: s.taken for s in plan.strata} == {"existence": 4, "count": 4, "celebrity": 30, "OCR": 4}


def test_stratified_is_deterministic_order_independent_and_seeded() -> None:
    samples = mmmu({"Art": 30, "Math": 30, "Physics": 30})
    a = plan_stratified(samples, 15, seed=7)
    assert a.ids == plan_stratified(samples, 15, seed=7).ids
    shuffled = samples[:]
    random.Random(3).shuffle(shuffled)
    b = plan_stratified(shuffled, 15, seed=7)
    assert set(b.ids) == set(a.ids)
    assert plan_stratified(samples, 15, seed=8).ids != a.ids


def test_stratified_edges() -> None:
    samples = mmmu({"Art": 3, "Math": 2})
    assert len(plan_stratified(samples, 0, seed=0)) == 0
    everything = plan_stratified(samples, 50, seed=0)
    assert everything.ids == [s.id for s in samples] and "only 5 exist" in everything.note
    with pytest.raises(ConfigError):
        plan_stratified(samples, -1, seed=0)
    assert plan_stratified([], 5, seed=0).samples == ()


def test_describe_and_record() -> None:
    samples = mme({"existence": 30, "count": 30})
    plan = plan_stratified(samples, 8, seed=0)
    lines = plan.describe()
    assert lines[0] == "stratified sample: 8 of 120 samples, 2 strata, seed 0"
    assert lines[1:] == ["existence 4/60", "count     4/60"]
    record = json.loads(json.dumps(plan.to_dict()))
    assert record["kind"] == "stratified" and record["ids"] == plan.ids
    assert record["strata"][0] == {"group": "existence", "taken": 4, "available": 60}
