"""Start a server process detached, wait until it is ready, remember it in a state file, stop it by PID.

Shared by `launch/vllm.py` and `launch/ovms.py`. A plan (`LaunchPlan`) is pure data built from options; `start`
turns it into a running server and a `ServerState`, or into one clear `EndpointError` line.

`stop` signals only the process `start` started: the state file must be well formed (else one line, exit
4), and its PID must be a positive integer that is neither this process nor its process group, still
alive, the leader of its own process group, with the start time (/proc/PID/stat field 22) and command line
(/proc/PID/cmdline, taken once the server is ready) recorded at launch (else one line, exit 3). Nothing
is signalled otherwise.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from vlmparity.errors import ConfigError, EndpointError


@dataclass(frozen=True)
class ReadyCheck:
    """One readiness probe: GET `path` must answer 200 (and, with `model`, list that model id in `data`)."""

    path: str
    model: str | None = None
    # OVMS' /v1/config answers a map of servables; `config_model` asks that one to be AVAILABLE.
    config_model: str | None = None


@dataclass
class LaunchPlan:
    """Everything needed to start one server, and to show it with --dry-run."""

    engine: str  # "vllm" | "ovms"
    command: list[str]
    env: dict[str, str]  # only the variables set on top of the caller's environment
    origin: str  # http://HOST:PORT
    base_url: str  # what clients use: origin + /v1 (vLLM) or /v3 (OVMS)
    checks: list[ReadyCheck]
    log_path: Path
    state_path: Path
    model_name: str
    host: str
    port: int
    cwd: Path | None = None
    notes: list[str] = field(default_factory=list)
    files: dict[Path, str] = field(default_factory=dict)  # written before start (shown by --dry-run)
    container: str | None = None  # docker container name, removed again on stop


@dataclass
class ServerState:
    """What `launch stop` needs to stop a server started by `launch` (saved as JSON)."""

    engine: str
    pid: int
    start_ticks: int | None  # /proc start time, so a recycled PID is never killed
    base_url: str
    host: str
    port: int
    model_name: str
    log: str
    command: list[str]
    started_at: float
    container: str | None = None
    cmdline: list[str] | None = None  # /proc/PID/cmdline at launch: stop signals only this very process


# A PID is a positive int below the kernel's PID_MAX_LIMIT (2^22); allow the full 32-bit range.
_MAX_PID = 2**31 - 1
_STATE_TYPES: dict[str, tuple[type, ...]] = {
    "engine": (str,),
    "pid": (int,),
    "start_ticks": (int, type(None)),
    "base_url": (str,),
    "host": (str,),
    "port": (int,),
    "model_name": (str,),
    "log": (str,),
    "command": (list,),
    "started_at": (int, float),
    "container": (str, type(None)),
    "cmdline": (list, type(None)),
}


def state_dir() -> Path:
    """Where state files and logs go by default: $VLMPARITY_STATE_DIR or ~/.cache/vlmparity/servers."""
    env = os.environ.get("VLMPARITY_STATE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "vlmparity" / "servers"


def default_paths(engine: str, port: int) -> tuple[Path, Path]:
    """(log, state) file paths for a server of `engine` on `port`."""
    base = state_dir()
    return base / f"{engine}-{port}.log", base / f"{engine}-{port}.json"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(host: str, port: int) -> bool:
    """True when something already accepts connections on host:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def connect_host(host: str) -> str:
    """The address to probe for a server bound to `host` (a wildcard bind is probed on loopback)."""
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


def parse_extra_args(values: list[str] | None) -> list[str]:
    """`--extra-arg "--seed 0"` may hold several words: split each value like a shell would."""
    out: list[str] = []
    for value in values or []:
        try:
            out.extend(shlex.split(value))
        except ValueError as err:
            raise ConfigError(
                f"cannot parse --extra-arg {value!r}: {err}", hint="quote it as one shell word"
            ) from err
    return out


def format_plan(plan: LaunchPlan) -> str:
    """The exact environment and command of a plan, as shell lines a user can copy (for --dry-run)."""
    lines = [f"# vlmparity launch {plan.engine} --dry-run: nothing was started"]
    lines += [f"# {note}" for note in plan.notes]
    for path, text in plan.files.items():
        lines.append(f"# file {path}:")
        lines += [f"#   {line}" for line in text.rstrip("\n").splitlines()]
    if plan.env:
        lines.append("# environment")
        lines += [f"export {key}={shlex.quote(value)}" for key, value in plan.env.items()]
    lines.append("# command")
    if plan.cwd is not None:
        lines.append(f"cd {shlex.quote(str(plan.cwd))}")
    lines.append(f"{shlex.join(plan.command)} > {shlex.quote(str(plan.log_path))} 2>&1")
    lines.append("# ready when: " + "; ".join(describe_check(plan.origin, c) for c in plan.checks))
    lines.append(f"# base URL: {plan.base_url}")
    return "\n".join(lines) + "\n"


