"""The group-sequential verdict: boundaries against published values, the balanced sending order, the
vectorised calibration against `verdict.decide`, and `compare --endpoint ... --sequential` end to end."""

from __future__ import annotations

import contextlib
import json
import math
import statistics
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from vlmparity.compare import calibration as cal
from vlmparity.compare import sequential as seq
from vlmparity.compare import verdict as v
from vlmparity.data.sampling import sequential_keys, sequential_order
from vlmparity.tasks.base import Sample

# ----- boundaries ------------------------------------------------------------------------------------

# Published Lan-DeMets O'Brien-Fleming-type boundaries:
# - gsDesign sfLDOF / ldbounds, one-sided alpha 0.025, 5 equally spaced looks: 4.8769 3.3569 2.6803 2.2898 2.0310;
#   2 looks: 2.9626 1.9686 (ldbounds' documented O'Brien-Fleming-type example values);
# - ldbounds `bounds(c(0.10, 0.33, 1), iuse=c(1,1), alpha=c(0.025,0.025))` (two-sided, 0.025 a side),
#   as printed in its summary (r-help, 2020-03): 6.9913 3.7308 1.9605.
PUBLISHED = [
    ((0.2, 0.4, 0.6, 0.8, 1.0), 0.025, False, (4.8769, 3.3569, 2.6803, 2.2898, 2.0310)),
    ((0.5, 1.0), 0.025, False, (2.9626, 1.9686)),
    ((0.10, 0.33, 1.0), 0.05, True, (6.9913, 3.7308, 1.9605)),
]


@pytest.mark.parametrize(("times", "alpha", "two_sided", "expected"), PUBLISHED)
def test_boundaries_match_published_values(
    times: tuple[float, ...], alpha: float, two_sided: bool, expected: tuple[float, ...]
) -> None:
    got = seq.boundaries(times, alpha, two_sided=two_sided, family="obf")
    # ld98 (ldbounds) integrates on a coarser grid: its values differ in the 4th decimal at most
    assert np.allclose(got, expected, atol=3e-4), got


def test_hwang_shih_decani_boundaries_follow_their_spending_function() -> None:
    # No table of gsDesign's sfHSD boundaries with several decimals was at hand offline; the integration is
    # the one checked against published O'Brien-Fleming values above, and here: the first look in closed
    # form, the later ones by Monte Carlo (next test).
    # The first look spends f(t1) alone: z = Phi^-1(1 - f(t1)), f(t) = alpha (1 - e^(4t)) / (1 - e^4)
    nd = statistics.NormalDist()
    for t1 in (0.1, 0.25, 0.5):
        f = 0.05 * (1 - math.exp(4 * t1)) / (1 - math.exp(4))
        assert seq.boundaries((t1, 1.0), 0.05, family="hsd:-4")[0] == pytest.approx(
            nd.inv_cdf(1 - f), abs=1e-6
        )
        two = seq.boundaries((t1, 1.0), 0.05, two_sided=True, family="hsd:-4")[0]
        assert two == pytest.approx(nd.inv_cdf(1 - f / 2), abs=1e-6)  # each side alpha / 2
    # gamma = 0 is linear spending, alpha t
    assert float(seq.hsd_spending(0.3, 0.05, 0.0)) == pytest.approx(0.015)
    assert float(seq.hsd_spending(1.0, 0.05, -4.0)) == pytest.approx(0.05)


