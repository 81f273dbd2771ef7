"""`launch stop` signals only the process `launch` started (issue 11 item 5).

A state file is data a user (or anything else) can edit: every field is checked, and the live process must
be the very one recorded (PID, start time, command line, its own process group), else one line and nothing
is signalled. The CLI cases run in a session of their own, so a `killpg(0)` or a kill of the caller's
group would show as the command dying from a signal (a negative return code), not as exit 3/4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from vlmparity.errors import ConfigError, EndpointError
from vlmparity.launch import common

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def started(proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
    """`proc` once the kernel shows its command line (exec finishes a moment after Popen returns)."""
    for _ in range(1000):
        if common.proc_cmdline(proc.pid):
            return proc
        time.sleep(0.01)
    raise AssertionError("the process never showed a command line")


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process in a session of its own, as `launch` starts servers."""
    proc = started(subprocess.Popen(SLEEPER, start_new_session=True))
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait()


def state_of(proc: subprocess.Popen[bytes], **changes: Any) -> dict[str, Any]:
    """The state `launch` records for `proc` (its real start time and command line), with `changes`."""
    ticks = common.proc_start_ticks(proc.pid)
    cmdline = common.proc_cmdline(proc.pid)
    assert ticks is not None and cmdline == SLEEPER  # /proc says what we started, independently
    state = common.ServerState(
        engine="vllm",
        pid=proc.pid,
        start_ticks=ticks,
        base_url="http://127.0.0.1:1/v1",
        host="127.0.0.1",
        port=1,
        model_name="m",
        log="",
        command=list(SLEEPER),
        started_at=0.0,
        cmdline=cmdline,
    )
    return {**asdict(state), **changes}


def write(path: Path, doc: Any) -> Path:
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc), encoding="utf-8")
    return path


def stop_cli(path: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "VLMPARITY_STATE_DIR": str(path.parent / "state")}
    env.pop("VLMPARITY_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", "launch", "stop", "--state-file", str(path), "--grace", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        start_new_session=True,  # a kill of "its own group" would kill only this command
    )


def one_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    shown = f"exit {proc.returncode}\n{proc.stderr}"
    assert proc.returncode == code, shown  # a negative code: the command killed itself
    assert "Traceback" not in proc.stderr, shown
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("vlmparity: error:"), shown
    for needle in needles:
        assert needle in lines[0], shown
    return lines[0]


@pytest.mark.parametrize(
    ("pid", "needle"),
    [
        (0, "pid 0 is not the PID"),
        (-1, "pid -1 is not the PID"),
        (1, "pid 1 is not the PID"),
        (2**64, "is not the PID"),
        ("abc", "pid is str"),
        (True, "pid is bool"),
        (None, "pid is NoneType"),
        (12.5, "pid is float"),
    ],
)
def test_malformed_pid_is_exit_4_and_nothing_signalled(
    tmp_path: Path, sleeper: subprocess.Popen[bytes], pid: Any, needle: str
) -> None:
    path = write(tmp_path / "s.json", state_of(sleeper, pid=pid))
    one_error(stop_cli(path), 4, needle, "nothing was signalled")
    assert sleeper.poll() is None
    assert path.exists()  # kept: it is not ours to delete


@pytest.mark.parametrize(
    ("doc", "needle"),
    [
        ("{not json", "not JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('"a string"', "JSON str, not an object"),
        ({"pid": 123}, "missing"),
    ],
)
def test_malformed_state_file_is_exit_4(tmp_path: Path, doc: Any, needle: str) -> None:
    path = write(tmp_path / "s.json", doc)
    one_error(stop_cli(path), 4, needle)
    assert path.exists()


def test_wrong_field_types_are_exit_4(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    for changes, needle in (
        ({"command": [1, 2]}, "command holds something else"),
        ({"start_ticks": "7"}, "start_ticks is str"),
        ({"start_ticks": -5}, "start_ticks -5 out of range"),
        ({"surprise": 1}, "unknown field(s) surprise"),
    ):
        path = write(tmp_path / "s.json", state_of(sleeper, **changes))
        one_error(stop_cli(path), 4, needle)
    assert sleeper.poll() is None


def test_other_command_line_is_exit_3(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path = write(tmp_path / "s.json", state_of(sleeper, cmdline=["vllm", "serve", "m"]))
    one_error(stop_cli(path), 3, "runs another command", "nothing was signalled")
    assert sleeper.poll() is None


def test_reused_pid_is_exit_3(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    ticks = common.proc_start_ticks(sleeper.pid)
    assert ticks is not None
    path = write(tmp_path / "s.json", state_of(sleeper, start_ticks=ticks + 1))
    one_error(stop_cli(path), 3, "the PID was reused", "nothing was signalled")
    assert sleeper.poll() is None


def test_state_without_cmdline_is_not_trusted(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    doc = state_of(sleeper)
    del doc["cmdline"]  # a state written before command lines were recorded, or by hand
    path = write(tmp_path / "s.json", doc)
    one_error(stop_cli(path), 3, "records no start time or command line")
    assert sleeper.poll() is None


def test_own_process_and_group_are_never_signalled(tmp_path: Path) -> None:
    me = os.getpid()
    for pid in {me, os.getpgrp()}:
        ticks, cmdline = common.proc_start_ticks(pid), common.proc_cmdline(pid)
        doc = {
            **state_of_nothing(),
            "pid": pid,
            "start_ticks": ticks,
            "cmdline": cmdline,
            "command": cmdline or [],
        }
        path = write(tmp_path / "s.json", doc)
        with pytest.raises(EndpointError, match="this very process or its own group"):
            common.stop(path, grace=0.1)
        assert path.exists()
    # still alive to assert this


def state_of_nothing() -> dict[str, Any]:
    return {
        "engine": "vllm",
        "pid": 2,
        "start_ticks": 0,
        "base_url": "http://127.0.0.1:1/v1",
        "host": "127.0.0.1",
        "port": 1,
        "model_name": "m",
        "log": "",
        "command": [],
        "started_at": 0.0,
    }


def test_the_callers_parent_is_never_signalled(tmp_path: Path) -> None:
    """The CLI's parent (this test process) with its real start time and command line: refused."""
    me = os.getpid()
    cmdline = common.proc_cmdline(me)
    doc = {**state_of_nothing(), "pid": me, "start_ticks": common.proc_start_ticks(me), "cmdline": cmdline}
    path = write(tmp_path / "s.json", doc)
    one_error(stop_cli(path), 3, "this very process or its own group")


def test_the_started_process_is_stopped(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path = write(tmp_path / "s.json", state_of(sleeper))
    proc = stop_cli(path)
    assert proc.returncode == 0, proc.stderr
    assert f"stopped vllm at http://127.0.0.1:1/v1 (pid {sleeper.pid})" in proc.stderr
    sleeper.wait(timeout=30)  # signalled: it ends
    assert not path.exists()


def test_a_dead_pid_only_clears_the_state(tmp_path: Path) -> None:
    proc = started(subprocess.Popen(SLEEPER, start_new_session=True))
    doc = state_of(proc)
    proc.kill()
    proc.wait()
    path = write(tmp_path / "s.json", doc)
    assert "was not running any more" in common.stop(path, grace=0.1)
    assert not path.exists()


def test_read_state_round_trips_what_start_writes(tmp_path: Path, sleeper: subprocess.Popen[bytes]) -> None:
    path = tmp_path / "s.json"
    common.write_state(path, common.ServerState(**state_of(sleeper)))
    assert common.read_state(path).cmdline == SLEEPER
    with pytest.raises(ConfigError):
        common.read_state(write(tmp_path / "bad.json", {"pid": "1"}))
