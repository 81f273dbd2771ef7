"""Sim configuration files and the `vlmparity sim` command."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from vlmparity.errors import ConfigError
from vlmparity.sim import SimConfig, load_config


def test_yaml_and_json_files(tmp_path: Path) -> None:
    yaml_file = tmp_path / "sim.yaml"
    yaml_file.write_text(
        "personality: ovms\nmodel: m\nanswers:\n  accuracy: 0.6\n  accuracy_by_group: {OCR: 0.1}\n"
        "load: {capacity: 4, time_scale: 0}\nfaults: {p_500: 0.1, fault_seed: 9}\n"
    )
    cfg = load_config(yaml_file)
    assert (cfg.personality, cfg.model, cfg.answers.accuracy, cfg.load.capacity) == ("ovms", "m", 0.6, 4)
    assert cfg.answers.accuracy_for("OCR") == 0.1 and cfg.answers.accuracy_for("count") == 0.6
    json_file = tmp_path / "sim.json"
    json_file.write_text(json.dumps({"image_limit": None, "vllm_version": "0.9.0"}))
    cfg = load_config(json_file)
    assert cfg.image_limit is None and cfg.vllm_flat_errors()
    assert load_config(tmp_path / "sim.yaml").faults.fault_seed == 9
    assert not SimConfig().vllm_flat_errors()  # default 0.11.0 uses the nested shape


def test_misbehaviour_knobs_from_a_file(tmp_path: Path) -> None:
    file = tmp_path / "sim.yaml"
    file.write_text("usage: false\nstream_done: false\nanswers: {nondeterminism: 0.25, honour_seed: false}\n")
    cfg = load_config(file)
    assert (cfg.usage, cfg.stream_done) == (False, False)
    assert (cfg.answers.nondeterminism, cfg.answers.honour_seed) == (0.25, False)
    # the defaults are the well-behaved server
    default = SimConfig()
    assert (default.usage, default.stream_done) == (True, True)
    assert (default.answers.nondeterminism, default.answers.honour_seed) == (0.0, True)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("answers: [", "not valid YAML"),
        ("answers: {accuracy: 2}", "answers.accuracy"),
        ("answers: {nondeterminism: 1.5}", "answers.nondeterminism"),
        ("answers: {honour_seed: maybe}", "answers.honour_seed"),
        ("stream_done: sometimes", "stream_done"),
        ("personality: sglang", "personality"),
        ("colour: red", "colour"),
        ("faults: {p_500: 0.7, p_503: 0.7}", "more than 1"),
        ("- a list", "mapping"),
    ],
)
def test_malformed_file_is_one_config_error(tmp_path: Path, text: str, fragment: str) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(file)
    assert fragment in str(err.value)
    assert "\n" not in err.value.one_line()
    assert err.value.exit_code == 4


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_bad_config_is_one_line(tmp_path: Path) -> None:
    file = tmp_path / "bad.yaml"
    file.write_text("load: {capacity: 0}")
    done = run_cli("sim", "--config", str(file), "--port", "0")
    assert done.returncode == 4
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("vlmparity: error: ")
    assert "load.capacity" in done.stderr


def test_cli_serves_until_interrupted(tmp_path: Path) -> None:
    log = tmp_path / "requests.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmparity", "sim", "--personality", "ovms", "--port", "0", "--log-file", str(log), "--zero-latency"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        base_url = proc.stdout.readline().strip()
        assert base_url.startswith("http://127.0.0.1:") and base_url.endswith("/v3")
        root = base_url.removesuffix("/v3")
        assert httpx.get(root + "/v2/health/ready", timeout=10).status_code == 200
        body = {"model": "llava-hf/llava-1.5-7b-hf", "messages": [{"role": "user", "content": "Hello?"}]}
        assert httpx.post(base_url + "/chat/completions", json=body, timeout=10).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "stopped" in stderr and "Traceback" not in stderr
    # started without --data: one line says it knows no question
    warned = [line for line in stderr.splitlines() if "warning" in line]
    assert len(warned) == 1 and warned[0].startswith(
        "vlmparity sim: warning: no --data, so it knows no question"
    )
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["path"] for e in entries] == ["/v2/health/ready", "/v3/chat/completions"]


def test_cli_with_data_does_not_warn(synth_mme_small: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmparity", "sim", "--port", "0", "--data", str(synth_mme_small), "--zero-latency"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip().startswith("http://127.0.0.1:")
    finally:
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "warning" not in stderr and "(56 known questions;" in stderr