def test_hwang_shih_decani_boundaries_spend_as_planned_by_monte_carlo() -> None:
    # Brownian motion at the 10 equal looks: the chance of first crossing by look k is f(t_k)
    rng = np.random.default_rng(13)
    times = seq.equal_looks(10)
    steps = rng.standard_normal((200_000, 10)) * math.sqrt(0.1)
    z = steps.cumsum(1) / np.sqrt(np.asarray(times))
    alpha = 0.05 / 3  # the accuracies' share of the difference test
    bounds = seq.boundaries(times, alpha, two_sided=True, family="hsd:-4")
    crossed = np.maximum.accumulate(np.abs(z) >= bounds, axis=1).mean(0)
    for k, t in enumerate(times):
        f = alpha * (1 - math.exp(4 * t)) / (1 - math.exp(4))
        se = math.sqrt(max(f, 1e-4) * (1 - f) / z.shape[0])
        assert abs(crossed[k] - f) < 4 * se + 2e-5, (k, crossed[k], f)
    # it spends earlier than O'Brien-Fleming: lower boundaries at the first looks, higher at the last
    obf = seq.boundaries(times, alpha, two_sided=True, family="obf")
    assert np.all(bounds[:5] < obf[:5]) and bounds[-1] > obf[-1]


def test_default_design_spends_obf_for_equivalence_and_hsd_for_a_difference() -> None:
    d = seq.design(seq.equal_looks(10), 0.05, [2.0, 1.0, 1.0, 2.0])
    assert d.eq_bounds == tuple(seq.boundaries(seq.equal_looks(10), 0.05, family="obf"))
    acc = seq.boundaries(seq.equal_looks(10), 0.05 / 3, two_sided=True, family="hsd:-4")
    assert np.allclose(d.ne_bounds[0], acc) and np.allclose(d.ne_bounds[3], acc)
    assert sum(d.ne_alphas) == pytest.approx(0.05)


def test_spending_function_is_lan_demets_obrien_fleming() -> None:
    nd = statistics.NormalDist()
    for t in (0.1, 0.25, 0.5, 0.9, 1.0):
        expected = 2 - 2 * nd.cdf(nd.inv_cdf(1 - 0.05 / 2) / math.sqrt(t))
        assert seq.obf_spending(t, 0.05) == pytest.approx(expected, rel=1e-9)
    assert float(seq.obf_spending(1.0, 0.05)) == pytest.approx(0.05)


def test_boundaries_keep_the_error_rate_by_monte_carlo() -> None:
    # Brownian motion observed at 10 equal looks: the chance of ever crossing is alpha.
    rng = np.random.default_rng(7)
    times = seq.equal_looks(10)
    steps = rng.standard_normal((200_000, 10)) * math.sqrt(0.1)
    z = steps.cumsum(1) / np.sqrt(np.asarray(times))
    one = seq.boundaries(times, 0.05, family="obf")
    two = seq.boundaries(times, 0.02, two_sided=True, family="obf")
    p_one = float((z >= one).any(1).mean())
    p_two = float((np.abs(z) >= two).any(1).mean())
    for p, alpha in ((p_one, 0.05), (p_two, 0.02)):
        se = math.sqrt(alpha * (1 - alpha) / z.shape[0])
        assert abs(p - alpha) < 4 * se, (p, alpha)
    # and the fixed-size test would exceed alpha when looked at ten times
    assert float((z >= 1.6448536).any(1).mean()) > 0.12


