"""The runner: scoring from the store under both policies, lmms-eval output files, and end-to-end runs
against the in-process simulator (several endpoints, both personalities, faults, image limits, resume).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from vlmparity import offline, runner
from vlmparity.config import RunConfig, RunOptions, SamplingPlan, parse_endpoints
from vlmparity.report import lmms_output
from vlmparity.report.run_summary import run_outputs
from vlmparity.sim import SimConfig, SimServer
from vlmparity.store import ResultRecord, SampleRecord, Store
from vlmparity.tasks import mme as mme_task
from vlmparity.tasks import mmmu as mmmu_task
from vlmparity.tasks.base import get_task

# ----- scoring from stored results (hand-computed expectations) ---------------------------------------


def _mme_samples() -> list:  # type: ignore[type-arg]
    rows = [
        ("existence/0001.png", "Is there a dog? Please answer yes or no.", "Yes", "existence"),
        ("existence/0001.png", "Is there a cat? Please answer yes or no.", "No", "existence"),
        ("existence/0002.png", "Is there a car? Please answer yes or no.", "Yes", "existence"),
        ("existence/0002.png", "Is there a bus? Please answer yes or no.", "No", "existence"),
        ("code_reasoning/0001.png", "Is the output 1? Please answer yes or no.", "Yes", "code_reasoning"),
        ("code_reasoning/0001.png", "Is the output 2? Please answer yes or no.", "No", "code_reasoning"),
    ]
    return [mme_task.make_sample(i, q, text, a, c, None) for i, (q, text, a, c) in enumerate(rows)]


def _records(samples, replies):  # type: ignore[no-untyped-def]
    srecs = {s.id: SampleRecord(s.task, s.id, s.doc_id, f"h{s.doc_id}", 1) for s in samples}
    results = {}
    for s, reply in zip(samples, replies, strict=True):
        if reply is None:
            continue
        outcome, text = reply
        results[s.id] = ResultRecord(1, s.task, s.id, f"h{s.doc_id}", outcome, text=text, transient=False)
    return srecs, results


def test_mme_both_policies_by_hand() -> None:
    samples = _mme_samples()
    replies = [("ok", "Yes"), ("ok", "No."), ("ok", "Yes"), ("timeout", None), ("ok", "yes"), ("ok", "Yes")]
    srecs, results = _records(samples, replies)
    ts = runner.score_task(get_task("mme"), "ep", samples, srecs, results)
    # parity: image 1 = 100 + 100; image 2 = 50 + 0 (the timeout is wrong); perception = mean = 125
    assert ts.lmms_eval.result.metrics["mme_perception_score"] == pytest.approx(125.0)
    # excluded: image 2 keeps its one scored (right) question: acc 100, acc_plus 0 -> mean 150
    assert ts.answered.result.metrics["mme_perception_score"] == pytest.approx(150.0)
    # cognition: one right, one wrong -> 50 under both
    assert ts.lmms_eval.result.metrics["mme_cognition_score"] == pytest.approx(50.0)
    assert ts.answered.result.metrics["mme_cognition_score"] == pytest.approx(50.0)
    assert (ts.lmms_eval.n, ts.lmms_eval.n_correct, ts.answered.n, ts.answered.n_correct) == (6, 4, 5, 4)
    assert ts.outcomes == {"ok": 5, "timeout": 1}
    # Wilson 95 % for 4/6 by hand: centre 0.6016, half-width 0.3016
    acc = ts.lmms_eval.accuracy
    assert acc is not None
    assert (acc.low, acc.high) == (pytest.approx(0.3000, abs=1e-3), pytest.approx(0.9032, abs=1e-3))
    assert "mme_perception_score" in ts.lmms_eval.intervals


def test_intervals_follow_each_metric_kind() -> None:
    """A cluster score (MME) gets the stratified cluster bootstrap over the images of its own categories, an
    accuracy (MMMU) Wilson over its questions; only the run's own metrics get one, in their order."""
    samples = _mme_samples()
    replies = [("ok", "Yes"), ("ok", "No."), ("ok", "Yes"), ("timeout", None), ("ok", "yes"), ("ok", "Yes")]
    ts = runner.score_task(get_task("mme"), "ep", samples, *_records(samples, replies))
    intervals = ts.lmms_eval.intervals
    assert sorted(intervals) == ["mme_cognition_score", "mme_perception_score"]
    assert list(intervals) == list(ts.lmms_eval.result.metrics)  # mme_acc is compare's, not the run's
    # perception: image 1 scores 200, image 2 50; resampling the two images gives 50, 125 or 200, and 2000
    # draws hold both extremes (each has probability 1/4 a draw)
    p = intervals["mme_perception_score"]
    assert (p.estimate, p.low, p.high) == (pytest.approx(125.0), pytest.approx(50.0), pytest.approx(200.0))
    assert p.method.startswith("stratified cluster bootstrap")
    # cognition: one image (one right, one wrong: 50), whatever is resampled
    c = intervals["mme_cognition_score"]
    assert (c.estimate, c.low, c.high) == (pytest.approx(50.0), pytest.approx(50.0), pytest.approx(50.0))

    mm = [
        mmmu_task.make_sample(i, f"validation_Art_{i}", "Q?", ["a", "b", "c", "d"], "A", "multiple-choice")
        for i in range(3)
    ]
    ts = runner.score_task(
        get_task("mmmu_val"), "ep", mm, *_records(mm, [("ok", "B"), ("ok", "B"), ("ok", "A")])
    )
    acc = ts.lmms_eval.intervals["mmmu_acc"]
    # the estimate is lmms-eval's mmmu_acc (5 decimals); Wilson for 1 of 3 by hand (z = 1.959964): centre (1/3 + z²/6) / (1 + z²/3), half-width
    # z * sqrt(1/3 * 2/3 / 3 + z²/36) / (1 + z²/3)
    z2 = 1.959964**2
    centre = (1 / 3 + z2 / 6) / (1 + z2 / 3)
    half = 1.959964 * ((2 / 27) + z2 / 36) ** 0.5 / (1 + z2 / 3)
    assert list(ts.lmms_eval.intervals) == ["mmmu_acc"] and acc.method == "wilson"
    assert (acc.estimate, acc.low, acc.high) == (
        pytest.approx(1 / 3, abs=1e-5), pytest.approx(centre - half, abs=1e-6), pytest.approx(centre + half, abs=1e-6)
    )  # fmt: skip


