"""The store writer, interruptions, the folder lock and file-system errors, piece by piece (issue 11).

The end-to-end versions (a real `vlmparity run` signalled, a second run refused) are in
tests/test_interrupt.py; the one-line cases in tests/badinput/cases.yaml. Here: the writer thread with
values SQLite refuses and with failures of any kind, `run_async` under a real signal, a disk that fills
while the lmms-eval files are written after the store is complete, and a read-only run folder.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from badinput_support import FakeServer, mme_rows, write_mme
from vlmparity.errors import DataError
from vlmparity.store import ResultRecord, ResultWriter, SampleRecord, Store, store_path

TIMEOUT_S = 120.0


@pytest.fixture(scope="module")
def mme(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_mme(tmp_path_factory.mktemp("mme"), mme_rows())


def _vlmparity(*args: str, code: str = "") -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-c", code + "\nfrom vlmparity.cli import main\nmain()\n", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S, stdin=subprocess.DEVNULL)


def _one_error_line(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("vlmparity: error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], stderr[-3000:]
    return errors[0]


def _results(out: Path) -> list[tuple[str, str, str | None]]:
    with closing(sqlite3.connect(f"file:{out / 'vlmparity.sqlite'}?mode=ro", uri=True)) as con:
        return con.execute(
            "SELECT sample_id, outcome, server_message FROM results ORDER BY sample_id"
        ).fetchall()


# ----- the store writer --------------------------------------------------------------------------------


def _rec(run_id: int, i: int, **kw: Any) -> ResultRecord:
    return ResultRecord(run_id, "mme", f"s{i:03d}", "h", "ok", text=f"answer {i}", **kw)


def test_writer_stores_every_other_answer_when_sqlite_refuses_one(tmp_path: Path) -> None:
    """An answer whose text SQLite cannot encode (a lone surrogate: UnicodeEncodeError, not an sqlite3
    error) in one group commit: the 39 others are stored, that one is named, and the run is told to stop
    (no new registration)."""
    with Store.open(tmp_path) as st:
        run_id = st.upsert_run("e").run_id
    acked: list[str] = []
    writer = ResultWriter(store_path(tmp_path), on_commit=lambda rs: acked.extend(r.sample_id for r in rs))
    gate = threading.Event()
    writer.register([], on_commit=gate.wait)  # hold the writer so the answers form one batch
    for i in range(40):
        rec = _rec(run_id, i)
        writer.put(replace(rec, text="Ye\ud800s") if i == 17 else rec)
    gate.set()
    with pytest.raises(DataError) as info:
        writer.flush()
    line = info.value.one_line()
    assert "cannot write to the run store" in line and "'s017'" in line, line
    assert "UnicodeEncodeError" in line and "text is not valid Unicode (a lone surrogate)" in line, line
    assert writer.failed
    writer.put(_rec(run_id, 99))  # answers still arriving are still stored
    failed: list[BaseException] = []
    with pytest.raises(DataError):  # but nothing new may be sent
        writer.register([SampleRecord("mme", "late", 0, "h", 1)], on_error=failed.append)
    with pytest.raises(DataError):
        writer.close()
    with Store.open(tmp_path) as st:
        stored = sorted(sid for (_t, sid) in st.results(run_id))
    expected = sorted([f"s{i:03d}" for i in range(40) if i != 17] + ["s099"])
    assert stored == expected == sorted(acked)


@pytest.mark.parametrize("failure", [RuntimeError("a bug"), MemoryError(), KeyError("k")])
def test_writer_failing_in_any_way_releases_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failure: BaseException
) -> None:
    """Not only OSError and sqlite3 errors: whatever kills the writer's commit, flush and close raise the
    store's one-line error and a registration waiting on it is failed (nobody waits for ever)."""
    with Store.open(tmp_path) as st:
        run_id = st.upsert_run("e").run_id

    def broken(self: ResultWriter, conn: sqlite3.Connection, batch: list[Any]) -> None:
        raise failure

    monkeypatch.setattr(ResultWriter, "_commit", broken)
    writer = ResultWriter(store_path(tmp_path))
    outcome: list[object] = []
    writer.register(
        [SampleRecord("mme", "s", 0, "h", 1)], on_commit=lambda: outcome.append("ok"), on_error=outcome.append
    )
    with pytest.raises(DataError) as info:
        writer.flush()
    assert type(failure).__name__ in info.value.one_line()
    assert len(outcome) == 1 and isinstance(outcome[0], DataError)
    with pytest.raises(DataError):
        writer.put(_rec(run_id, 1))
    with pytest.raises(DataError):
        writer.close(timeout=30)


def test_writer_close_with_a_timeout_does_not_wait_for_a_locked_store(tmp_path: Path) -> None:
    """An interrupted run gives the writer a grace period: a store another connection keeps locked does
    not hold the process (SQLite's own busy timeout is 60 s)."""
    with Store.open(tmp_path) as st:
        run_id = st.upsert_run("e").run_id
    writer = ResultWriter(store_path(tmp_path))
    with closing(sqlite3.connect(store_path(tmp_path), isolation_level=None)) as con:
        con.execute("BEGIN IMMEDIATE")
        writer.put(_rec(run_id, 1))
        assert writer.close(timeout=0.5) is False  # still waiting on the lock: given up on, not joined
        con.execute("ROLLBACK")