def test_look_decisions() -> None:
    d = seq.design(seq.equal_looks(4), 0.05, [2.0, 2.0])
    n = 2000
    same = np.ones(n, dtype=bool)
    # identical answers on 2000 questions: equivalent within 1 pp at the first look already?
    eq = v.compare_accuracy(same, same, metric="a", n_boot=0)
    # the exact bound at alpha with 2000 units: 1 - 0.05^(1/2000) = 0.0015 < 0.01
    look = seq.examine([eq, replace(eq, metric="b")], d, 0)
    assert look.overall == v.EQUIVALENT and look.status == {"a": v.EQUIVALENT, "b": v.EQUIVALENT}
    # a 1.5-point drop (30 of 2000 lost, none gained: McNemar p = 2 / 2^30) beyond the margin
    a = np.zeros(n, dtype=bool)
    a[: n // 2] = True
    b = a.copy()
    b[:30] = False
    drop = v.compare_accuracy(a, b, metric="b", n_boot=0)
    z = statistics.NormalDist().inv_cdf(1 - drop.p_difference / 2)
    assert z > d.ne_bounds[1][0] and abs(drop.delta) >= drop.margin
    first = seq.examine([eq, drop], d, 0)
    assert first.status == {"a": v.EQUIVALENT, "b": v.NOT_EQUIVALENT} and first.overall == v.NOT_EQUIVALENT
    # a difference shown but inside the margin is not "not equivalent": it stays open
    small = a.copy()
    small[:10] = False  # 0.5 pt lower, McNemar p = 2 / 2^10: shown, but inside the margin
    inside = v.compare_accuracy(a, small, metric="b", n_boot=0)
    assert seq.examine([inside], d, 0).status["b"] != v.NOT_EQUIVALENT


# ----- the balanced order ------------------------------------------------------------------------------


def _samples() -> list[Sample]:
    out = []
    sizes = {"existence": 60, "OCR": 40, "celebrity": 340, "code_reasoning": 40}
    for cat, q in sizes.items():
        for i in range(q):
            out.append(Sample("mme", f"{cat}{i}", len(out), "", cat, f"{cat}/{i // 2}", ()))
    for s in range(7):
        for i in range(30):
            out.append(Sample("mmmu_val", f"m{s}_{i}", i, "", f"subject{s}", f"m{s}_{i}", ()))
    return out


def test_every_prefix_of_the_order_is_balanced_and_keeps_pairs_whole() -> None:
    samples = _samples()
    order = sequential_order(samples, seed=3)
    assert sorted(order) == list(range(len(samples)))
    units: dict[tuple[str, str], set[str]] = {}
    for s in samples:
        units.setdefault((s.task, s.group), set()).add(s.cluster)
    keys = sequential_keys(samples, seed=3)
    seen: Counter[tuple[str, str]] = Counter()
    clusters_seen: set[str] = set()
    for pos, i in enumerate(order):
        s = samples[i]
        if s.cluster not in clusters_seen:
            clusters_seen.add(s.cluster)
            seen[(s.task, s.group)] += 1
            # every prefix is a stratified sample: with kappa the key reached, each stratum of n units
            # holds within one unit of kappa * n (a 10-unit stratum never waits for a 340-unit one)
            kappa = keys[i]
            for g, members in units.items():
                assert abs(seen[g] - kappa * len(members)) <= 1.0, (pos, g)
        else:  # the partner of an MME image comes right after its first question
            assert samples[order[pos - 1]].cluster == s.cluster


def test_looks_take_round_t_n_units_of_every_stratum() -> None:
    samples = _samples()
    keys = sequential_keys(samples, seed=0)
    for t in (0.1, 0.25, 0.5, 0.9, 1.0):
        taken: dict[tuple[str, str], set[str]] = {}
        for s, k in zip(samples, keys, strict=True):
            if k <= t + 1e-12:
                taken.setdefault((s.task, s.group), set()).add(s.cluster)
        for (task, group), n in (
            (("mme", "existence"), 30),
            (("mme", "OCR"), 20),
            (("mme", "celebrity"), 170),
            (("mmmu_val", "subject0"), 30),
        ):
            assert len(taken.get((task, group), set())) == math.floor(t * n + 0.5)
    # seeded: another seed gives another order, the same seed the same
    assert sequential_order(samples, 1) != sequential_order(samples, 2)
    assert sequential_order(samples, 1) == sequential_order(samples, 1)


# ----- the vectorised calibration is the verdict -----------------------------------------------------------


def test_vectorised_statistics_and_fixed_verdict_equal_verdict_decide() -> None:
    layout = cal.full_layout()
    rng = np.random.default_rng(11)
    trials = 12
    mme = cal.simulate(*cal.flip_rates(0.8, 0.03, 0.015), 2374, trials, 0.8, rng)
    mmmu = cal.simulate(*cal.flip_rates(0.5, 0.03, 0.015), 900, trials, 0.5, rng)
    for frac in (0.3, 1.0):
        stats_ = cal.comparison_stats(layout, mme, mmmu, frac)
        fixed = cal.fixed_verdicts(stats_)
        sel = layout.mme_keys <= frac + 1e-12
        sel2 = layout.mmmu_keys <= frac + 1e-12
        lay = layout.mme
        p = lay.perception[sel]
        for i in range(trials):
            a, b = mme[0][i][sel], mme[1][i][sel]
            cats, imgs = lay.categories[sel], lay.images[sel]
            results = [
                v.compare_accuracy(a, b, metric="mme_acc", clusters=imgs, strata=cats, n_boot=0),
                v.compare_cluster_score(
                    cats[p], imgs[p], a[p], b[p], metric="mme_perception_score", n_boot=0
                ),
                v.compare_cluster_score(
                    cats[~p], imgs[~p], a[~p], b[~p], metric="mme_cognition_score", n_boot=0
                ),
                v.compare_accuracy(
                    mmmu[0][i][sel2],
                    mmmu[1][i][sel2],
                    metric="mmmu_acc",
                    strata=layout.mmmu_subjects[sel2],
                    n_boot=0,
                ),
            ]
            for r, s in zip(results, stats_, strict=True):
                assert r.delta == pytest.approx(s.delta[i], abs=1e-12)
                assert r.se == pytest.approx(s.se[i], rel=1e-9, abs=1e-15)
                assert r.exact_units == s.units[i] and r.exact_scale == pytest.approx(s.scale[i])
                assert r.p_difference == pytest.approx(s.p_diff[i], rel=1e-6)
            assert v.decide(results).verdict == fixed[i]


@pytest.mark.slow
def test_sequential_calibration_reduced() -> None:
    # a reduced bench/verdict_calibration.py: false alarm, power and samples used
    layout = cal.full_layout()
    rng = np.random.default_rng(5)
    times = seq.equal_looks(10)

    def run(disc: float, drop: float, trials: int) -> cal.SequentialOutcome:
        mme = cal.simulate(*cal.flip_rates(0.8, disc, drop), 2374, trials, 0.8, rng)
        mmmu = cal.simulate(*cal.flip_rates(0.5, disc, drop), 900, trials, 0.5, rng)
        return cal.sequential_verdicts(layout, mme, mmmu, times)

    null = run(0.05, 0.0, 400)
    assert float(np.mean(null.verdict == v.NOT_EQUIVALENT)) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 400)
    drop2 = run(0.05, 0.02, 200)
    assert float(np.mean(drop2.verdict == v.NOT_EQUIVALENT)) >= 0.8
    same = run(0.0, 0.0, 50)
    assert np.all(same.verdict == v.EQUIVALENT) and float(same.fraction_used.mean()) <= 0.5
    drop5 = run(0.01, 0.05, 200)
    assert np.all(drop5.verdict == v.NOT_EQUIVALENT) and float(drop5.fraction_used.mean()) <= 0.3
    # a true difference at the margin (1 pp): calling it equivalent is the error kept at alpha
    at_margin = run(0.01, 0.01, 200)
    assert float(np.mean(at_margin.verdict == v.EQUIVALENT)) <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)