def test_missing_stale_and_skipped_results() -> None:
    samples = _mme_samples()
    srecs, results = _records(samples, [("ok", "Yes")] * 6)
    results[samples[1].id] = ResultRecord(1, "mme", samples[1].id, "OLD", "ok", text="No")  # stale
    del results[samples[5].id]  # missing (an interrupted run)
    ts = runner.score_task(get_task("mme"), "ep", samples, srecs, results)
    assert ts.outcomes == {"ok": 4, "missing": 2}
    assert ts.failures == 2

    mm = [
        mmmu_task.make_sample(i, f"validation_Art_{i}", "Q?", ["a", "b", "c", "d"], "A", "multiple-choice")
        for i in range(4)
    ]
    srecs, results = _records(mm, [("ok", "zzz"), ("timeout", None), ("ok", "zzz"), ("ok", "A")])
    srecs[mm[3].id] = SampleRecord("mmmu_val", mm[3].id, 3, "h3", 2, "skipped")
    ts = runner.score_task(get_task("mmmu_val"), "ep", mm, srecs, results)
    assert ts.skipped == 1 and len(ts.samples) == 3
    # two random fallbacks (random.Random(0) draws D, D: wrong for gold A). The lmms-eval policy scores
    # the timeout as "[LMMS_EVAL_REQUEST_FAILED after 5 retries] Request timed out.": "FAILED " holds
    # "D " (lmms-eval's letter-then-space rule), so it parses as D without a draw.
    assert ts.random_fallbacks == 2
    assert [s.parsed for s in ts.scores] == ["D", "D", "D"]
    assert ts.failure_texts == {mm[1].id: "[LMMS_EVAL_REQUEST_FAILED after 5 retries] Request timed out."}
    assert ts.lmms_eval.result.metrics["mmmu_acc"] == 0.0 and ts.lmms_eval.n == 3
    assert ts.strict.n == 3 and ts.answered.n == 2


def test_results_document_keys_in_lmms_order() -> None:
    out = lmms_output.TaskOutput(
        task="mmmu_val",
        metrics={"mmmu_acc": 0.5},
        artifact_keys=("mmmu_acc_pass_at_k", "submission"),
        n_original=900,
        n_effective=10,
    )
    doc = lmms_output.results_document(
        [out], model="m/x", model_args="model=m/x", gen_kwargs={}, limit=10.0, start_time=1.0, end_time=3.0,
        tool_version="0",
    )  # fmt: skip
    keys = list(doc)
    expected_order = ["results", "group_subtasks", "configs", "versions", "n-shot", "higher_is_better",
                      "n-samples", "config", "git_hash", "date", "task_hashes", "model_name",
                      "start_time", "end_time", "total_evaluation_time_seconds"]  # fmt: skip
    assert [k for k in keys if k in expected_order] == expected_order
    assert list(doc["results"]["mmmu_val"]) == [
        "alias",
        "mmmu_acc,none",
        "mmmu_acc_stderr,none",
        "mmmu_acc_stderr_clt,none",
        "mmmu_acc_stderr_clustered,none",
        "mmmu_acc_pass_at_k,none",
        "mmmu_acc_pass_at_k_stderr,none",
        "submission,none",
        "submission_stderr,none",
    ]
    assert doc["n-samples"] == {"mmmu_val": {"original": 900, "effective": 10}}
    assert doc["total_evaluation_time_seconds"] == "2.0"
    assert doc["model_name_sanitized"] == "m__x"
    line = lmms_output.sample_line(
        doc_id=3, target="A", raw_text="<think>x</think> B", filtered_text="B", token_counts={"output_tokens": 2},
        doc_hash_value="d", details={"mmmu_acc": {}}, input_text="ctx",
    )  # fmt: skip
    assert list(line) == [
        "doc_id",
        "target",
        "resps",
        "filtered_resps",
        "token_counts",
        "doc_hash",
        "mmmu_acc",
        "input",
    ]