# ----- signals -------------------------------------------------------------------------------------------


def test_a_signal_cancels_async_work_and_raises_interrupted_after_cleanup() -> None:
    import asyncio

    from vlmparity import interrupt

    cleaned: list[str] = []

    async def work() -> None:
        try:
            os.kill(os.getpid(), signal.SIGTERM)  # delivered to this (main) thread
            await asyncio.sleep(3600)
        finally:
            cleaned.append("finally ran")

    with interrupt.handling(), pytest.raises(interrupt.Interrupted) as info:
        interrupt.run_async(work())
    assert (info.value.name, info.value.exit_code) == ("SIGTERM", 143)
    assert cleaned == ["finally ran"]
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # restored


def test_a_signal_outside_async_work_raises_at_once() -> None:
    from vlmparity import interrupt

    with interrupt.handling(), pytest.raises(interrupt.Interrupted) as info:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(10**8):  # the handler runs between two bytecodes, long before this ends
            pass
    assert (info.value.name, info.value.exit_code) == ("SIGINT", 130)


# ----- files written after the store is complete -----------------------------------------------------------

# The disk fills exactly when the lmms-eval files of endpoint "a" are written: the store is complete.
_DISK_FULL = """
import builtins, errno, os
_open = builtins.open
def _full(file, mode="r", *args, **kw):
    f = _open(file, mode, *args, **kw)
    if "w" in mode and os.sep + "a" + os.sep in str(file):
        f.close()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(file))
    return f
import vlmparity.report.lmms_output as m
m.open = _full
"""


def test_disk_full_while_writing_outputs_is_one_line_no_temp_file_and_a_rerun_writes_them(
    mme: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    with FakeServer("good") as server:
        args = ("run", "--tasks", "mme", "--data", f"mme={mme}", "-e", f"a={server.url}", "-o", str(out),
                "--log-samples", "--ready-timeout", "10")  # fmt: skip
        full = _vlmparity(*args, code=_DISK_FULL)
        assert full.returncode == 3, full.stderr[-3000:]
        line = _one_error_line(full.stderr)
        assert "cannot write " in line and "No space left on device" in line, line
        assert "every answer is in the run store" in line
        assert [p.name for p in out.rglob("*") if ".tmp" in p.name] == []
        assert [o for _, o, _ in _results(out)] == ["ok"] * 6
        doc = json.loads((out / "run.json").read_text())
        assert doc["status"] == "failed" and "No space left on device" in doc["failure"]
        sent = len(server.hashes)
        again = _vlmparity(*args)
        assert again.returncode == 0, again.stderr[-3000:]
        assert len(server.hashes) == sent  # nothing sent again
    assert len(list((out / "a").glob("*_results.json"))) == 1
    assert len(list((out / "a").glob("*_samples_mme.jsonl"))) == 1


def test_atomic_write_removes_its_temporary_file_whatever_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vlmparity.report import lmms_output

    class Stop(BaseException):
        pass

    real_replace = os.replace
    for exc, expected in ((OSError(errno.ENOSPC, "No space left on device"), DataError), (Stop(), Stop)):

        def failing_replace(src: Any, dst: Any, exc: BaseException = exc) -> None:
            raise exc

        monkeypatch.setattr(lmms_output.os, "replace", failing_replace)
        with pytest.raises(expected):
            lmms_output.write_results_json(tmp_path / "x_results.json", {"a": 1})
        assert sorted(p.name for p in tmp_path.iterdir()) == []
    monkeypatch.setattr(lmms_output.os, "replace", real_replace)


# ----- a read-only run folder ---------------------------------------------------------------------------


def _make_read_only(folder: Path) -> Any:
    """Make `folder` read-only for this process (a read-only bind mount as root, else chmod)."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    mount = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True)
    if mount.returncode != 0:
        pytest.skip(f"cannot bind-mount as root here: {mount.stderr.decode()[:200]}")
    ro = subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], capture_output=True)
    if ro.returncode != 0:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)
        pytest.skip(f"cannot remount read-only here: {ro.stderr.decode()[:200]}")
    return lambda: subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def test_read_only_run_folder_run_says_so_and_report_still_reads_it(mme: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    with FakeServer("good") as server:
        args = ("run", "--tasks", "mme", "--data", f"mme={mme}", "-e", f"a={server.url}", "-e",
                f"b={server.url}", "-o", str(out), "--ready-timeout", "10")  # fmt: skip
        first = _vlmparity(*args)
        assert first.returncode == 0, first.stderr[-3000:]
        undo = _make_read_only(out)
        try:
            again = _vlmparity(*args)
            assert again.returncode == 4, again.stderr[-3000:]
            line = _one_error_line(again.stderr)
            assert f"the output folder {out} is" in line and ("read-only" in line or "not writable" in line)
            assert "is it a vlmparity store" not in line
            # a finished run on read-only media can still be compared and reported (elsewhere)
            report = _vlmparity("report", str(out), "-o", str(tmp_path / "report.html"))
            assert report.returncode == 0, report.stderr[-3000:]
            assert (tmp_path / "report.html").is_file()
            # and writing the report into it is one line, exit 3
            inside = _vlmparity("report", str(out))
            assert inside.returncode == 3, inside.stderr[-3000:]
            assert "report.html" in _one_error_line(inside.stderr)
        finally:
            undo()
