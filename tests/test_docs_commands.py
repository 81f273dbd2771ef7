"""Docs as tests: every `vlmparity` command line in the README's and the runbook's bash blocks is run.

Each line is executed whole (`python -m vlmparity ...`, exit code checked) against the project's simulator on
loopback, with the substitutions a user of this machine would make, and nothing else:

- ports 8000 (vLLM) and 9000 (OVMS) become free ports, in `--port` values and in URLs (other test sessions
  may hold 8000);
- `~` is a temporary HOME; `runs/...` and `verdict.json` land in a temporary working folder;
- the engines are simulators: `~/venvs/vllm/bin/python` (the runbook's `--python`) runs `vlmparity sim
  --personality vllm` with the `--limit-mm-per-prompt` it was given; `docker` on the PATH runs `vlmparity sim
  --personality ovms` for `docker run` and accepts `docker rm`; `optimum-cli` on the PATH writes empty
  OpenVINO files for `--export`. They log their argv, so the test sees what reached the "engine";
- commands that send questions get `--data mme=DIR --data mmmu_val=DIR`: the small synthetic sets (56 MME and
  60 MMMU questions) instead of the Hugging Face datasets (no network in tests);
- big sizes shrink: `--limit N` becomes `--limit 12` and `--sample N` becomes `--sample 30`; a command without
  either runs the whole (small) sets, as the runbook's "everything" does.

Outcomes: `launch` prints the base URL and the engine is up; `--dry-run` starts nothing; `doctor` and `run`
exit 0; `compare` exits with a verdict (0, 1 or 2, never 3 or 4) and `--json` writes the same exit code;
`report` writes report.html; `launch stop` stops. Lines run in document order. Where the text says to start
an engine first ("Start vLLM (section 2)"), the engine is started with the latest launch line for it above,
and a `launch` of an engine that is already up stops it first (the runbook's "restart with"). The README's
Quick start `vlmparity demo` is run by tests/test_demo.py::test_default_demo (slow), checked here to be the
same command.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import stat
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from test_runbook import RUNBOOK, command_lines, resolve

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```bash[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
SMALL_LIMIT = "12"
SMALL_SAMPLE = "30"

# One executable for the three fake tools; it dispatches on its own name.
SHIM = r"""
import json, os, sys

argv = sys.argv[1:]
name = os.path.basename(sys.argv[0])
with open(os.environ["DOCS_SHIM_LOG"], "a") as log:
    log.write(json.dumps([name, *argv]) + "\n")


def opt(flag, default=None):
    return argv[argv.index(flag) + 1] if flag in argv else default


def serve(personality, host, port, model, image_limit):
    config = os.path.join(os.environ["DOCS_SHIM_DIR"], f"sim-{port}.json")
    with open(config, "w") as fh:
        json.dump({"image_limit": image_limit} if personality == "vllm" else {}, fh)
    sim = [sys.executable, "-m", "vlmparity", "sim", "--personality", personality, "--host", host,
           "--port", str(port), "--model", model, "--config", config, "--zero-latency"]
    for path in json.loads(os.environ["DOCS_SIM_DATA"]):
        sim += ["--data", path]
    os.execv(sys.executable, sim)


if name == "optimum-cli":  # export openvino --model M --weight-format W --trust-remote-code TARGET
    os.makedirs(argv[-1], exist_ok=True)
    for f in json.loads(os.environ["DOCS_OV_FILES"]):
        open(os.path.join(argv[-1], f), "w").close()
elif name == "docker":
    if argv[:1] == ["run"]:  # run --rm --name N -u U -p P -v ... IMAGE --rest_port P --config_path C ...
        config = json.load(open(opt("--config_path")))
        model = config["model_config_list"][0]["config"]["name"]
        serve("ovms", "127.0.0.1", int(opt("--rest_port")), model, None)
elif argv[:2] == ["-m", "vllm.entrypoints.openai.api_server"]:
    limit = json.loads(opt("--limit-mm-per-prompt", "null"))
    serve("vllm", opt("--host"), int(opt("--port")), opt("--served-model-name"), (limit or {}).get("image"))
else:
    sys.exit(f"fake engine: unexpected call {argv}")