# ----- stopping by part: MME perception, MME cognition, each other task --------------------------------------


def test_a_part_whose_metrics_are_all_equivalent_stops_being_sent() -> None:
    from types import SimpleNamespace

    from vlmparity.compare.looks import LookGate, part_of

    samples = [
        Sample("mme", "p0", 0, "", "existence", "e/0", ()),
        Sample("mme", "p1", 1, "", "existence", "e/0", ()),
        Sample("mme", "c0", 2, "", "code_reasoning", "c/0", ()),
        Sample("mme", "c1", 3, "", "code_reasoning", "c/0", ()),
        Sample("mmmu_val", "m0", 0, "", "Art", "m0", ()),
    ]
    assert [part_of(s) for s in samples] == [
        "mme/mme_perception_score", "mme/mme_perception_score", "mme/mme_cognition_score",
        "mme/mme_cognition_score", "mmmu_val",
    ]  # fmt: skip
    gate = LookGate(SimpleNamespace(alpha=0.05), "ref", ["cand"], looks=2)  # type: ignore[arg-type]
    plans = [SimpleNamespace(task=SimpleNamespace(name=t)) for t in ("mme", "mmmu_val")]
    gate.engine = SimpleNamespace(samples=samples, plans=plans)  # type: ignore[assignment]
    gate._bind_parts()
    gate.look_of = [0, 0, 0, 0, 0]
    same = np.ones(2000, dtype=bool)
    eq = v.compare_accuracy(same, same, metric="x", n_boot=0)  # equivalent within 1 pp at any look
    opened = replace(eq, margin=1e-9)  # no interval fits in a zero band, and no difference is shown
    look0 = {
        "cand": [
            replace(eq, metric="mme_acc"),
            replace(eq, metric="mme_perception_score"),
            replace(opened, metric="mme_cognition_score"),
            replace(eq, metric="mmmu_acc"),
        ]
    }
    gate.look_results = lambda look: look0  # type: ignore[method-assign]
    gate._examine(0)
    assert not gate.stopped
    # perception feeds mme_acc and the perception score, both equivalent: it stops; cognition does not
    assert gate.finished_parts == {"mme/mme_perception_score": 0, "mmmu_val": 0}
    assert [gate._skip(i) for i in range(5)] == [True, True, False, False, True]
    gate.look_of = [1, 1, 1, 1, 1]  # the later samples of each part
    assert gate.sample_ids(1) == {"mme": {"c0", "c1"}, "mmmu_val": set()}