def describe_check(origin: str, check: ReadyCheck) -> str:
    """One readiness probe in words."""
    text = f"GET {origin}{check.path} -> 200"
    if check.model:
        text += f" listing {check.model!r}"
    if check.config_model:
        text += f" with {check.config_model!r} AVAILABLE"
    return text


def probe(origin: str, check: ReadyCheck, timeout: float = 3.0) -> tuple[bool, str]:
    """Run one readiness probe: (passed, what was seen)."""
    import httpx

    url = origin + check.path
    try:
        resp = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as err:
        return False, f"{check.path}: {type(err).__name__}"
    if resp.status_code != 200:
        return False, f"{check.path}: HTTP {resp.status_code}"
    if check.model is None and check.config_model is None:
        return True, f"{check.path}: 200"
    try:
        body = resp.json()
    except ValueError:
        return False, f"{check.path}: not JSON"
    if check.model is not None:
        ids = (
            [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
            if isinstance(body, dict)
            else []
        )
        if check.model not in ids:
            return False, f"{check.path}: model {check.model!r} not listed (has {ids})"
    if check.config_model is not None:
        entry = body.get(check.config_model) if isinstance(body, dict) else None
        states = [
            v.get("state") for v in (entry or {}).get("model_version_status", []) if isinstance(v, dict)
        ]
        if "AVAILABLE" not in states:
            return False, f"{check.path}: {check.config_model!r} state {states or 'missing'}"
    return True, f"{check.path}: ok"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_EXCEPTION = re.compile(r"\b([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)|Traceback)\b[:(]?")
_GENERIC = ("see root cause above", "see stack trace", "engine core initialization failed", "traceback (most")
_PREFIX = re.compile(
    r"^(?:\([\w ]+ pid=\d+\)\s*)?(?:(?:INFO|WARNING|ERROR|DEBUG|CRITICAL)\s+[\d-]+\s+[\d:.]+\s+\[[^\]]*\]\s*)?"
)


def key_log_message(text: str, max_chars: int = 300) -> str:
    """The line of a startup log that best says why the server died (its last real exception, else the last line).

    Indented lines right after the exception line are its continuation (pydantic puts the reason there).
    """
    raw = [_ANSI.sub("", ln).rstrip() for ln in text.splitlines()[-200:]]
    lines = [(ln[:1].isspace(), _PREFIX.sub("", ln.strip())) for ln in raw if ln.strip()]
    if not lines:
        return "the log is empty"
    found = [i for i, (_, ln) in enumerate(lines) if _EXCEPTION.search(ln) and not ln.startswith("File ")]
    specific = [i for i in found if not any(g in lines[i][1].lower() for g in _GENERIC)]
    pick = specific[-1] if specific else found[-1] if found else len(lines) - 1
    best = lines[pick][1]
    for indented, more in lines[pick + 1 : pick + 3]:
        if not indented or more.startswith(("File ", "For further information")):
            break
        best = f"{best}: {more}"
    return best if len(best) <= max_chars else best[: max_chars - 3] + "..."


def read_log_tail(path: Path, max_bytes: int = 65536) -> str:
    """The end of a log file (empty if it does not exist)."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            return fh.read().decode("utf-8", errors="replace")
    except OSError:
        return ""


def proc_start_ticks(pid: int) -> int | None:
    """The kernel's start time of `pid` (field 22 of /proc/PID/stat), or None where /proc is missing."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after its closing parenthesis.
    return int(stat.rsplit(")", 1)[1].split()[19])


def pid_alive(pid: int) -> bool:
    """True while `pid` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def group_alive(pgid: int) -> bool:
    """True while any process of process group `pgid` is alive (zombies excepted where /proc shows them)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def stop_group(pgid: int, grace: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    """SIGTERM the process group started by `start` (its leader's PID), SIGKILL what is left after `grace` s."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if proc is not None:
                proc.poll()  # reap our own child so that it does not linger as a zombie
            if not group_alive(pgid):
                return
            time.sleep(0.1)
    if proc is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=1)


def write_state(path: Path, state: ServerState) -> None:
    """Save a server's state as JSON (atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(asdict(state), indent=2) + "\n")
    tmp.replace(path)


def read_state(path: Path) -> ServerState:
    """Load a state file written by `write_state`; every field is type- and range-checked (exit 4)."""
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise ConfigError(
            f"no server state file at {path}", hint="was the server started with vlmparity launch?"
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read the state file {path}: {err}") from err
    except ValueError as err:
        raise ConfigError(f"state file {path} is not a vlmparity server state: not JSON ({err})") from err
    problem = _state_problem(data)
    if problem is not None:
        raise ConfigError(
            f"state file {path} is not a vlmparity server state: {problem}; nothing was signalled",
            hint="it was not written by `vlmparity launch`; stop the server by hand",
        )
    return ServerState(**data)


def _state_problem(data: Any) -> str | None:
    """Why `data` is not a state `write_state` could have written, or None."""
    if not isinstance(data, dict):
        return f"JSON {type(data).__name__}, not an object"
    required = {f for f in _STATE_TYPES if f not in ("container", "cmdline")}
    missing = sorted(required - set(data))
    if missing:
        return f"missing {', '.join(missing)}"
    unknown = sorted(set(data) - set(_STATE_TYPES))
    if unknown:
        return f"unknown field(s) {', '.join(unknown)}"
    for name, types in _STATE_TYPES.items():
        value = data.get(name)
        if name in data and (isinstance(value, bool) or not isinstance(value, types)):
            return f"{name} is {type(value).__name__} {json.dumps(value)[:40]}"
    pid = data["pid"]
    if not 1 < pid <= _MAX_PID:
        return f"pid {pid} is not the PID of a process vlmparity could have started (2..{_MAX_PID})"
    ticks = data["start_ticks"]
    if ticks is not None and not 0 <= ticks < 2**63:
        return f"start_ticks {ticks} out of range"
    for name in ("command", "cmdline"):
        items = data.get(name)
        if items is not None and not all(isinstance(x, str) for x in items):
            return f"{name} holds something else than strings"
    return None


def proc_cmdline(pid: int) -> list[str] | None:
    """The command line of `pid` from /proc/PID/cmdline, or None where it cannot be read."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    # Empty for a zombie, or for a moment after exec (the parent may see the exec before the kernel
    # has set up the new command line): unknown, not "no command".
    return [part.decode("utf-8", "surrogateescape") for part in raw.split(b"\0")[:-1]] or None


def proc_pgid(pid: int) -> int | None:
    """The process group of `pid` (field 5 of /proc/PID/stat), or None."""
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, IndexError, ValueError):
        return None


def not_ours(state: ServerState) -> str | None:
    """Why the live process `state.pid` is not provably the server `start` started, or None when it is."""
    pid = state.pid
    if pid in (os.getpid(), os.getpgrp(), os.getppid()):
        return f"pid {pid} is this very process or its own group"
    if state.start_ticks is None or state.cmdline is None:
        return "the state file records no start time or command line to check the process against"
    ticks, cmdline, pgid = proc_start_ticks(pid), proc_cmdline(pid), proc_pgid(pid)
    if ticks is None or cmdline is None or pgid is None:
        return f"/proc/{pid} cannot be read to check it is the server started"
    if ticks != state.start_ticks:
        return (
            f"pid {pid} started at another time ({ticks} ticks, not {state.start_ticks}): the PID was reused"
        )
    if cmdline != state.cmdline:
        shown = shlex.join(cmdline)
        return f"pid {pid} runs another command ({shown[:80]!r})"
    if pgid != pid or pgid == os.getpgrp():
        return f"pid {pid} does not lead its own process group"
    return None


def state_is_running(state: ServerState) -> bool:
    """True when the recorded PID is alive and still the process that was started (not a recycled PID)."""
    if not pid_alive(state.pid):
        return False
    ticks = proc_start_ticks(state.pid)
    return state.start_ticks is None or ticks is None or ticks == state.start_ticks


def check_not_running(plan: LaunchPlan) -> None:
    """Refuse to start over a live server recorded in the same state file, or on a port already taken."""
    if plan.state_path.exists():
        with contextlib.suppress(ConfigError):
            old = read_state(plan.state_path)
            if state_is_running(old):
                raise EndpointError(
                    f"a {old.engine} server started by vlmparity is already running at {old.base_url} (pid {old.pid})",
                    hint=f"stop it first: vlmparity launch stop --state-file {plan.state_path}",
                )
    if port_in_use(connect_host(plan.host), plan.port):
        raise EndpointError(
            f"port {plan.port} on {plan.host} is already in use",
            hint="choose another with --port, or --port 0 for a free one",
        )


def write_files(files: dict[Path, str]) -> None:
    """Write the files a plan needs (config, graph) before the server starts."""
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def start(plan: LaunchPlan, ready_timeout: float, poll: float = 0.5) -> ServerState:
    """Start the plan's command detached (own process group, output to its log), wait until ready.

    Returns the saved state. A process that exits during startup, or that is not ready after `ready_timeout`
    seconds (then it is stopped), raises one `EndpointError` line naming the cause and the log.
    """
    check_not_running(plan)
    write_files(plan.files)
    plan.log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **plan.env}
    with plan.log_path.open("wb") as log:
        try:
            proc = subprocess.Popen(
                plan.command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=plan.cwd,
                start_new_session=True,  # its own process group: stop kills the engine's worker processes too
            )
        except OSError as err:
            raise EndpointError(
                f"cannot start {plan.engine}: {plan.command[0]}: {err.strerror or err}",
                hint="check the executable path (--python / --ovms-binary / docker)",
            ) from err
    state = ServerState(
        engine=plan.engine,
        pid=proc.pid,
        start_ticks=proc_start_ticks(proc.pid),
        cmdline=proc_cmdline(proc.pid),  # Popen returns once the command was exec'd
        base_url=plan.base_url,
        host=plan.host,
        port=plan.port,
        model_name=plan.model_name,
        log=str(plan.log_path),
        command=plan.command,
        started_at=time.time(),
        container=plan.container,
    )
    write_state(plan.state_path, state)
    try:
        wait_ready(plan, proc, ready_timeout, poll)
        # A wrapper script may have exec'd the engine since: record the command line it now runs.
        state.cmdline = proc_cmdline(proc.pid) or state.cmdline
        write_state(plan.state_path, state)
    except BaseException:
        stop_group(proc.pid, grace=5.0, proc=proc)
        remove_container(plan.container)
        plan.state_path.unlink(missing_ok=True)
        raise
    return state


def wait_ready(plan: LaunchPlan, proc: subprocess.Popen[bytes], timeout: float, poll: float = 0.5) -> None:
    """Poll the plan's checks in order until all pass; raise if the process dies or time runs out."""
    deadline = time.monotonic() + timeout
    seen = "no answer yet"
    while True:
        code = proc.poll()
        if code is not None:
            message = key_log_message(read_log_tail(plan.log_path))
            raise EndpointError(
                f"{plan.engine} exited with code {code} during startup: {message}",
                hint=f"full log: {plan.log_path}",
            )
        passed = True
        for check in plan.checks:
            ok, seen = probe(plan.origin, check)
            if not ok:
                passed = False
                break
        if passed:
            return
        if time.monotonic() >= deadline:
            raise EndpointError(
                f"{plan.engine} was not ready after {timeout:g} s (last probe {seen}); it was stopped",
                hint=f"see its log {plan.log_path}; a slow machine may need a larger --ready-timeout",
            )
        time.sleep(poll)


def remove_container(name: str | None) -> None:
    """Remove a docker container left by a docker-run server (no-op without docker or a name)."""
    if not name:
        return
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True, timeout=30, check=False)


def stop(state_path: Path, grace: float = 15.0) -> str:
    """Stop the server recorded in `state_path` and remove the file; returns what was done, in words.

    Signals nothing unless the process is provably the one `start` started (`not_ours`): a malformed
    state file is a ConfigError (exit 4), a live PID that is another process an EndpointError (exit 3)."""
    state = read_state(state_path)
    if state.pid in (os.getpid(), os.getpgrp(), os.getppid()):
        # Checked before liveness: a state file naming the caller or its group is never a server's,
        # even when the group's leader has exited (the group's other members are still alive).
        raise EndpointError(
            f"not stopping pid {state.pid} from {state_path}: it is this very process or its own group; "
            "nothing was signalled",
            hint="the state file is not one `vlmparity launch` wrote: delete it",
        )
    if not pid_alive(state.pid):
        done = f"{state.engine} at {state.base_url} (pid {state.pid}) was not running any more"
    else:
        why = not_ours(state)
        if why is not None:
            raise EndpointError(
                f"not stopping pid {state.pid} from {state_path}: {why}; nothing was signalled",
                hint="if the server vlmparity started is gone, delete the state file",
            )
        stop_group(state.pid, grace=grace)
        done = f"stopped {state.engine} at {state.base_url} (pid {state.pid})"
    if state.container is not None and state.container.startswith("vlmparity-"):
        remove_container(state.container)
    state_path.unlink(missing_ok=True)
    return done


def find_state_files(port: int | None = None) -> list[Path]:
    """State files in the default state folder (those for `port` only, when given)."""
    folder = state_dir()
    if not folder.is_dir():
        return []
    pattern = f"*-{port}.json" if port is not None else "*.json"
    return sorted(folder.glob(pattern))


def info(message: str) -> None:
    """A progress line on stderr (stdout carries only the base URL, for scripts)."""
    sys.stderr.write(f"vlmparity: {message}\n")
    sys.stderr.flush()