"""


def doc_commands(path: Path) -> list[tuple[int, list[str]]]:
    """(line, argv) of every `vlmparity` line in the file's bash blocks, in order."""
    text = path.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out += [(line, shlex.split(c)) for c in command_lines(textwrap.dedent(m.group("body")))]
    return out


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Machine:
    """A user's machine in a temp folder: HOME, PATH with the fake tools, state dir, working folder."""

    root: Path
    data: dict[str, Path]
    ports: dict[str, int] = field(default_factory=dict)  # "8000" -> free port
    up: dict[str, list[str]] = field(default_factory=dict)  # engine -> the launch argv it was started with
    last_launch: dict[str, list[str]] = field(default_factory=dict)
    executed: list[tuple[str, list[str], int]] = field(default_factory=list)  # (doc, argv, exit code)

    def __post_init__(self) -> None:
        from vlmparity.launch.ovms import VLM_FILES

        self.home = self.root / "home"
        self.work = self.root / "work"
        self.bin = self.root / "bin"
        self.shim_dir = self.root / "shim"
        for d in (self.home, self.work, self.bin, self.shim_dir):
            d.mkdir(parents=True)
        venv_bin = self.home / "venvs" / "vllm" / "bin"
        venv_bin.mkdir(parents=True)
        shim = self.shim_dir / "engine.py"
        shim.write_text(f"#!{sys.executable}\n{SHIM}")
        shim.chmod(shim.stat().st_mode | stat.S_IEXEC)
        for link in (venv_bin / "python", self.bin / "docker", self.bin / "optimum-cli"):
            link.symlink_to(shim)
        self.log = self.shim_dir / "calls.jsonl"
        self.log.touch()
        self.env = {
            **os.environ,
            "HOME": str(self.home),
            "PATH": f"{self.bin}{os.pathsep}{os.environ.get('PATH', '')}",
            "VLMPARITY_STATE_DIR": str(self.root / "state"),
            "DOCS_SHIM_LOG": str(self.log),
            "DOCS_SHIM_DIR": str(self.shim_dir),
            "DOCS_SIM_DATA": json.dumps([str(p) for p in self.data.values()]),
            "DOCS_OV_FILES": json.dumps(list(VLM_FILES)),
            "COLUMNS": "200",
        }
        self.env.pop("VLMPARITY_DEBUG", None)

    def port(self, doc_port: str) -> str:
        if doc_port not in self.ports:
            self.ports[doc_port] = free_port()
        return str(self.ports[doc_port])

    def substitute(self, argv: list[str]) -> list[str]:
        """The doc's argv as run here: ports, `~`, sizes, local data (see the module docstring)."""
        out: list[str] = []
        for i, token in enumerate(argv[1:]):
            prev = argv[i] if i else ""
            if prev == "--port" and token in ("8000", "9000"):
                token = self.port(token)
            token = re.sub(r"127\.0\.0\.1:(8000|9000)\b", lambda m: f"127.0.0.1:{self.port(m[1])}", token)
            if token.startswith("~/"):
                token = str(self.home / token[2:])
            if prev == "--limit":
                token = SMALL_LIMIT
            if prev == "--sample":
                token = SMALL_SAMPLE
            out.append(token)
        path = resolve(argv)[0]
        if path == ["run"] or (path == ["compare"] and "--endpoint" in argv):
            for task, folder in self.data.items():
                out += ["--data", f"{task}={folder}"]
        return out

    def vlmparity(self, args: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "vlmparity", *args],
            cwd=self.work,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def engine_calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def stop_everything(self) -> None:
        for state in sorted((self.root / "state").glob("*.json")):
            self.vlmparity(["launch", "stop", "--state-file", str(state), "--grace", "5"], timeout=60)


def engine_of(argv: list[str]) -> str | None:
    """The engine a command talks to or starts: by `launch X`, `--port`, or the URLs it names."""
    path = resolve(argv)[0]
    if path[:1] == ["launch"] and path[1:] in (["vllm"], ["ovms"]):
        return path[1]
    text = " ".join(argv)
    if path == ["launch", "stop"]:
        return {"8000": "vllm", "9000": "ovms"}[argv[argv.index("--port") + 1]]
    engines = [e for e, port in (("vllm", "8000"), ("ovms", "9000")) if f"127.0.0.1:{port}" in text]
    return engines[0] if len(engines) == 1 else None