# ----- compare --endpoint ... --sequential against two simulators -------------------------------------------

# Margins wide enough that identical answers are equivalent on half of the small synthetic sets
# (28 MME image pairs, 60 MMMU questions): the exact bound with 14 images is 1 - 0.05^(1/14) = 19 pp.
WIDE = ["--margin", "60", "--mme-margin-perception", "2000", "--mme-margin-cognition", "800"]


def _main(args: list[str]) -> int:
    from vlmparity.cli import main as cli_main

    try:
        cli_main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def test_compare_sequential_stops_early_records_why_and_resumes_to_full(
    synth_mme_small: Path, synth_mmmu_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from vlmparity.sim import SimConfig, SimServer

    data = {"mme": synth_mme_small, "mmmu_val": synth_mmmu_small}
    load = {"capacity": 8, "base_latency": 0.0, "per_image": 0.0, "per_token": 0.0, "time_scale": 0}

    def config() -> SimConfig:  # two engines of one model answering identically
        return SimConfig(
            personality="vllm", data=list(data.values()), answers={"model_seed": 4}, load=load, image_limit=16
        )  # type: ignore[arg-type]

    args = [
        "--tasks",
        "mme,mmmu_val",
        "--data",
        f"mme={data['mme']}",
        "--data",
        f"mmmu_val={data['mmmu_val']}",
    ]
    out, vfile = tmp_path / "out", tmp_path / "v.json"

    def compare(ref: SimServer, cand: SimServer, *extra: str) -> int:
        return _main(
            ["compare", "-e", f"ref={ref.url}", "-e", f"cand={cand.url}", *args, "-o", str(out), "--json",
             str(vfile), "--no-report", "--sequential", "--looks", "2", *WIDE, *extra]
        )  # fmt: skip

    # the same two servers for every step (a resumed run refuses another server)
    stack = contextlib.ExitStack()
    ref, cand = stack.enter_context(SimServer(config())), stack.enter_context(SimServer(config()))
    with stack:
        _sequential_steps(ref, cand, compare, data, out, vfile, tmp_path, capsys)


def _sequential_steps(
    ref: Any, cand: Any, compare: Any, data: dict[str, Path], out: Path, vfile: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    def answered(sim: Any, since: int = 0) -> list[Any]:
        return [e for e in sim.chat_log[since:] if e.status == 200]

    code = compare(ref, cand)
    sent = {"ref": answered(ref), "cand": answered(cand)}
    printed = capsys.readouterr().out
    assert code == 0, printed
    # the first look is half of every stratum: floor(n / 2 + 1/2) of its n units (image pairs, or MMMU
    # questions; a one-pair category too), read off the data files; both engines were sent exactly those
    expected: dict[tuple[str, str], int] = {}
    for task, strata in _strata(data).items():
        for group, units in strata.items():
            expected[(task, group)] = math.floor(len(units) / 2 + 0.5) * (2 if task == "mme" else 1)
    first_look = sum(expected.values())
    for name, log in sent.items():
        ids = {(e.task, e.sample_id) for e in log}
        assert len(ids) == len(log) == first_look, name
    assert {(e.task, e.sample_id) for e in sent["ref"]} == {(e.task, e.sample_id) for e in sent["cand"]}
    assert len(expected) == 14 + 30 and all(expected.values())  # every category and subject represented
    doc = json.loads(vfile.read_text())
    (cand_doc,) = doc["candidates"]
    info = cand_doc["sequential"]
    assert cand_doc["verdict"] == "equivalent" and info["stopped_early"] is True
    assert (info["stopped_at_look"], info["of_looks"]) == (1, 2)
    assert (info["samples_used"], info["samples_planned"]) == (first_look, 116)
    assert "every metric equivalent" in info["reason"]
    mme_first = sum(n for (task, _), n in expected.items() if task == "mme")
    assert {m["metric"]: m["n"] for m in cand_doc["metrics"]}["mme_acc"] == mme_first
    assert f"stopped early at look 1 of 2 with {first_look} of 116 samples" in printed
    record = json.loads((out / "sequential.json").read_text())
    assert record["stopped"] is True and record["candidates"]["cand"]["stopped_at_look"] == 1
    capsys.readouterr()

    # the stored folder compared again (no endpoint, default margins): the same looks judged from the store
    # with the recorded margins, the same verdict, not "missing answers" for the samples never sent
    assert _main(["compare", str(out), "--no-report", "--json", str(tmp_path / "again.json")]) == 0
    (again,) = json.loads((tmp_path / "again.json").read_text())["candidates"]
    assert again["sequential"]["stopped_at_look"] == 1 and again["sequential"]["samples_used"] == first_look
    assert again["metrics"] == cand_doc["metrics"]
    assert _main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 0
    assert "equivalent" in capsys.readouterr().out

    # the same command again: the stored looks decide, nothing is sent
    seen = {"ref": len(ref.chat_log), "cand": len(cand.chat_log)}
    assert compare(ref, cand) == 0
    assert not answered(ref, seen["ref"]) and not answered(cand, seen["cand"])
    assert json.loads(vfile.read_text())["candidates"][0]["sequential"]["stopped_at_look"] == 1
    capsys.readouterr()

    # --continue-to-full sends the rest and gives the fixed-size verdict over every sample
    seen = {"ref": len(ref.chat_log), "cand": len(cand.chat_log)}
    assert compare(ref, cand, "--continue-to-full") == 0
    for name, sim in (("ref", ref), ("cand", cand)):
        rest = {(e.task, e.sample_id) for e in answered(sim, seen[name])}
        assert len(rest) == 116 - first_look and not rest & {(e.task, e.sample_id) for e in sent[name]}
    (full_doc,) = json.loads(vfile.read_text())["candidates"]
    assert "sequential" not in full_doc or full_doc["sequential"] is None
    assert {m["metric"]: m["n"] for m in full_doc["metrics"]}["mme_acc"] == 56
    # and the folder is now a full comparison for `compare RUN_DIR` too
    assert _main(["compare", str(out), "--no-report", "--json", str(tmp_path / "full.json"), *WIDE]) == 0
    (full_again,) = json.loads((tmp_path / "full.json").read_text())["candidates"]
    assert full_again["sequential"] is None and full_again["metrics"] == full_doc["metrics"]


def _strata(data: dict[str, Path]) -> dict[str, dict[str, set[str]]]:
    """Per task and stratum (MME category, MMMU subject) its units, read from the parquet files."""
    import pyarrow.parquet as pq

    out: dict[str, dict[str, set[str]]] = {}
    for task, folder in data.items():
        (path,) = sorted(folder.rglob("*.parquet"))
        table = pq.read_table(path).to_pylist()
        groups: dict[str, set[str]] = {}
        for row in table:
            if task == "mme":
                groups.setdefault(str(row["category"]), set()).add(str(row["question_id"]))
            else:
                subject = str(row["id"]).split("_", 1)[1].rsplit("_", 1)[0]  # validation_<Subject>_<n>
                groups.setdefault(subject, set()).add(str(row["id"]))
        out[task] = groups
    return out


def test_sequential_needs_endpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert _main(["compare", str(tmp_path), "--sequential"]) == 4
    assert "--sequential works only when compare sends the samples" in capsys.readouterr().err


def test_compare_sequential_stops_sending_the_parts_already_equivalent(
    synth_mme_small: Path, synth_mmmu_small: Path, tmp_path: Path
) -> None:
    # identical engines; wide margins but a cognition margin no interval fits in: mme_acc, the perception
    # score and mmmu_acc are equivalent at look 1 of 2, the cognition score never is (and no difference is
    # ever shown). MME perception and MMMU-val stop being sent after look 1; the cognition questions go on.
    from vlmparity.sim import SimConfig, SimServer
    from vlmparity.tasks.mme import COGNITION

    data = {"mme": synth_mme_small, "mmmu_val": synth_mmmu_small}
    load = {"capacity": 8, "base_latency": 0.0, "per_image": 0.0, "per_token": 0.0, "time_scale": 0}

    def config() -> SimConfig:
        return SimConfig(
            personality="vllm", data=list(data.values()), answers={"model_seed": 4}, load=load, image_limit=16
        )  # type: ignore[arg-type]

    margins = ["--margin", "60", "--mme-margin-perception", "2000", "--mme-margin-cognition", "0.001"]
    out, vfile = tmp_path / "out", tmp_path / "v.json"
    with SimServer(config()) as ref, SimServer(config()) as cand:
        code = _main(
            ["compare", "-e", f"ref={ref.url}", "-e", f"cand={cand.url}", "--tasks", "mme,mmmu_val",
             "--data", f"mme={data['mme']}", "--data", f"mmmu_val={data['mmmu_val']}", "-o", str(out),
             "--json", str(vfile), "--no-report", "--sequential", "--looks", "2", *margins]
        )  # fmt: skip
        sent = {
            name: {(e.task, e.sample_id) for e in sim.chat_log if e.status == 200}
            for name, sim in (("ref", ref), ("cand", cand))
        }
    assert code == v.EXIT_CODES[v.INCONCLUSIVE]
    # expected from the data files: perception categories and MMMU subjects half (look 1), cognition all
    expected = 0
    for task, strata in _strata(data).items():
        for group, units in strata.items():
            per_unit = 2 if task == "mme" else 1
            if task == "mme" and group in COGNITION:
                expected += len(units) * per_unit
            else:
                expected += math.floor(len(units) / 2 + 0.5) * per_unit
    assert len(sent["ref"]) == len(sent["cand"]) == expected and sent["ref"] == sent["cand"]
    mme_sent = {sid for task, sid in sent["ref"] if task == "mme"}
    assert len(mme_sent) < 56  # not all of MME
    info = json.loads((out / "sequential.json").read_text())["candidates"]["cand"]
    assert info["finished_parts"] == {"mme/mme_perception_score": 1, "mmmu_val": 1}
    assert info["verdict"] == "inconclusive" and info["samples_used"] == expected
