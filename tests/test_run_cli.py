"""`vlmparity run`: option parsing into typed settings, secrets masking, and the command end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlmparity.config import (
    RunConfig,
    RunOptions,
    SamplingPlan,
    mask_argv,
    mask_url,
    parse_endpoints,
    parse_task_data,
)
from vlmparity.errors import ConfigError


def test_endpoints_names_models_kinds() -> None:
    eps = parse_endpoints(
        ["vllm=http://127.0.0.1:8000/v1/", "ovms=http://127.0.0.1:9000/v3", "http://h:7/v1"],
        models=["llava", "ovms=OpenVINO/llava"],
        kinds=["ovms=ovms"],
        api_key="sk-secret",
    )
    assert [(e.name, e.url, e.model, e.kind) for e in eps] == [
        ("vllm", "http://127.0.0.1:8000/v1", "llava", "auto"),
        ("ovms", "http://127.0.0.1:9000/v3", "OpenVINO/llava", "ovms"),
        ("h_7", "http://h:7/v1", "llava", "auto"),
    ]
    assert all(e.api_key is not None and e.api_key.get_secret_value() == "sk-secret" for e in eps)
    # the key never serialises
    assert "sk-secret" not in str(eps) and "sk-secret" not in str([e.public() for e in eps])
    assert "sk-secret" not in eps[0].model_dump_json()


def test_endpoint_from_openai_api_base_and_errors() -> None:
    (ep,) = parse_endpoints([], default_base="http://localhost:8000/v1")
    assert ep.name == "localhost_8000" and ep.url == "http://localhost:8000/v1"
    assert parse_endpoints([]) == ()
    with pytest.raises(ConfigError, match="must look like"):
        parse_endpoints(["a=localhost:8000"])
    with pytest.raises(ConfigError, match="names no endpoint"):
        parse_endpoints(["a=http://h:1/v1"], models=["b=x"])
    with pytest.raises(ConfigError, match="unknown --kind"):
        parse_endpoints(["a=http://h:1/v1"], kinds=["tgi"])
    with pytest.raises(ConfigError, match="must be letters"):
        parse_endpoints(["a b=http://h:1/v1"])


def test_task_data_and_plan() -> None:
    assert parse_task_data(["mme=/d/mme", "mmmu_val=lmms-lab/MMMU"], ["mme", "mmmu_val"]) == {
        "mme": "/d/mme",
        "mmmu_val": "lmms-lab/MMMU",
    }
    assert parse_task_data(["/d/mme"], ["mme"]) == {"mme": "/d/mme"}
    with pytest.raises(ConfigError):
        parse_task_data(["/d/x"], ["mme", "mmmu_val"])
    with pytest.raises(ValueError, match="cannot be combined"):
        SamplingPlan(limit=10, sample=5)
    assert SamplingPlan().mode == "all" and SamplingPlan(limit=0.5).mode == "limit"
    assert SamplingPlan(sample=5, seed=3).mode == "sample"


def test_run_config_checks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    eps = parse_endpoints(["a=http://h:1/v1", "a=http://h:2/v1"])
    with pytest.raises(ValueError, match="used twice"):
        RunConfig(endpoints=eps, tasks=("mme",), options=RunOptions(output_path=tmp_path))
    with pytest.raises(ValueError, match="concurrency"):
        RunOptions(output_path=tmp_path, concurrency=0)
    for level in (-1, 10):
        with pytest.raises(ValueError, match="--png-level must be between 0 and 9"):
            RunOptions(output_path=tmp_path, png_level=level)
    assert RunOptions(output_path=tmp_path, png_level=0).png_level == 0
    cfg = RunConfig(
        endpoints=parse_endpoints(["a=http://u:pw@h:1/v1"], api_key="sk-x"),
        tasks=("mme",),
        options=RunOptions(output_path=tmp_path, concurrency=8),
    )
    public = cfg.public()
    assert public["endpoints"][0]["url"] == "http://u:***@h:1/v1"
    assert "sk-x" not in str(public) and "pw" not in str(public)


def test_mask_argv_and_url() -> None:
    argv = ["run", "--api-key", "sk-1", "--endpoint", "a=http://u:pw@h:1/v1", "--api-key=sk-2", "x sk-3 y"]
    assert mask_argv(argv, ["sk-3"]) == [
        "run",
        "--api-key",
        "***",
        "--endpoint",
        "a=http://u:***@h:1/v1",
        "--api-key=***",
        "x *** y",
    ]
    assert mask_url("http://h:1/v1") == "http://h:1/v1"
    assert mask_url("https://user:secret@h/v1") == "https://user:***@h/v1"


# ----- the command itself (subprocess, as a user runs it) ---------------------------------------------


def _vlmparity(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def mme_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlmparity.synth import write_mme

    return write_mme(tmp_path_factory.mktemp("mme"), n=8, seed=2)


def test_usage_errors_are_one_line(tmp_path: Path) -> None:
    out = _vlmparity("run", "-e", "a=http://127.0.0.1:9/v1", "--tasks", "nope", "-o", str(tmp_path))
    assert out.returncode == 4
    assert "unknown task 'nope'" in out.stderr and "Traceback" not in out.stderr
    out = _vlmparity("run", "--tasks", "mme", "-o", str(tmp_path), env={"OPENAI_API_BASE": ""})
    assert out.returncode == 4 and "no endpoint" in out.stderr
    out = _vlmparity(
        "run",
        "-e",
        "a=http://127.0.0.1:9/v1",
        "--tasks",
        "mme",
        "-o",
        str(tmp_path),
        "--limit",
        "2",
        "--sample",
        "4",
    )
    assert out.returncode == 4 and "cannot be combined" in out.stderr
    out = _vlmparity("run", "-e", "a=http://127.0.0.1:9/v1", "--tasks", "mme")  # no --output-path
    assert out.returncode == 4 and "Traceback" not in out.stderr


def test_dead_port_is_an_endpoint_error(tmp_path: Path, mme_dir: Path) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _vlmparity(
        "run", "-e", f"a=http://127.0.0.1:{port}/v1", "--tasks", "mme", "--data", f"mme={mme_dir}",
        "-o", str(tmp_path / "o"), "--ready-timeout", "1",
    )  # fmt: skip
    assert out.returncode == 3
    assert out.stderr.strip().splitlines()[-1].startswith("vlmparity: error: cannot connect")
    assert "Traceback" not in out.stderr


def test_run_from_openai_api_base_and_resume(tmp_path: Path, mme_dir: Path) -> None:
    from vlmparity.sim import SimConfig, SimServer

    with SimServer(SimConfig(personality="vllm", data=[mme_dir])) as sim:
        args = ("run", "--tasks", "mme", "--data", str(mme_dir), "-o", str(tmp_path / "o"), "--log-samples")
        env = {"OPENAI_API_BASE": sim.base_url, "OPENAI_API_KEY": "sk-cli-test-key"}
        first = _vlmparity(*args, env=env)
        assert first.returncode == 0, first.stderr
        rows = [
            line.replace(" ", "")
            for line in first.stdout.splitlines()
            if line.startswith("|mme") and "|none" in line
        ]
        assert [r.split("|")[1:5] for r in rows] == [
            ["mme", "none", "0", "mme_cognition_score"],
            ["mme", "none", "0", "mme_perception_score"],
        ]
        assert "answered" in first.stdout and "strict" in first.stdout and "req/s" in first.stdout
        n_chat = sum(1 for e in sim.chat_log if e.sample_id)
        assert n_chat == 8
        again = _vlmparity(*args, env=env)
        assert again.returncode == 0, again.stderr
        assert sum(1 for e in sim.chat_log if e.sample_id) == 8  # resumed: nothing sent again
        assert "nothing to send" in again.stdout
        # the same numbers both times
        table = [line for line in first.stdout.splitlines() if line.startswith("|mme ")]
        assert table == [line for line in again.stdout.splitlines() if line.startswith("|mme ")]
        # `vlmparity score` on the exported samples file prints the same lmms-eval rows
        first_samples = sorted((tmp_path / "o").rglob("*_samples_mme.jsonl"))[0]
        scored = _vlmparity("score", "--lmms-samples", str(first_samples))
        assert scored.returncode == 0, scored.stderr
        offline_rows = [
            line.replace(" ", "")
            for line in scored.stdout.splitlines()
            if line.startswith("|mme") and "|none" in line
        ]
        assert offline_rows == rows
    files = sorted(p.name for p in (tmp_path / "o").rglob("*") if p.is_file())
    assert "run.json" in files and "vlmparity.sqlite" in files
    assert sum(1 for f in files if f.endswith("_samples_mme.jsonl")) == 2


def test_unfinished_endpoints_are_named_once() -> None:
    from vlmparity.cli.run import unfinished_error
    from vlmparity.errors import EndpointError

    breaker = EndpointError(
        "vllm: 15 consecutive connection failures (refused) at http://127.0.0.1:9/v1/chat/completions; "
        "stopped after 30 results",
        hint="is the server still running? results so far are kept; run again to resume",
    )
    err = unfinished_error({"vllm": breaker.one_line(), "ovms": "the image of row 3 cannot be decoded"})
    text = err.one_line()
    assert text.startswith("not every endpoint finished: vllm: 15 consecutive connection failures (refused)")
    assert text.count("vllm:") == 1 and text.count("ovms:") == 1
    assert "; ovms: the image of row 3 cannot be decoded (rerun the same command to resume)" in text
    # every endpoint's own error already says how to resume: not said twice
    only = unfinished_error({"vllm": breaker.one_line()})
    assert only.hint is None and only.one_line().count("resume") == 1
    assert only.exit_code == 3


def test_interrupt_as_error_is_one_line_and_exit_130() -> None:
    from vlmparity.cli.run import interrupt_as_error
    from vlmparity.errors import VlmparityError

    with pytest.raises(VlmparityError) as info, interrupt_as_error("interrupted; kept", hint="rerun"):
        raise KeyboardInterrupt
    assert (info.value.one_line(), info.value.exit_code) == ("interrupted; kept (rerun)", 130)


def _stored_rows(db: Path) -> set[tuple[str, str, str, str | None]]:
    import sqlite3

    try:
        conn = sqlite3.connect(db, timeout=5)
        try:
            rows = conn.execute(
                "SELECT u.endpoint, r.sample_id, r.outcome, r.text FROM results r JOIN runs u USING (run_id)"
            ).fetchall()
        finally:
            conn.close()
    except sqlite3.OperationalError:  # not created yet
        return set()
    return {tuple(r) for r in rows}


@pytest.mark.parametrize("command", ["run", "compare"])
def test_ctrl_c_mid_run_is_one_line_exit_130_and_keeps_answers(tmp_path: Path, command: str) -> None:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) after some answers are stored."""
    import signal
    import time

    from vlmparity.sim import SimConfig, SimServer
    from vlmparity.synth import write_mme

    data = write_mme(tmp_path / "mme", n=24, seed=3)
    slow = {"capacity": 2, "base_latency": 0.3, "per_image": 0.0, "per_token": 0.0}
    out = tmp_path / "o"
    db = out / "vlmparity.sqlite"
    with (
        SimServer(SimConfig(personality="vllm", data=[data], load=slow)) as a,
        SimServer(SimConfig(personality="ovms", data=[data], load=slow)) as b,
    ):
        args = [sys.executable, "-m", "vlmparity", command, "-e", f"a={a.url}", "-e", f"b={b.url}",
                "--tasks", "mme", "--data", f"mme={data}", "-o", str(out), "--concurrency", "2"]  # fmt: skip
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        before: set[tuple[str, str, str, str | None]] = set()
        deadline = time.monotonic() + 120
        while len(before) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.1)
            before = _stored_rows(db)
        os.killpg(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    assert 8 <= len(before) < 48, "the interrupt must land mid-run"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last == (
        f"vlmparity: error: interrupted; every answer received so far is saved in {out} "
        "(rerun the same command to resume)"
    )
    assert before <= _stored_rows(db)  # every answer stored before the interrupt is still there


def test_unfinished_by_broken_data_names_the_row_and_no_resume() -> None:
    """A broken image stops every endpoint at the same row: named once, and no 'rerun to resume' (a
    rerun stops there again; a fixed dataset is other data for this store)."""
    from vlmparity.cli.run import unfinished_error
    from vlmparity.errors import DataError

    broken = DataError(
        "mme row 4, sample 'q4': cannot decode image 0aecc2b71341 (16687 bytes): "
        "OSError: image file is truncated",
        hint="the dataset file is damaged; re-download it or drop that row",
    ).one_line()
    err = unfinished_error({"vllm": broken, "ovms": broken}, data={"vllm", "ovms"})
    assert isinstance(err, DataError) and err.exit_code == 3
    text = err.one_line()
    assert text.startswith("not every endpoint finished: vllm, ovms: mme row 4, sample 'q4': cannot decode")
    assert text.count("mme row 4") == 1
    assert "resume" not in text
    assert err.hint is not None and "new --output-path" in err.hint
    # with an endpoint that stopped for another reason: still no advice to rerun the same command
    mixed = unfinished_error({"vllm": broken, "ovms": "connection refused"}, data={"vllm"})
    assert not isinstance(mixed, DataError)
    assert "rerun the same command" not in mixed.one_line()


def test_progress_counts_connection_failures_after_the_server_died(tmp_path: Path) -> None:
    """The server dies mid-run: the progress says so and its end line counts the connection failures
    (the unsent samples are kept for a resume, so they are no stored errors: it used to read 0 errors)."""
    import re
    import signal
    import time

    from vlmparity.sim import SimConfig, SimServer
    from vlmparity.synth import write_mme

    data = write_mme(tmp_path / "mme", n=40, seed=5)
    slow = {"capacity": 2, "base_latency": 0.2, "per_image": 0.0, "per_token": 0.0}
    out = tmp_path / "o"
    sim = SimServer(SimConfig(personality="vllm", data=[data], load=slow)).start()
    try:
        args = [sys.executable, "-m", "vlmparity", "run", "-e", f"a={sim.url}", "--tasks", "mme",
                "--data", f"mme={data}", "-o", str(out), "--concurrency", "2"]  # fmt: skip
        proc = subprocess.Popen(
            args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while len(_stored_rows(out / "vlmparity.sqlite")) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sim.stop()  # the server dies
    assert proc.stderr is not None
    lines = []
    for line in proc.stderr:  # wait (on the output, not on time) until the run says the server is gone
        lines.append(line)
        if "stopped answering" in line:
            break
    os.killpg(proc.pid, signal.SIGINT)
    rest = proc.communicate(timeout=60)[1]
    stderr = "".join(lines) + rest
    assert proc.returncode == 130, stderr
    said = [line for line in stderr.splitlines() if "stopped answering" in line]
    assert len(said) == 1 and re.fullmatch(
        r"a: the server stopped answering \((\d+) connection failure\(s\)\); retrying one request at a time",
        said[0],
    )
    (end,) = [line for line in stderr.splitlines() if re.match(r"a: \d+/40 done", line)]
    found = re.fullmatch(r"a: (\d+)/40 done, 0 error\(s\), (\d+) connection failure\(s\)", end)
    assert found is not None, end
    assert 4 <= int(found[1]) < 40 and int(found[2]) >= 8  # the breaker opens after 8 in a row
