"""Helpers of the crash-torture and fault-soak tests: watching a run store from outside, killing a
`vlmparity run` subprocess at chosen points, reading SQLite's write-ahead log, and a child process that
drives the store's `ResultWriter` so it can be killed in the middle of a commit.

Run as a script it is that child: `python torture_support.py writer <dir> <start> <batches> <rows> <bytes>`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import sqlite3
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STORE = "vlmparity.sqlite"

# Columns of a stored result that do not depend on timing (what two runs of the same data must share).
STABLE_COLUMNS = (
    "request_hash",
    "outcome",
    "text",
    "finish_reason",
    "status",
    "prompt_tokens",
    "completion_tokens",
    "transient",
)
ALL_COLUMNS = (
    "run_id",
    "task",
    "sample_id",
    "request_hash",
    "outcome",
    "text",
    "finish_reason",
    "status",
    "server_message",
    "attempts",
    "latency",
    "ttft",
    "prompt_tokens",
    "completion_tokens",
    "transient",
    "created",
)

Key = tuple[str, str, str]  # (endpoint, task, sample_id)


def vlmparity_cmd(*args: str) -> list[str]:
    """The command line of `vlmparity ...` as a user runs it (the installed package, this interpreter)."""
    return [sys.executable, "-m", "vlmparity", *args]


# ----- reading a store from outside ---------------------------------------------------------------


def _ro(db: Path) -> sqlite3.Connection:
    # Read-only URI: never creates the file, never checkpoints on close (safe on a full disk).
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)


def rows(db: Path) -> dict[Key, dict[str, Any]]:
    """Every stored result, all columns, keyed by (endpoint, task, sample_id)."""
    conn = _ro(db)
    try:
        cur = conn.execute(
            "SELECT r.endpoint, " + ", ".join(f"s.{c}" for c in ALL_COLUMNS) + " "
            "FROM results s JOIN runs r ON r.run_id = s.run_id"
        )
        out = {}
        for row in cur:
            rec = dict(zip(ALL_COLUMNS, row[1:], strict=True))
            out[(row[0], rec["task"], rec["sample_id"])] = rec
        return out
    finally:
        conn.close()


def stable(table: dict[Key, dict[str, Any]]) -> dict[Key, tuple[Any, ...]]:
    """The timing-independent part of each stored result."""
    return {k: tuple(v[c] for c in STABLE_COLUMNS) for k, v in table.items()}


def integrity(db: Path) -> str:
    """`PRAGMA integrity_check` of a store ('ok' when sound)."""
    conn = _ro(db)
    try:
        return "; ".join(str(r[0]) for r in conn.execute("PRAGMA integrity_check"))
    finally:
        conn.close()


def duplicates(db: Path) -> int:
    """Rows beyond one per (run, task, sample) in results, plus beyond one per (task, sample) in samples."""
    conn = _ro(db)
    try:
        extra = conn.execute(
            "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT run_id, task, sample_id FROM results)) "
            "FROM results"
        ).fetchone()[0]
        extra += conn.execute(
            "SELECT count(*) - (SELECT count(*) FROM (SELECT DISTINCT task, sample_id FROM samples)) "
            "FROM samples"
        ).fetchone()[0]
        return int(extra)
    finally:
        conn.close()


class StoreWatch:
    """Counts a live store's rows from another process, tolerating a store that does not exist yet."""

    def __init__(self, db: Path) -> None:
        self.db = db
        self._conn: sqlite3.Connection | None = None

    def _count(self, table: str) -> int:
        try:
            if self._conn is None:
                if not self.db.exists():
                    return 0
                self._conn = _ro(self.db)
            return int(self._conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
        except sqlite3.OperationalError:  # not created yet, or the schema is being written
            self.close()
            return 0

    def results(self) -> int:
        return self._count("results")

    def samples(self) -> int:
        return self._count("samples")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


# ----- running and killing ------------------------------------------------------------------------


@dataclass
class Invocation:
    """One `vlmparity run` subprocess: when it started, how it ended, where its output went."""

    spawned: float  # unix time just before the process was started
    ended: float
    returncode: int
    killed: bool
    log: Path

    @property
    def stderr(self) -> str:
        return self.log.with_suffix(".err").read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.log.with_suffix(".out").read_text(errors="replace")


def invoke(
    cmd: Sequence[str],
    log: Path,
    *,
    kill_when: Callable[[], bool] | None = None,
    delay: float = 0.0,
    instead: Callable[[], None] | None = None,
    poll_s: float = 0.005,
    timeout_s: float = 600.0,
    env: dict[str, str] | None = None,
) -> Invocation:
    """Run `cmd`; SIGKILL it `delay` seconds after `kill_when()` first holds (if it is still running),
    or with `instead`, call that once at that point and let the process run on."""
    out, err = log.with_suffix(".out"), log.with_suffix(".err")
    spawned = time.time()
    with out.open("wb") as fo, err.open("wb") as fe:
        proc = subprocess.Popen(list(cmd), stdout=fo, stderr=fe, env=env)
        killed = False
        deadline = time.monotonic() + timeout_s
        try:
            while proc.poll() is None:
                if time.monotonic() > deadline:
                    raise TimeoutError(
                        f"still running after {timeout_s:g} s (stuck?): {' '.join(cmd)[-300:]}"
                    )
                if kill_when is not None and kill_when():
                    if delay > 0:
                        time.sleep(delay)
                    if instead is not None:
                        instead()
                        kill_when = None
                        continue
                    if proc.poll() is None:
                        os.kill(proc.pid, signal.SIGKILL)
                        killed = True
                    break
                time.sleep(poll_s)
        finally:
            if proc.poll() is None and not killed:  # a failing test must not leave a run behind
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    return Invocation(spawned, time.time(), proc.returncode, killed, log)


# ----- SQLite's write-ahead log -------------------------------------------------------------------


def wal_uncommitted_frames(wal: Path) -> int:
    """Frames of the current WAL generation written after its last commit frame (a transaction that was
    being written when the process died). Read before any connection opens the store (which recovers
    and may reset the log)."""
    if not wal.exists():
        return 0
    data = wal.read_bytes()
    if len(data) < 32:
        return 0
    magic, _version, page_size, _ckpt, salt1, salt2 = struct.unpack(">IIIIII", data[:24])
    if magic not in (0x377F0682, 0x377F0683):
        return 0
    frame = 24 + page_size
    since_commit = 0
    pos = 32
    while pos + 24 <= len(data):
        _pgno, db_size, s1, s2 = struct.unpack(">IIII", data[pos : pos + 16])
        if (s1, s2) != (salt1, salt2):  # a frame of an older generation: the current log ends here
            break
        since_commit = 0 if db_size else since_commit + 1
        pos += frame
    return since_commit


# ----- a full disk --------------------------------------------------------------------------------


def fill(directory: Path, name: str = "filler.bin") -> Path:
    """Write a file in `directory` until the filesystem says it is full (ENOSPC)."""
    path = directory / name
    chunk = b"\0" * 65536
    with path.open("wb", buffering=0) as f:
        while True:
            try:
                f.write(chunk)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # the last partial block too
        for size in (4096, 512, 1):
            while True:
                try:
                    f.write(b"\0" * size)
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    break
    return path


# ----- the writer child -----------------------------------------------------------------------------


def payload(i: int, size: int) -> str:
    """The text stored for row `i` (deterministic, incompressible-looking, `size` characters)."""
    seed = hashlib.sha256(str(i).encode()).hexdigest()
    return (seed * (size // len(seed) + 1))[:size]


def sample_id(i: int) -> str:
    return f"s{i:08d}"


def _writer_child(directory: Path, start: int, batches: int, per_batch: int, size: int) -> None:
    """Queue `batches * per_batch` results and let the store's writer commit them in transactions of up to
    `per_batch` rows, printing `begin A B` before and `ack A B` after each commit (row indices A..B)."""
    from vlmparity.store import ResultRecord, ResultWriter, Store, store_path

    with Store.open(directory) as st:
        run_id = st.upsert_run("w").run_id

    def say(text: str) -> None:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()

    class LoudWriter(ResultWriter):
        def _commit(self, conn: sqlite3.Connection, batch: list[Any]) -> None:
            ids = [int(r.sample_id[1:]) for r in batch if isinstance(r, ResultRecord)]
            say(f"begin {ids[0]} {ids[-1]}")
            super()._commit(conn, batch)

    def acked(records: list[ResultRecord]) -> None:
        say(f"ack {int(records[0].sample_id[1:])} {int(records[-1].sample_id[1:])}")

    records = [
        ResultRecord(run_id, "t", sample_id(i), "h", "ok", text=payload(i, size), created=1.0)
        for i in range(start, start + batches * per_batch)
    ]
    writer = LoudWriter(store_path(directory), on_commit=acked, max_batch=per_batch)
    # All queued at once: the writer takes `per_batch` rows per transaction (the first may be smaller,
    # taken while the queue was still filling); `begin` says exactly which rows each one holds.
    for rec in records:
        writer.put(rec)
    writer.close()
    say("done")


if __name__ == "__main__":
    if len(sys.argv) == 7 and sys.argv[1] == "writer":
        _writer_child(Path(sys.argv[2]), *(int(a) for a in sys.argv[3:7]))  # type: ignore[call-arg]
    else:
        sys.exit("usage: torture_support.py writer DIR START BATCHES ROWS BYTES")
