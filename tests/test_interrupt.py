"""Ctrl-C, SIGTERM, a dying store writer and a locked output folder, as a user meets them.

Each test starts `python -m vlmparity run` in a subprocess against a hostile server (tests/badinput's
FakeServer: answers a few requests, then hangs, or hangs from the start), waits for a condition (answers
in the store, requests in flight), then signals it or lets it fail, and checks what the user is promised
(docs/user-guide.md "What is guaranteed"): the exit code (130 for SIGINT, 143 for SIGTERM, 3 for a
store failure), one error line and no traceback, run.json's status, and that every answer the server
gave before is in the store. Nothing waits on a fixed sleep; the only times are generous timeouts.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import pytest

from badinput_support import FakeServer, mme_rows, write_mme

TIMEOUT_S = 120.0  # generous: a run that does not end by then hangs
FORBIDDEN = ("Traceback (most recent call last)", "exception was never retrieved", "Exception ignored in")


@pytest.fixture(scope="module")
def mme(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six MME questions (three image pairs)."""
    return write_mme(tmp_path_factory.mktemp("mme"), mme_rows())


def _cmd(*args: str, code: str | None = None) -> list[str]:
    if code is None:
        return [sys.executable, "-m", "vlmparity", *args]
    return [sys.executable, "-c", code + "\nfrom vlmparity.cli import main\nmain()\n", *args]


def _run_args(url: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "--tasks", "mme", "--data", f"mme={data}", "-e", f"a={url}", "-o", str(out),
            "--ready-timeout", "10", "--max-retries", "0", *extra]  # fmt: skip