def needs_engines(argv: list[str]) -> list[str]:
    text = " ".join(argv)
    return [e for e, port in (("vllm", "8000"), ("ovms", "9000")) if f"127.0.0.1:{port}" in text]


def execute(machine: Machine, doc: str, line: int, argv: list[str]) -> None:
    """Run one doc command as a user would at that point of the doc, and check its outcome."""
    path = resolve(argv)[0]
    where = f"{doc}:{line}: {shlex.join(argv)}"
    if path[:1] == ["launch"] and path[1:] in (["vllm"], ["ovms"]) and "--dry-run" not in argv:
        engine = path[1]
        if engine in machine.up:  # "restart with ...": stop the running one first
            launch(machine, machine.up[engine], "restart", 0, stop_only=True)
        launch(machine, argv, doc, line)
        return
    if path == ["launch", "stop"]:
        engine = engine_of(argv)
        assert engine is not None
        ensure_up(machine, engine)
    for engine in needs_engines(argv):
        ensure_up(machine, engine)
    args = machine.substitute(argv)
    proc = machine.vlmparity(args)
    machine.executed.append((doc, argv, proc.returncode))
    output = proc.stdout + proc.stderr
    if "--dry-run" in argv:
        assert proc.returncode == 0, f"{where}\n{output}"
        assert "nothing was started" in proc.stdout, where
    elif path == ["launch", "stop"]:
        assert proc.returncode == 0, f"{where}\n{output}"
        engine = engine_of(argv)
        assert engine is not None
        machine.up.pop(engine)
    elif path == ["compare"]:
        assert proc.returncode in (0, 1, 2), f"{where}\nexit {proc.returncode}\n{output[-4000:]}"
        assert "VERDICT" in proc.stdout, where
        if "--json" in argv:
            verdict = json.loads((machine.work / argv[argv.index("--json") + 1]).read_text())
            assert verdict["exit_code"] == proc.returncode, where
    elif path == ["report"]:
        assert proc.returncode == 0, f"{where}\n{output[-4000:]}"
        assert (machine.work / argv[2] / "report.html").is_file(), where
    else:  # doctor, run
        assert proc.returncode == 0, f"{where}\nexit {proc.returncode}\n{output[-4000:]}"


def launch(machine: Machine, argv: list[str], doc: str, line: int, *, stop_only: bool = False) -> None:
    path = resolve(argv)[0]
    engine = path[1]
    if stop_only:
        doc_port = argv[argv.index("--port") + 1]
        proc = machine.vlmparity(["launch", "stop", "--port", machine.port(doc_port), "--grace", "5"])
        assert proc.returncode == 0, proc.stderr
        machine.up.pop(engine)
        return
    proc = machine.vlmparity(machine.substitute(argv), timeout=300)
    machine.executed.append((doc, argv, proc.returncode))
    assert proc.returncode == 0, f"{doc}:{line}: {shlex.join(argv)}\n{proc.stderr[-4000:]}"
    doc_port = argv[argv.index("--port") + 1]
    suffix = "/v1" if engine == "vllm" else "/v3"
    assert proc.stdout.strip() == f"http://127.0.0.1:{machine.port(doc_port)}{suffix}"
    machine.up[engine] = argv
    machine.last_launch[engine] = argv


def ensure_up(machine: Machine, engine: str) -> None:
    """The doc's "start X (section N)": launch it again with the latest launch line for it, if it is down."""
    if engine not in machine.up:
        assert engine in machine.last_launch, f"no launch line for {engine} before it is needed"
        launch(machine, machine.last_launch[engine], "(again)", 0)


@pytest.fixture
def machine(tmp_path: Path, synth_mme_small: Path, synth_mmmu_small: Path) -> object:
    m = Machine(tmp_path, {"mme": synth_mme_small, "mmmu_val": synth_mmmu_small})
    try:
        yield m
    finally:
        m.stop_everything()


# --------------------------------------------------------------------------------------------- the runbook