def test_free_stamp_never_reuses_an_earlier_invocations_files(tmp_path: Path) -> None:
    started = time.mktime((2026, 11, 28, 11, 50, 0, 0, 0, -1))  # local time, like lmms-eval's stamps
    stamp = "20261128_115000"
    assert lmms_output.free_stamp(tmp_path, ["a", "b"], started) == stamp  # nothing written yet
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / f"{stamp}_samples_mme.jsonl").write_text("")
    assert lmms_output.free_stamp(tmp_path, ["a", "b"], started) == "20261128_115001"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "20261128_115001_results.json").write_text("{}")
    assert lmms_output.free_stamp(tmp_path, ["a", "b"], started) == "20261128_115002"
    assert lmms_output.free_stamp(tmp_path, ["c"], started) == stamp  # another endpoint's files do not count
    # a plain sort still finds the newest invocation last
    names = sorted([f"{stamp}_results.json", "20261128_115002_results.json", "20261128_115001_results.json"])
    assert names[-1] == "20261128_115002_results.json"


def test_merge_prompt_keeps_text_and_first_image() -> None:
    from vlmparity.tasks.base import ImagePart, Prompt, TextPart

    p = Prompt(parts=(TextPart("a"), ImagePart(1), TextPart("b"), ImagePart(0), TextPart("c")), max_tokens=8)
    merged = runner.merge_prompt(p)
    assert merged.parts == (TextPart("a"), ImagePart(0), TextPart("b"), TextPart("c"))
    assert runner.treatment_for(3, "merge", 1) == "merged"
    assert runner.treatment_for(3, "skip", 1) == "skipped"
    assert runner.treatment_for(1, "skip", 1) == "full"
    assert runner.treatment_for(3, "error", 1) == "full"
    assert runner.treatment_for(3, "merge", None) == "full"


# ----- end to end against the simulator ------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from vlmparity.synth import write_mme, write_mmmu

    root = tmp_path_factory.mktemp("data")
    return {"mme": write_mme(root / "mme", n=24, seed=3), "mmmu_val": write_mmmu(root / "mmmu", n=30, seed=3)}


def _multi_image_ids(data: dict[str, Path]) -> set[str]:
    """MMMU samples whose request carries more than one image (from the data, not the runner)."""
    from vlmparity.data.sources import load_rows

    task = get_task("mmmu_val")
    samples = task.samples_from_rows(load_rows(data["mmmu_val"], split="validation"))
    return {s.id for s in samples if len(s.images) > 1}


def _config(data: dict[str, Path], urls: dict[str, str], out: Path, **options: object) -> RunConfig:
    return RunConfig(
        endpoints=parse_endpoints(
            [f"{k}={v}" for k, v in urls.items()], api_key=str(options.pop("key", "")) or None
        ),
        tasks=("mme", "mmmu_val"),
        data={k: str(v) for k, v in data.items()},
        plan=SamplingPlan(),
        options=RunOptions(output_path=out, log_samples=True, **options),  # type: ignore[arg-type]
    )


@pytest.fixture
def sims(data: dict[str, Path]) -> Iterator[dict[str, SimServer]]:
    paths = list(data.values())
    fast = {"capacity": 16, "base_latency": 0.002, "per_image": 0.0, "per_token": 0.0}
    with (
        SimServer(SimConfig(personality="vllm", data=paths, image_limit=1, load=fast)) as vllm,
        SimServer(SimConfig(personality="ovms", data=paths, load=fast)) as ovms,
        SimServer(
            SimConfig(personality="vllm", data=paths, image_limit=None, answers={"engine_seed": 7, "divergence": 0.2}, load=fast)
        ) as vllm2,
    ):  # fmt: skip
        yield {"vllm": vllm, "ovms": ovms, "vllm2": vllm2}


def _stored(out: Path) -> dict[tuple[str, str, str], tuple[str, str | None, str]]:
    """(endpoint, task, sample_id) -> (outcome, text, request_hash), read straight from SQLite."""
    conn = sqlite3.connect(out / "vlmparity.sqlite")
    rows = conn.execute(
        "SELECT r.endpoint, s.task, s.sample_id, s.outcome, s.text, s.request_hash "
        "FROM results s JOIN runs r ON r.run_id = s.run_id"
    ).fetchall()
    conn.close()
    return {(e, t, sid): (o, x, h) for e, t, sid, o, x, h in rows}