def _wait(what: str, cond: Callable[[], bool], proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not cond():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"the run ended (exit {proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _stored(out: Path) -> dict[str, tuple[str, str | None]]:
    """request_hash -> (outcome, text) of every stored result (read-only, never creates the store)."""
    db = out / "vlmparity.sqlite"
    if not db.exists():
        return {}
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)) as con:
            rows = con.execute("SELECT request_hash, outcome, text FROM results").fetchall()
    except sqlite3.OperationalError:  # the schema is being created
        return {}
    return {h: (o, t) for h, o, t in rows}


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(
            f"still running {TIMEOUT_S:g} s after the signal (hung):\n{err[-3000:]}"
        ) from None
    both = out + err
    for marker in FORBIDDEN:
        assert marker not in both, f"{marker!r} in the output:\n{err[-3000:]}"
    return proc.returncode, out, err


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("vlmparity: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], err[-3000:]
    return errors[0]


@contextmanager
def _popen(cmd: list[str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL,
        env={**os.environ, "NO_COLOR": "1", "COLUMNS": "200"},
    )  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def _run_json(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "run.json").read_text(encoding="utf-8"))
    return doc


# ----- signals while requests are in flight against a server that stopped answering ----------------------


@pytest.mark.parametrize(("signum", "code", "said"), [(signal.SIGINT, 130, "interrupted;"),
                                                      (signal.SIGTERM, 143, "interrupted by SIGTERM;")])  # fmt: skip
def test_signal_with_requests_hanging_ends_the_run_and_keeps_the_answers(
    mme: Path, tmp_path: Path, signum: int, code: int, said: str
) -> None:
    out = tmp_path / "out"
    with (
        FakeServer("hang", good=3) as server,
        _popen(_cmd(*_run_args(server.url, mme, out, "-c", "2"))) as proc,
    ):
        # three answers stored, and requests beyond them sent and hanging
        _wait("3 answers stored and a 4th request hanging",
              lambda: len(_stored(out)) >= 3 and len(server.hashes) >= 4, proc)  # fmt: skip
        before = _stored(out)
        proc.send_signal(signum)
        returncode, _, err = _finish(proc)
    assert returncode == code, err[-3000:]
    line = _error_line(err)
    assert line.startswith(f"vlmparity: error: {said} every answer received so far is saved in {out}"), line
    doc = _run_json(out)
    assert doc["status"] == "interrupted" and doc["signal"] == signal.Signals(signum).name, doc.get("status")
    assert doc["finished"] is None and "interrupted" in doc["failure"]
    after = _stored(out)
    assert before.items() <= after.items()
    assert {h for h in server.answered} <= {h for h, (o, _) in after.items() if o == "ok"}
    assert not list(out.rglob(".*.tmp*")), "a temporary file was left behind"


def test_sigterm_while_the_server_never_answers_the_probe(mme: Path, tmp_path: Path) -> None:
    """The server accepts connections and answers nothing, not even /v1/models: SIGTERM still ends the
    run (nothing was sent, so nothing is stored and run.json is not written by this invocation)."""
    out = tmp_path / "out"
    with FakeServer("hang_all") as server:
        args = _run_args(server.url, mme, out)
        args[args.index("--ready-timeout") + 1] = "3600"
        with _popen(_cmd(*args)) as proc:
            _wait("the probe to reach the server", lambda: server.requests > 0, proc)
            proc.send_signal(signal.SIGTERM)
            returncode, _, err = _finish(proc)
    assert returncode == 143, err[-3000:]
    assert "interrupted by SIGTERM" in _error_line(err)
    assert not (out / "run.json").exists()


def test_sigterm_while_another_connection_holds_the_store_locked(mme: Path, tmp_path: Path) -> None:
    """Another program holds a write transaction on the store: the writer waits on SQLite's lock (up to
    60 s). SIGTERM does not wait for it: run.json says interrupted and the answers committed before stay."""
    out = tmp_path / "out"
    with FakeServer("good", good=10**6) as server:
        slow = _run_args(server.url, mme, out, "-c", "1")
        code = (
            "import time, vlmparity.store as s\n"
            "_orig = s.ResultWriter._commit\n"
            "def _slow(self, conn, batch):\n"
            "    _orig(self, conn, batch)\n"
            "    time.sleep(0.3)\n"  # one answer per commit, so that the lock lands mid-run
            "s.ResultWriter._commit = _slow\n"
        )
        with _popen(_cmd(*slow, code=code)) as proc:
            _wait("2 answers stored", lambda: len(_stored(out)) >= 2, proc)
            with closing(sqlite3.connect(out / "vlmparity.sqlite", timeout=30, isolation_level=None)) as con:
                con.execute("BEGIN IMMEDIATE")  # the writer cannot commit any more
                before = _stored(out)
                # an answer the server gave that the writer cannot commit now: it waits on the lock
                _wait("an answer waiting for the lock", lambda: len(server.answered) > len(before), proc)
                proc.send_signal(signal.SIGTERM)
                returncode, _, err = _finish(proc)
                con.execute("ROLLBACK")
    assert returncode == 143, err[-3000:]
    assert "interrupted by SIGTERM" in _error_line(err)
    assert _run_json(out)["status"] == "interrupted"
    assert before.items() <= _stored(out).items()


# ----- the store writer fails on its own ---------------------------------------------------------------------

# The third answer's text is one SQLite cannot encode (a lone surrogate: UnicodeEncodeError in the writer
# thread, not an sqlite3 error). Injected after the client has parsed the reply, so that it tests the
# writer whatever the client does with such text.
_UNSTORABLE_TEXT = """
import dataclasses
import vlmparity.runner.engine as r
_Record = r.ResultRecord
_made = []
def _poisoned(*args, **kw):
    rec = _Record(*args, **kw)
    _made.append(rec)
    return dataclasses.replace(rec, text="Ye\\ud800s") if len(_made) == 3 else rec
r.ResultRecord = _poisoned
"""


@pytest.mark.parametrize("concurrency", ["1", "4"])
def test_writer_refusing_an_answer_is_one_line_exit_3_and_keeps_the_other_answers(
    mme: Path, tmp_path: Path, concurrency: str
) -> None:
    out = tmp_path / "out"
    args = _run_args("{url}", mme, out, "-c", concurrency)
    with FakeServer("good", good=10**6) as server:
        cmd = _cmd(*[a.replace("{url}", server.url) for a in args], code=_UNSTORABLE_TEXT)
        with _popen(cmd) as proc:
            returncode, _, err = _finish(proc)
    assert returncode == 3, err[-3000:]
    line = _error_line(err)
    assert "cannot write to the run store" in line and "text is not valid Unicode" in line, line
    assert "UnicodeEncodeError" in line
    stored = _stored(out)
    # every answer but the refused one is stored: the writer saved what it could
    assert len(stored) == len(set(server.answered)) - 1, (len(stored), len(server.answered))
    assert all(o == "ok" for o, _ in stored.values())
    doc = _run_json(out)
    assert doc["status"] == "failed" and "not valid Unicode" in doc["failure"]


# ----- the output folder lock -----------------------------------------------------------------------------


def test_second_run_on_the_same_folder_stops_at_once_naming_the_pid(mme: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with (
        FakeServer("hang", good=2) as server,
        _popen(_cmd(*_run_args(server.url, mme, out, "-c", "1"))) as first,
    ):
        # two answered, the third hanging: with one request at a time the first run sends nothing more
        _wait("the first run to send", lambda: len(server.hashes) >= 3, first)
        sent = server.requests
        second = subprocess.run(
            _cmd(*_run_args(server.url, mme, out)), capture_output=True, text=True, timeout=TIMEOUT_S
        )
        assert second.returncode == 3, second.stderr
        line = _error_line(second.stderr)
        assert f"is in use by `vlmparity run` (pid {first.pid})" in line, line
        assert server.requests == sent, "the second run probed or sent requests"
        # compare --endpoint writes a run too: refused the same way
        both = ["compare", "-e", f"a={server.url}", "-e", f"b={server.url}", "--tasks", "mme", "--data",
                f"mme={mme}", "-o", str(out)]  # fmt: skip
        compare = subprocess.run(_cmd(*both), capture_output=True, text=True, timeout=TIMEOUT_S)
        assert compare.returncode == 3, compare.stderr
        assert f"is in use by `vlmparity run` (pid {first.pid})" in _error_line(compare.stderr)
        assert server.requests == sent, "compare --endpoint probed or sent requests"
        # readers of the folder are told it is being written, naming the same pid
        for argv in (["compare", str(out)], ["report", str(out)]):
            reader = subprocess.run(_cmd(*argv), capture_output=True, text=True, timeout=TIMEOUT_S)
            assert reader.returncode == 3, reader.stderr
            assert f"is being written by `vlmparity run` (pid {first.pid})" in _error_line(reader.stderr)
        first.send_signal(signal.SIGTERM)
        assert _finish(first)[0] == 143
    # SIGKILL leaves no stale lock: the lock is the open file, which dies with the process (each later
    # server listens on another port: the run continues on purpose against it)
    moved = "--allow-identity-change"
    with FakeServer("hang", good=2) as server, _popen(_cmd(*_run_args(server.url, mme, out, moved))) as third:
        _wait("the third run to send", lambda: len(server.hashes) >= 1, third)
        third.kill()
        third.communicate()
    with FakeServer("good") as server:
        again = subprocess.run(
            _cmd(*_run_args(server.url, mme, out, moved)), capture_output=True, text=True, timeout=TIMEOUT_S
        )
    assert again.returncode == 0, again.stderr[-3000:]
    assert _run_json(out)["status"] == "complete"


# The store writer stops (an I/O error, as SQLite reports a failing disk) once the file FLAG exists: the
# test creates it when requests are hanging on the server, so nothing else can trigger a commit.
_WRITER_DIES_ON_FLAG = """
import os, sqlite3, threading, time
import vlmparity.store as s
_init = s.ResultWriter.__init__
def _watched(self, *args, **kw):
    _init(self, *args, **kw)
    def watch():
        while not os.path.exists(FLAG):
            time.sleep(0.01)
        self._stop_with(sqlite3.OperationalError("disk I/O error"))
    threading.Thread(target=watch, daemon=True).start()
s.ResultWriter.__init__ = _watched
"""


def test_store_stopping_while_requests_hang_ends_the_run_without_waiting_for_them(
    mme: Path, tmp_path: Path
) -> None:
    """The store writer stops while requests hang on a server that stopped answering: no answer can be
    stored any more, so the run ends with the store's error instead of waiting out --timeout (600 s)."""
    out = tmp_path / "out"
    flag = tmp_path / "writer-dies"
    args = _run_args("{url}", mme, out, "-c", "4")
    code = f"FLAG = {str(flag)!r}\n" + _WRITER_DIES_ON_FLAG
    with (
        FakeServer("hang", good=2) as server,
        _popen(_cmd(*[a.replace("{url}", server.url) for a in args], code=code)) as proc,
    ):
        _wait("2 answers stored and 2 requests hanging",
              lambda: len(_stored(out)) >= 2 and len(server.hashes) >= 4, proc)  # fmt: skip
        flag.touch()
        returncode, _, err = _finish(proc)
    assert returncode == 3, err[-3000:]
    line = _error_line(err)
    assert "cannot write to the run store" in line and "disk I/O error" in line, line
    assert len(_stored(out)) == 2
    assert _run_json(out)["status"] == "failed"


# The lmms-eval files are being written (the store is complete): the writing waits until the test has
# signalled the process, which then lands in synchronous code rather than in the event loop.
_SLOW_OUTPUTS = """
import os, time
import vlmparity.report.run_summary as rs
_write = rs.write_endpoint_outputs
def _slow(*args, **kw):
    open(ENTERED, "w").close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        time.sleep(0.01)
    return _write(*args, **kw)
rs.write_endpoint_outputs = _slow
"""


def test_sigterm_while_writing_the_output_files(mme: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    entered = tmp_path / "entered"
    args = _run_args("{url}", mme, out, "--log-samples")
    code = f"ENTERED = {str(entered)!r}\n" + _SLOW_OUTPUTS
    with (
        FakeServer("good") as server,
        _popen(_cmd(*[a.replace("{url}", server.url) for a in args], code=code)) as proc,
    ):
        _wait("the output files to be written", entered.exists, proc)
        proc.send_signal(signal.SIGTERM)
        returncode, _, err = _finish(proc)
    assert returncode == 143, err[-3000:]
    assert "interrupted by SIGTERM" in _error_line(err)
    assert _run_json(out)["status"] == "interrupted"
    assert [o for o, _ in _stored(out).values()] == ["ok"] * 6
    assert not list(out.rglob(".*.tmp*")), "a temporary file was left behind"
