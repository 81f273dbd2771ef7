"""`vlmparity compare` through the real pipeline: simulated engines over HTTP, the runner, the store, the verdict.

The simulator says which answers it meant to be right (its request log), which is the oracle for the
paired counts; its accuracy settings are the oracle for the verdicts.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from vlmparity import runner
from vlmparity.config import RunConfig, RunOptions, SamplingPlan, parse_endpoints
from vlmparity.report.run_summary import run_outputs
from vlmparity.sim import SimConfig, SimServer

INSTANT = {"capacity": 16, "base_latency": 0.0, "per_image": 0.0, "per_token": 0.0, "time_scale": 0}


@pytest.fixture(scope="module")
def small(synth_mme_small: Path, synth_mmmu_small: Path) -> dict[str, Path]:
    return {"mme": synth_mme_small, "mmmu_val": synth_mmmu_small}


def sim_config(
    personality: str, data: dict[str, Path], *, image_limit: int | None = None, **answers: Any
) -> SimConfig:
    extra: dict[str, Any] = {"image_limit": image_limit} if personality == "vllm" else {}
    return SimConfig(
        personality=personality, data=list(data.values()), answers=answers, load=INSTANT, **extra
    )  # type: ignore[arg-type]


@contextmanager
def serving(*configs: SimConfig) -> Iterator[list[SimServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(SimServer(c)) for c in configs]


def main(args: list[str]) -> int:
    from vlmparity.cli import main as cli_main

    try:
        cli_main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def data_args(data: dict[str, Path]) -> list[str]:
    out = ["--tasks", ",".join(data)]
    for task, path in data.items():
        out += ["--data", f"{task}={path}"]
    return out


def meant_right(sim: SimServer, task: str) -> dict[str, bool]:
    """Per sample, whether the simulator meant its answer to be right (chat requests it recognised)."""
    return {
        e.sample_id: bool(e.correct)
        for e in sim.chat_log
        if e.task == task and e.status == 200 and e.sample_id
    }


def test_equal_accuracy_is_never_not_equivalent(
    small: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # One simulated model, two engines each answering 5 % of the questions differently (other seeds):
    # equally accurate in expectation, so `not equivalent` would be a false alarm.
    ref_cfg = sim_config("vllm", small, model_seed=3, engine_seed=1, divergence=0.05)
    cand_cfg = sim_config("ovms", small, model_seed=3, engine_seed=2, divergence=0.05)
    out, verdict_file = tmp_path / "out", tmp_path / "verdict.json"
    with serving(ref_cfg, cand_cfg) as (ref, cand):
        code = main(
            ["compare", "-e", f"ref={ref.url}", "-e", f"cand={cand.url}", *data_args(small), "-o", str(out),
             "--json", str(verdict_file), "--reference", "ref"]
        )  # fmt: skip
        meant = {name: meant_right(sim, "mme") for name, sim in (("ref", ref), ("cand", cand))}
    printed = capsys.readouterr().out
    assert code in (0, 2), printed
    assert "VERDICT cand vs ref:" in printed and "not equivalent" not in printed.split("VERDICT")[-1]
    doc = json.loads(verdict_file.read_text())
    (cand_doc,) = doc["candidates"]
    assert cand_doc["verdict"] in ("equivalent", "inconclusive")
    # the paired counts are the simulator's own: questions it meant right on one engine only
    acc = next(m for m in cand_doc["metrics"] if m["metric"] == "mme_acc")
    assert set(meant["ref"]) == set(meant["cand"]) and len(meant["ref"]) == acc["n"] == 56
    lost = sum(1 for sid, ok in meant["ref"].items() if ok and not meant["cand"][sid])
    gained = sum(1 for sid, ok in meant["ref"].items() if not ok and meant["cand"][sid])
    assert (acc["discordant_ab"], acc["discordant_ba"]) == (lost, gained)
    assert (out / "report.html").is_file() and (out / "vlmparity.sqlite").is_file()
    # comparing the stored runs again sends nothing and gives the same verdict
    assert main(["compare", str(out), "--reference", "ref", "--no-report"]) == code


def _image_counts(path: Path) -> list[int]:
    """Images per MMMU question of the data set (what the prompt refers to)."""
    from vlmparity.data.sources import load_rows
    from vlmparity.tasks.base import get_task

    samples = get_task("mmmu_val").samples_from_rows(load_rows(path, split="validation"))
    return [len(s.images) for s in samples]


def test_one_image_vllm_exits_3_saying_why_and_skip_compares_cleanly(
    small: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # llava on vLLM accepts one image per prompt: MMMU's multi-image questions come back `unsupported`
    data = {"mmmu_val": small["mmmu_val"]}
    counts = _image_counts(small["mmmu_val"])
    multi, most = sum(1 for n in counts if n > 1), max(counts)
    assert multi / 60 > 0.02 and most > 1
    out, verdict_file = tmp_path / "o", tmp_path / "v.json"
    with serving(sim_config("vllm", data, image_limit=1), sim_config("ovms", data)) as (vllm, ovms):
        args = [
            "compare",
            "-e",
            f"vllm={vllm.url}",
            "-e",
            f"ovms={ovms.url}",
            *data_args(data),
            "-o",
            str(out),
        ]
        code = main([*args, "--no-report"])
        printed = capsys.readouterr().out
        assert code == 3
        (problem,) = [line for line in printed.splitlines() if line.startswith("INFRASTRUCTURE:")]
        assert problem.startswith(f"INFRASTRUCTURE: vllm: {multi} of 60 mmmu_val samples unsupported (")
        assert "the server accepts 1 image per request" in problem and f"up to {most}" in problem
        assert f"""--limit-mm-per-prompt '{{"image": {most}}}'""" in problem
        assert "--multi-image skip" in problem and "--multi-image merge" in problem
        # a gate above the failure rate lets the verdict through
        assert main(["compare", str(out), "--max-error-rate", "0.9", "--no-report"]) in (0, 1, 2)
        capsys.readouterr()

        # the same command with --multi-image skip: the refused questions leave the comparison for both
        # endpoints (counted and reported), nothing counts as an error
        code = main([*args, "--multi-image", "skip", "--json", str(verdict_file), "--no-report"])
    printed = capsys.readouterr().out
    assert code in (0, 2), printed
    assert "INFRASTRUCTURE" not in printed
    assert f"mmmu_val: {60 - multi} paired samples" in printed
    assert f"mmmu_val: {multi} sample(s) skipped (--multi-image skip): not compared" in printed
    assert f"vllm: {60 - multi}/{60 - multi} answered; ovms: {60 - multi}/{60 - multi} answered" in printed
    (cand,) = json.loads(verdict_file.read_text())["candidates"]
    assert cand["tasks"]["mmmu_val"]["skipped"] == multi and cand["tasks"]["mmmu_val"]["paired"] == 60 - multi
    for side in ("reference", "candidate"):
        assert cand["health"][side]["failures"] == 0


def _config(data: dict[str, Path], urls: dict[str, str], out: Path, **options: Any) -> RunConfig:
    return RunConfig(
        endpoints=parse_endpoints([f"{k}={v}" for k, v in urls.items()]),
        tasks=tuple(data),
        data={k: str(v) for k, v in data.items()},
        plan=SamplingPlan(limit=8),
        options=RunOptions(output_path=out, **options),
    )


def test_request_hash_mismatch_and_missing_answers_exit_3(
    small: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"mme": small["mme"]}
    with serving(sim_config("vllm", data), sim_config("ovms", data)) as (a, b):
        runner.run(_config(data, {"a": a.url}, tmp_path / "png"), outputs=run_outputs())
        runner.run(_config(data, {"b": b.url}, tmp_path / "jpeg", image_format="jpeg"), outputs=run_outputs())
        runner.run(_config(data, {"a": a.url, "b": b.url}, tmp_path / "both"), outputs=run_outputs())
    # other image bytes, other requests: nothing may be compared
    assert main(["compare", str(tmp_path / "png"), str(tmp_path / "jpeg"), "--no-report"]) == 3
    out = capsys.readouterr().out
    assert (
        "8 sample(s) were sent different requests" in out and "no sample of the two runs can be paired" in out
    )

    # an interrupted candidate: two answers never stored
    conn = sqlite3.connect(tmp_path / "both" / "vlmparity.sqlite")
    conn.execute(
        "DELETE FROM results WHERE rowid IN (SELECT r.rowid FROM results r JOIN runs u ON u.run_id = r.run_id"
        " WHERE u.endpoint = 'b' LIMIT 2)"
    )
    conn.commit()
    conn.close()
    assert main(["compare", str(tmp_path / "both"), "--no-report"]) == 3
    assert "b has no answer for 2 of 8 sample(s)" in capsys.readouterr().out


@pytest.mark.slow
def test_five_point_drop_on_full_size_data_is_not_equivalent(
    synth_full: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = {"mme": synth_full["mme"], "mmmu_val": synth_full["mmmu"]}
    # Same model seed: the candidate's right answers are a subset of the reference's, 5 points fewer.
    ref_cfg = sim_config("vllm", data, accuracy=0.80)
    cand_cfg = sim_config("ovms", data, accuracy=0.75)
    verdict_file = tmp_path / "v.json"
    with serving(ref_cfg, cand_cfg) as (ref, cand):
        code = main(
            ["compare", "-e", f"ref={ref.url}", "-e", f"cand={cand.url}", *data_args(data), "-o", str(tmp_path / "o"),
             "--json", str(verdict_file)]
        )  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 1, printed
    assert "VERDICT cand vs ref: not equivalent (exit 1)" in printed
    doc = json.loads(verdict_file.read_text())
    metrics = {m["metric"]: m for m in doc["candidates"][0]["metrics"]}
    assert metrics["mme_acc"]["n"] == 2374 and metrics["mmmu_acc"]["n"] == 900
    assert metrics["mme_acc"]["verdict"] == "not equivalent"
    assert metrics["mme_acc"]["discordant_ba"] == 0  # a pure drop: nothing gained
    assert -0.07 < metrics["mme_acc"]["delta"] < -0.03