@pytest.mark.slow
def test_every_runbook_command_runs_against_simulators(machine: Machine) -> None:
    commands = doc_commands(RUNBOOK)
    assert len(commands) >= 15
    for line, argv in commands:
        if argv[1:3] == ["launch", "vllm"] and "--chat-template" in argv:
            # the runbook's line above it writes the template with `python -c ...`: run that line too
            make_template(machine)
        execute(machine, "runbook", line, argv)
    # every command ran, in order, and each real launch reached the (fake) engine with its settings
    assert [(a, d) for d, a, _ in machine.executed if d == "runbook"] == [(a, "runbook") for _, a in commands]
    calls = machine.engine_calls()
    assert any(c[0] == "optimum-cli" and "fp16" in c for c in calls)
    assert any(c[0] == "docker" and "--verbose_response" in c for c in calls)
    assert any(c[0] == "python" and "float32" in c for c in calls)
    assert any(c[0] == "python" and str(machine.work / "llava-1.5-bos.jinja") in c for c in calls)
    assert machine.up == {}  # section 10 stopped both


def make_template(machine: Machine) -> None:
    text = RUNBOOK.read_text(encoding="utf-8")
    line = next(
        ln.strip() for ln in text.splitlines() if ln.strip().startswith("python -c") and "llava-1.5-bos" in ln
    )
    cmd = sys.executable + line[len("python") :]
    proc = subprocess.run(
        ["bash", "-c", cmd], cwd=machine.work, env=machine.env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (machine.work / "llava-1.5-bos.jinja").read_text().startswith("{{- bos_token -}}")


# ----------------------------------------------------------------------------------------------- the README


def test_every_readme_command_runs_against_simulators(machine: Machine) -> None:
    """The README's job: doctor both, then compare. The engines are simulators started beforehand (as the
    README assumes two running servers); vLLM with the image limit `doctor` recommends for MMMU (7)."""
    from vlmparity.sim import SimConfig, SimServer

    commands = doc_commands(README)
    assert [resolve(a)[0] for _, a in commands] == [["doctor"], ["doctor"], ["compare"]]
    data = list(machine.data.values())
    instant = {"time_scale": 0}
    vllm = SimConfig(
        personality="vllm", image_limit=7, data=data, port=int(machine.port("8000")), load=instant
    )  # type: ignore[arg-type]
    ovms = SimConfig(personality="ovms", data=data, port=int(machine.port("9000")), load=instant)  # type: ignore[arg-type]
    with SimServer(vllm), SimServer(ovms):
        for line, argv in commands:
            for engine in needs_engines(argv):
                machine.up[engine] = argv  # started outside the doc
            execute(machine, "README", line, argv)
    assert [c for _, _, c in machine.executed][:2] == [0, 0]
    assert (machine.work / "runs" / "llava").is_dir()


def test_readme_quick_start_demo_is_the_command_test_demo_runs() -> None:
    text = README.read_text(encoding="utf-8").split("## Quick start", 1)[1]
    first = re.search(r"```bash\n(.*?)\n", text)
    assert first is not None
    assert first.group(1).split(" && ")[-1] == "vlmparity demo"
    demo_test = (REPO / "tests" / "test_demo.py").read_text(encoding="utf-8")
    assert 'assert main(["demo"]) == 0' in demo_test  # test_default_demo: `vlmparity demo` in a fresh folder


def test_extraction_sees_only_bash_blocks_and_joins_continuations(tmp_path: Path) -> None:
    doc = tmp_path / "d.md"
    doc.write_text(
        "```bash\nvlmparity run --endpoint a=http://127.0.0.1:8000/v1 \\\n  --limit 250\n```\n"
        "```text\nvlmparity not-a-command\n```\n  ```bash\n  vlmparity report runs/x\n  ```\n"
    )
    assert [a for _, a in doc_commands(doc)] == [
        ["vlmparity", "run", "--endpoint", "a=http://127.0.0.1:8000/v1", "--limit", "250"],
        ["vlmparity", "report", "runs/x"],
    ]
    m = Machine.__new__(Machine)
    m.ports, m.home, m.data = {"8000": 4242}, tmp_path / "h", {"mme": tmp_path / "mme"}
    assert m.substitute(doc_commands(doc)[0][1]) == [
        "run", "--endpoint", "a=http://127.0.0.1:4242/v1", "--limit", SMALL_LIMIT, "--data", f"mme={tmp_path / 'mme'}",
    ]  # fmt: skip