def test_run_three_endpoints_matches_offline_scoring(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    urls = {name: sim.url for name, sim in sims.items()}
    outcome = runner.run(_config(data, urls, out), outputs=run_outputs())
    assert outcome.errors == {}
    multi = _multi_image_ids(data)
    assert multi, "the synthetic MMMU set must have multi-image questions"

    # byte-identical requests: the same body hash (sha256 of the body minus `model`) per sample everywhere
    stored = _stored(out)
    per_sample: dict[tuple[str, str], set[str]] = {}
    for (_ep, task, sid), (_o, _t, rhash) in stored.items():
        per_sample.setdefault((task, sid), set()).add(rhash)
    assert len(per_sample) == 54 and all(len(h) == 1 for h in per_sample.values())
    received = {name: Counter(e.body_hash for e in sim.chat_log if e.sample_id) for name, sim in sims.items()}
    assert received["ovms"] == received["vllm2"] == Counter({h for hs in per_sample.values() for h in hs})
    # vLLM (limit 1) got every body too: its refusals never stop the multi-image questions being sent
    # (a refused request is logged without its sample id: the simulator refuses before it looks)
    assert set(received["ovms"]) <= {e.body_hash for e in sims["vllm"].chat_log}

    by_ep = {ep: {s.task: s for s in scores} for ep, scores in outcome.scores.items()}
    # the vLLM image limit: every multi-image question is `unsupported`, counted, under every policy
    v = by_ep["vllm"]["mmmu_val"]
    assert v.outcomes.get("unsupported") == len(multi)
    assert v.lmms_eval.n == v.strict.n == 30 and v.answered.n == 30 - len(multi)
    assert {s.id for s, a in zip(v.samples, v.answers, strict=True) if a.outcome == "unsupported"} == multi
    assert by_ep["ovms"]["mmmu_val"].outcomes == {"ok": 30}

    # the simulator says which answers it meant to be right: MME scores agree with it
    for name, sim in sims.items():
        meant = {e.sample_id: e.correct for e in sim.chat_log if e.task == "mme" and e.status == 200}
        ts = by_ep[name]["mme"]
        assert {sc.sample_id: sc.correct for sc in ts.scores} == {sid: bool(c) for sid, c in meant.items()}

    # scores equal `vlmparity score` on the exported lmms-eval samples files
    for name, tasks in by_ep.items():
        files = sorted((out / name).glob("*_samples_*.jsonl"))
        assert len(files) == 2
        for off in offline.score_lmms_samples(files):
            assert off.result.metrics == pytest.approx(tasks[off.task].lmms_eval.result.metrics, abs=1e-12)

    results_files = sorted(out.glob("*/*_results.json"))
    assert len(results_files) == 3
    doc = json.loads(results_files[0].read_text())
    assert "mme_perception_score,none" in doc["results"]["mme"]
    assert set(doc["vlmparity"]["tasks"]["mmmu_val"]) >= {"lmms_eval", "strict", "answered", "outcomes"}
    run_json = json.loads((out / "run.json").read_text())
    assert run_json["status"] == "complete"
    assert {e["kind"] for e in run_json["endpoints"]} == {"vllm", "ovms"}
    assert run_json["tasks"]["mme"]["fingerprint"]["num_rows"] == 24

    # a second identical run sends nothing and scores the same
    hashes = {h for (_o, _t, h) in stored.values()}

    def sent() -> dict[str, int]:  # the endpoint probe's own requests are not samples
        return {n: sum(1 for e in s.chat_log if e.body_hash in hashes) for n, s in sims.items()}

    before = sent()
    again = runner.run(_config(data, urls, out), outputs=run_outputs())
    assert sent() == before
    assert {ep: [s.lmms_eval.result.metrics for s in v] for ep, v in again.scores.items()} == {
        ep: [s.lmms_eval.result.metrics for s in v] for ep, v in outcome.scores.items()
    }


@pytest.mark.parametrize("policy", ["merge", "skip"])
def test_multi_image_policies(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path, policy: str
) -> None:
    urls = {"vllm": sims["vllm"].url, "ovms": sims["ovms"].url}
    outcome = runner.run(_config(data, urls, tmp_path / "out", multi_image=policy), outputs=run_outputs())
    multi = _multi_image_ids(data)
    for ep in ("vllm", "ovms"):
        ts = next(s for s in outcome.scores[ep] if s.task == "mmmu_val")
        if policy == "merge":
            assert ts.merged == len(multi) and ts.outcomes == {"ok": 30}
        else:
            assert ts.skipped == len(multi) and len(ts.samples) == 30 - len(multi)
            assert ts.outcomes == {"ok": 30 - len(multi)}
    stored = _stored(tmp_path / "out")
    for key in {(t, s) for (_e, t, s) in stored}:
        hashes = {stored[(e, *key)][2] for e in ("vllm", "ovms") if (e, *key) in stored}
        assert len(hashes) == 1  # the same request for both endpoints, merged or not
    with Store.open(tmp_path / "out") as st:
        treated = {sid for (_t, sid), rec in st.samples("mmmu_val").items() if rec.treatment != "full"}
    assert treated == multi


def test_streaming_run_reads_the_stream(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    from vlmparity.config import GenerationConfig

    out = tmp_path / "out"
    cfg = _config(data, {"ovms": sims["ovms"].url}, out).model_copy(
        update={"generation": GenerationConfig(stream=True)}
    )
    outcome = runner.run(cfg, outputs=run_outputs())
    assert outcome.errors == {}
    assert [s.outcomes for s in outcome.scores["ovms"]] == [{"ok": 24}, {"ok": 30}]
    # every sample was asked to stream, and answered by a stream (time to first token recorded)
    asked = [e.stream for e in sims["ovms"].chat_log if e.sample_id]
    assert len(asked) == 54 and all(asked)
    conn = sqlite3.connect(out / "vlmparity.sqlite")
    ttfts = [row[0] for row in conn.execute("SELECT ttft FROM results")]
    conn.close()
    assert len(ttfts) == 54 and all(t is not None for t in ttfts)


def test_png_level_changes_the_bytes_not_the_pixels(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    def run_at(level: int | None, out: Path) -> runner.RunOutcome:
        extra = {} if level is None else {"png_level": level}
        return runner.run(
            RunConfig(
                endpoints=parse_endpoints([f"ovms={sims['ovms'].url}"]),
                tasks=("mme",),
                data={"mme": str(data["mme"])},
                plan=SamplingPlan(limit=8),
                options=RunOptions(output_path=out, **extra),  # type: ignore[arg-type]
            ),
            outputs=run_outputs(),
        )

    sim = sims["ovms"]
    sim.clear_log()
    default = run_at(None, tmp_path / "default")
    default_log = [(e.sample_id, e.answer, e.body_hash) for e in sim.chat_log if e.task == "mme"]
    sim.clear_log()
    stored = run_at(0, tmp_path / "stored")
    stored_log = [(e.sample_id, e.answer, e.body_hash) for e in sim.chat_log if e.task == "mme"]
    assert len(default_log) == len(stored_log) == 8
    # the simulator recognises each image by the exact hash of its RGB pixels: same samples, same answers
    assert sorted(x[:2] for x in stored_log) == sorted(x[:2] for x in default_log)
    # ... from other bytes: every request differs (the runs could not be compared with each other)
    assert not {x[2] for x in stored_log} & {x[2] for x in default_log}
    assert [s.lmms_eval.result.metrics for s in stored.scores["ovms"]] == [
        s.lmms_eval.result.metrics for s in default.scores["ovms"]
    ]
    public = json.loads((tmp_path / "stored" / "run.json").read_text())
    assert "png_level" in json.dumps(public)  # recorded in the run's provenance


def test_max_images_known_in_advance_sends_no_multi_image_request(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    sims["vllm"].clear_log()
    sims["ovms"].clear_log()
    urls = {"vllm": sims["vllm"].url, "ovms": sims["ovms"].url}
    outcome = runner.run(
        _config(data, urls, tmp_path / "out", multi_image="skip", max_images=1), outputs=run_outputs()
    )
    assert all(e.image_count <= 1 for sim in (sims["vllm"], sims["ovms"]) for e in sim.chat_log)
    multi = _multi_image_ids(data)
    assert [s.skipped for s in outcome.scores["vllm"]] == [0, len(multi)]
    # error policy: every question is sent whatever --max-images says (as lmms-eval does); the server's
    # refusal is each multi-image question's outcome
    sims["vllm"].clear_log()
    outcome = runner.run(
        _config(data, {"vllm": sims["vllm"].url}, tmp_path / "out2", max_images=1), outputs=run_outputs()
    )
    assert sum(1 for e in sims["vllm"].chat_log if e.image_count > 1) == len(multi)
    ts = outcome.scores["vllm"][1]
    assert ts.outcomes["unsupported"] == len(multi) and ts.answered.n == 30 - len(multi)


def test_hash_guard_refuses_other_options(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    from vlmparity.errors import ConfigError

    urls = {"ovms": sims["ovms"].url}
    cfg = _config(data, urls, tmp_path / "out")
    runner.run(cfg.model_copy(update={"plan": SamplingPlan(limit=4)}), outputs=run_outputs())
    other = _config(data, urls, tmp_path / "out", image_format="jpeg")
    with pytest.raises(ConfigError, match="different request") as err:
        runner.run(other.model_copy(update={"plan": SamplingPlan(limit=8)}), outputs=run_outputs())
    assert "--output-path" in err.value.one_line()


def _final(outcome: runner.RunOutcome) -> dict[str, object]:
    return {
        ep: [
            (s.task, dict(s.lmms_eval.result.metrics), dict(s.answered.result.metrics), dict(s.outcomes))
            for s in v
        ]
        for ep, v in outcome.scores.items()
    }


def test_transient_faults_give_the_fault_free_results(data: dict[str, Path], tmp_path: Path) -> None:
    paths = list(data.values())
    load = {"capacity": 16, "base_latency": 0.002, "per_image": 0.0, "per_token": 0.0}
    faults = {"fault_seed": 5, "p_500": 0.08, "p_503": 0.05, "p_429": 0.05, "p_reset": 0.05,
              "p_truncated": 0.03, "p_non_json": 0.02, "p_html": 0.02, "retry_after": 0}  # fmt: skip
    with (
        SimServer(SimConfig(personality="vllm", data=paths, image_limit=None, load=load)) as clean,
        SimServer(
            SimConfig(personality="vllm", data=paths, image_limit=None, load=load, faults=faults)
        ) as faulty,
        SimServer(SimConfig(personality="ovms", data=paths, load=load, faults=faults)) as faulty_ovms,
    ):
        ref = runner.run(
            _config(data, {"a": clean.url, "b": clean.url}, tmp_path / "clean"), outputs=run_outputs()
        )
        out = tmp_path / "faulty"
        got = runner.run(_config(data, {"a": faulty.url, "b": faulty_ovms.url}, out), outputs=run_outputs())
        reruns = 0
        # a sample may exhaust its retries (0.3^6 per sample): the documented remedy is to rerun
        while (
            any(o not in ("ok",) for v in got.scores.values() for s in v for o in s.outcomes) and reruns < 3
        ):
            got = runner.run(
                _config(data, {"a": faulty.url, "b": faulty_ovms.url}, out), outputs=run_outputs()
            )
            reruns += 1
        # faults really happened (30 % of ~2 x 54 first attempts, plus their retries, in expectation)
        assert sum(faulty.fault_counts.values()) + sum(faulty_ovms.fault_counts.values()) >= 10
        assert _final(got) == _final(ref)


def test_api_key_never_written(data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path) -> None:
    key = "sk-vlmparity-SECRET-4711"
    out = tmp_path / "out"
    env = {**os.environ, "OPENAI_API_KEY": key}
    proc = subprocess.run(
        [sys.executable, "-m", "vlmparity", "run", "-e", f"ovms={sims['ovms'].url}", "--tasks", "mme",
         "--data", f"mme={data['mme']}", "-o", str(out), "--log-samples", "--limit", "6", "--api-key", key],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert key not in proc.stdout and key not in proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) >= 4
    for path in files:
        assert key.encode() not in path.read_bytes(), path
    assert "mme_perception_score" in proc.stdout


def test_a_failed_invocation_says_so_in_run_json_and_the_rerun_completes(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlmparity.errors import DataError

    out = tmp_path / "out"
    cfg = _config(data, {"ovms": sims["ovms"].url}, out, png_level=3)
    real_run = runner.Engine.run

    async def broken(self: runner.Engine) -> None:
        raise DataError("cannot write to the run store: database or disk is full", hint="free some space")

    monkeypatch.setattr(runner.Engine, "run", broken)
    with pytest.raises(DataError):
        runner.run(cfg, outputs=run_outputs())
    doc = json.loads((out / "run.json").read_text())
    assert doc["status"] == "failed"
    assert doc["failure"].startswith("cannot write to the run store: database or disk is full")
    assert not list(out.rglob("*_results.json"))  # no lmms-eval files for an invocation that failed
    monkeypatch.setattr(runner.Engine, "run", real_run)
    runner.run(cfg, outputs=run_outputs())
    doc = json.loads((out / "run.json").read_text())
    assert doc["status"] == "complete" and "failure" not in doc
    assert doc["images"]["png_compress_level"] == 3
    # samples files are written before results.json, and every results.json has its samples files
    written = doc["files"]["ovms"]
    assert written[-1].endswith("_results.json")
    assert sorted(Path(f).name.split("_samples_")[1] for f in written[:-1]) == ["mme.jsonl", "mmmu_val.jsonl"]


def test_a_run_without_writers_leaves_only_the_store(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    """The runner writes no file of its own: without `outputs` there is no run.json and no lmms-eval file,
    and every answer is in the store, scored as usual."""
    out = tmp_path / "out"
    outcome = runner.run(_config(data, {"ovms": sims["ovms"].url}, out))
    assert outcome.errors == {} and outcome.run_json == "" and outcome.files == {"ovms": []}
    assert {p.name for p in out.iterdir()} <= {
        "vlmparity.sqlite", "vlmparity.sqlite-wal", "vlmparity.sqlite-shm", "vlmparity.lock"
    }  # fmt: skip
    assert len(_stored(out)) == 24 + 30
    assert [s.task for s in outcome.scores["ovms"]] == ["mme", "mmmu_val"]
    assert [s.lmms_eval.n for s in outcome.scores["ovms"]] == [24, 30]


class _EvenGate:
    """A gate that admits only the even sample indices, then ends the run after the first pass."""

    def __init__(self) -> None:
        self.stopped = False
        self.passes = 0
        self.admitted: list[int] = []
        self.resolved_: list[tuple[str, int]] = []
        self.ended: list[str] = []
        self.samples: list[object] = []

    def bind(self, engine: runner.Engine) -> None:
        self.samples = list(engine.samples)

    def order(self, endpoint: str, todo: Sequence[int]) -> list[int]:
        return sorted(todo, reverse=True)

    async def begin(self) -> bool:
        self.passes += 1
        self.stopped = self.passes > 1
        return self.stopped

    async def admit(self, index: int) -> bool:
        if index % 2:
            return False
        self.admitted.append(index)
        return True

    def resolved(self, endpoint: str, index: int) -> None:
        self.resolved_.append((endpoint, index))

    def endpoint_ended(self, endpoint: str) -> None:
        self.ended.append(endpoint)


def test_the_gate_passed_to_run_decides_what_is_sent(
    data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    gate = _EvenGate()
    outcome = runner.run(_config(data, {"ovms": sims["ovms"].url}, out), gate=gate, outputs=run_outputs())
    assert len(gate.samples) == 54
    assert sorted(gate.admitted) == list(range(0, 54, 2)) and gate.admitted[0] == 52  # in the gate's order
    assert sorted(i for _, i in gate.resolved_) == list(range(54))  # sent or not admitted: each resolved once
    assert gate.ended == ["ovms"] and gate.stopped
    stored = {(t, sid) for (_e, t, sid) in _stored(out)}
    assert stored == {(s.task, s.id) for i, s in enumerate(gate.samples) if i % 2 == 0}  # type: ignore[attr-defined]
    assert outcome.scores == {} and outcome.errors == {}  # stopped by the gate on purpose: not scored


_KILL_SIM_CONFIG = {"capacity": 2, "base_latency": 0.15, "per_image": 0.0, "per_token": 0.0}


@pytest.mark.slow
def test_sigkill_and_resume(data: dict[str, Path], tmp_path: Path) -> None:
    paths = list(data.values())
    out = tmp_path / "out"
    with (
        SimServer(SimConfig(personality="vllm", data=paths, load=_KILL_SIM_CONFIG)) as a,
        SimServer(SimConfig(personality="ovms", data=paths, load=_KILL_SIM_CONFIG)) as b,
    ):
        args = [sys.executable, "-m", "vlmparity", "run", "-e", f"a={a.url}", "-e", f"b={b.url}",
                "--tasks", "mme,mmmu_val", "--data", f"mme={data['mme']}", "--data", f"mmmu_val={data['mmmu_val']}",
                "-o", str(out), "--concurrency", "4"]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        n = 0
        while time.monotonic() < deadline and n < 20:
            time.sleep(0.1)
            if (out / "vlmparity.sqlite").exists():
                try:
                    conn = sqlite3.connect(out / "vlmparity.sqlite", timeout=5)
                    n = conn.execute("SELECT count(*) FROM results").fetchone()[0]
                    conn.close()
                except sqlite3.OperationalError:
                    n = 0
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 20 <= n < 108, "the kill must land mid-run"
        before = _stored(out)
        a.clear_log()
        b.clear_log()
        rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        after = _stored(out)
        # no answer lost, none changed
        assert all(after[k] == v for k, v in before.items())
        # none sent twice after it was stored
        for name, sim in (("a", a), ("b", b)):
            done = {
                h for (e, _t, _s), (o, _x, h) in before.items() if e == name and o in ("ok", "unsupported")
            }
            assert not done & {e.body_hash for e in sim.chat_log}
        # identical to an uninterrupted run
        ref = runner.run(_config(data, {"a": a.url, "b": b.url}, tmp_path / "ref"), outputs=run_outputs())
        final = runner.run(_config(data, {"a": a.url, "b": b.url}, out), outputs=run_outputs())
        assert _final(final) == _final(ref)
        assert {k[0:3]: v[:2] for k, v in after.items()} == {
            k[0:3]: v[:2] for k, v in _stored(tmp_path / "ref").items()
        }


# ----- loading without images, releasing encoded images --------------------------------------------


def test_prepare_without_images_is_the_same_plan_without_bytes(data: dict[str, Path]) -> None:
    from dataclasses import replace

    from vlmparity.data.fingerprint import same_data

    for task, path in data.items():
        full = runner.prepare_task(task, str(path), limit=None, sample=None, seed=0)
        text = runner.prepare_task(task, str(path), limit=None, sample=None, seed=0, images=False)
        assert all(s.images == () for s in text.samples)
        # the same samples for scoring: only the bytes are left out, their number is kept
        assert [s.image_count for s in text.samples] == [len(s.images) for s in full.samples]
        assert [replace(s, omitted_images=0) for s in text.samples] == [
            replace(s, images=()) for s in full.samples
        ]
        assert same_data(full.fingerprint, text.fingerprint)
        # a report needs the images of a few: read again, they are the very images a run sends
        some = [text.samples[i] for i in (len(text.samples) - 1, 0, 5)]
        back = runner.load_images(text, some)
        by_id = {s.id: s for s in full.samples}
        assert [s.id for s in back] == [s.id for s in some]
        assert [[im.key for im in s.images] for s in back] == [
            [im.key for im in by_id[s.id].images] for s in some
        ]
        assert all(s.omitted_images == 0 for s in back)
    mmmu = runner.prepare_task(
        "mmmu_val", str(data["mmmu_val"]), limit=None, sample=None, seed=0, images=False
    )
    multi = [s for s in mmmu.samples if s.image_count > 1]
    assert multi and [len(s.images) for s in runner.load_images(mmmu, multi)] == [
        s.image_count for s in multi
    ]


def test_request_book_releases_an_image_once_every_endpoint_took_its_samples() -> None:
    import asyncio

    from vlmparity.tasks.base import ImageData, Sample

    a, b = ImageData.from_bytes(b"a"), ImageData.from_bytes(b"b")
    samples = [
        Sample("mme", "s0", 0, "Yes", "g", "c0", (a,)),
        Sample("mme", "s1", 1, "No", "g", "c0", (a,)),  # the second question of image a
        Sample("mme", "s2", 2, "Yes", "g", "c1", (b,)),
    ]
    released: list[list[str]] = []

    def build(index: int, sample: Sample, task: object) -> runner.Built:
        return runner.Built(index, sample, "full", b"{}", f"h{index}", len(sample.images))

    async def go() -> list[tuple[str, list[list[str]]]]:
        book = runner.RequestBook(
            samples,
            {"mme": get_task("mme")},
            build,
            workers=1,
            release=lambda keys: released.append(list(keys)),
        )
        book.want([0, 1, 2])  # endpoint 1
        book.want([0, 2])  # endpoint 2 (already has s1)
        log = []
        for who, index in (("1", 0), ("1", 1), ("1", 2), ("2", 0), ("2", 2)):
            await book.take(index)
            log.append((f"{who}:{index}", [list(r) for r in released]))
        book.close()
        return log

    log = asyncio.run(go())
    assert log == [
        ("1:0", []),
        ("1:1", []),
        ("1:2", []),
        ("2:0", [[a.key]]),  # a: s0 and s1 taken by endpoint 1, s0 by endpoint 2
        ("2:2", [[a.key], [b.key]]),
    ]


def test_request_book_holds_at_most_its_byte_cap_for_a_lagging_endpoint() -> None:
    import asyncio

    from vlmparity.tasks.base import Sample

    samples = [Sample("mme", f"s{i}", i, "Yes", "g", "c", ()) for i in range(50)]

    def build(index: int, sample: Sample, task: object) -> runner.Built:
        payload = bytes([index]) * 1000  # deterministic: a rebuild gives the same bytes
        return runner.Built(index, sample, "full", payload, f"h{index}", 0)

    async def go() -> tuple[list[bytes], list[bytes], runner.RequestBook]:
        book = runner.RequestBook(samples, {"mme": get_task("mme")}, build, workers=1, max_bytes=10_000)
        book.want(range(50))  # the fast endpoint
        book.want(range(50))  # the slow one, which starts only when the fast one is done
        fast = [(await book.take(i)).payload or b"" for i in range(50)]
        slow = [(await book.take(i)).payload or b"" for i in range(50)]
        book.close()
        return fast, slow, book

    fast, slow, book = asyncio.run(go())
    assert fast == slow == [bytes([i]) * 1000 for i in range(50)]
    assert book.peak_bytes <= 11_000  # the cap, plus the body just built
    # Kept for the slow endpoint: the lowest indices, which it needs first (0-8; each new build pushed
    # out the highest one taken so far), and the last one built (49). It rebuilds 9-48: 50 + 40 builds.
    assert book.builds == 90


def test_request_book_never_drops_bodies_built_ahead_for_bytes() -> None:
    import asyncio

    from vlmparity.tasks.base import Sample

    samples = [Sample("mme", f"s{i}", i, "Yes", "g", "c", ()) for i in range(20)]

    def build(index: int, sample: Sample, task: object) -> runner.Built:
        return runner.Built(index, sample, "full", bytes([index]) * 1000, f"h{index}", 0)

    async def go() -> runner.RequestBook:
        # one endpoint, four bodies built ahead of each take: 5 kB held against a 2.5 kB cap
        book = runner.RequestBook(samples, {"mme": get_task("mme")}, build, workers=2, max_bytes=2500)
        book.want(range(20))
        for i in range(20):
            assert (await book.take(i, ahead=range(i + 1, min(i + 5, 20)))).payload == bytes([i]) * 1000
        book.close()
        return book

    book = asyncio.run(go())
    assert book.builds == 20  # none dropped and built again
