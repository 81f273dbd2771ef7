"""The single writer of answers: a thread that commits each answer (and sample registration) as soon as
it is queued, in group commits, and never dies silently."""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Callable, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlmparity.errors import DataError
from vlmparity.store import schema
from vlmparity.store.records import ResultRecord, SampleRecord
from vlmparity.store.schema import RESULT_COLUMNS, UPSERT_RESULT, result_row, rollback, write_tokens


@dataclass(frozen=True)
class Registration:
    """Samples to register through the writer; `on_commit` runs (writer thread) once they are durable,
    `on_error` instead if the writer failed before committing them (so nobody waits for them forever)."""

    records: tuple[SampleRecord, ...]
    on_commit: Callable[[], None] | None = None
    on_error: Callable[[BaseException], None] | None = None


_INSERT_SAMPLE = (
    "INSERT INTO samples (task, sample_id, doc_id, request_hash, image_count, treatment) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task, sample_id) DO NOTHING"
)


class ResultWriter:
    """The single writer of answers: a thread that commits each answer as soon as it is queued.

    Answers (and sample registrations) that arrive while a commit is in flight go together in the next
    transaction (group commit), so a slow disk lowers the number of commits rather than the request
    rate. `on_commit` is called on the writer thread with each committed batch of answers: only then is
    an answer acknowledged.

    The writer never dies silently. Whatever goes wrong in its thread (the disk, the database, a bug)
    becomes the one error that `put`, `register`, `flush` and `close` raise from then on, and every
    registration still waiting is failed with it, so nobody waits for a commit that will never come.
    An answer SQLite refuses on its own (a record-level error, such as text it cannot encode) does
    not take the others with it: the writer goes on storing every other answer, one at a time when it
    must, and refuses new registrations (so no new request is sent); `flush` and `close` then raise the
    error naming that answer, and `failed` tells the run to stop.
    """

    def __init__(
        self,
        path: Path,
        *,
        on_commit: Callable[[list[ResultRecord]], None] | None = None,
        max_batch: int = 256,
    ) -> None:
        self._path = path
        self._on_commit = on_commit
        self._max_batch = max_batch
        self._queue: queue.Queue[ResultRecord | Registration | None] = queue.Queue()
        self._error: BaseException | None = None  # the writer stopped: nothing more is committed
        self._refused: BaseException | None = None  # an answer was refused: the others are still stored
        self._error_text = ""
        self.committed = 0
        self.commits = 0
        self.refused = 0  # answers SQLite refused
        self._thread = threading.Thread(target=self._loop, name="vlmparity-store-writer", daemon=True)
        self._thread.start()

    @property
    def error(self) -> BaseException | None:
        """What stopped the writer, or made it refuse an answer (None while all is well)."""
        return self._error or self._refused

    @property
    def stopped(self) -> bool:
        """The writer stopped: nothing more will be committed."""
        return self._error is not None

    def failure(self) -> DataError | None:
        """The one-line error of a failed writer (None while all is well)."""
        return self._failure() if self.failed else None

    @property
    def failed(self) -> bool:
        """The run must stop: the writer stopped, or refused an answer."""
        return self.error is not None

    def put(self, rec: ResultRecord) -> None:
        """Queue one answer for commit (never blocks). Still accepted after an answer was refused."""
        if self._error is not None:
            raise self._failure()
        self._queue.put(rec)

    def register(
        self,
        records: Sequence[SampleRecord],
        on_commit: Callable[[], None] | None = None,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        """Queue sample registrations (first registration of a sample wins); `on_commit` once durable,
        `on_error(DataError)` if the writer fails first. With no records it is a barrier: `on_commit`
        runs once everything queued before it is committed."""
        self._check()
        self._queue.put(Registration(tuple(records), on_commit, on_error))
        if self._error is not None or not self._thread.is_alive():
            # the writer failed meanwhile and may have drained the queue already
            self._drain_unfinished()

    def _failure(self) -> DataError:
        return DataError(
            f"cannot write to the run store {self._path}: {self._error_text}",
            hint="every answer acknowledged so far is kept; fix the cause, then rerun the same command",
        )

    def _check(self) -> None:
        if self.failed:
            raise self._failure()

    def _stop_with(self, exc: BaseException) -> None:
        if self._error is None:
            if self._refused is None:
                self._error_text = _describe(exc)
            self._error = exc

    def flush(self) -> None:
        """Wait until everything queued so far is committed (or the writer has failed)."""
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks and self._thread.is_alive():
                self._queue.all_tasks_done.wait(0.1)
        self._check()

    def close(self, timeout: float | None = None) -> bool:
        """Commit everything queued, then stop. With `timeout`, wait at most that long (an interrupted run
        does not wait for a disk that does not answer) and return whether the writer finished."""
        self._queue.put(None)
        self._thread.join(timeout)
        self._check()
        return not self._thread.is_alive()

    def _loop(self) -> None:
        conn: sqlite3.Connection | None = None
        try:
            conn = schema._connect(self._path)
            self._serve(conn)
        except BaseException as exc:  # the thread must never die silently
            self._stop_with(exc)
        finally:
            if conn is not None:
                with suppress(Exception):
                    conn.close()
            self._drain_unfinished()

    def _serve(self, conn: sqlite3.Connection) -> None:
        stop = False
        while not stop:
            first = self._queue.get()
            batch: list[ResultRecord | Registration] = []
            if first is None:
                stop = True
            else:
                batch.append(first)
            while len(batch) < self._max_batch:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            taken = len(batch) + (1 if stop else 0)
            try:
                if self._refused is not None:  # no new request may be sent: fail the registrations
                    for item in batch:
                        _fail(item, self._failure())
                    batch = [b for b in batch if isinstance(b, ResultRecord)]
                if batch:
                    try:
                        self._commit(conn, batch)
                    except Exception as exc:  # disk full, locked for too long, a value SQLite refuses...
                        if not _record_error(exc):
                            self._stop_with(exc)
                            for item in batch:
                                _fail(item, self._failure())
                            return
                        self._one_by_one(conn, batch)
            finally:
                for _ in range(taken):
                    self._queue.task_done()

    def _one_by_one(self, conn: sqlite3.Connection, batch: list[ResultRecord | Registration]) -> None:
        """A record SQLite refuses is in the batch: commit every answer of it alone, name the first one
        refused, fail the registrations (the run stops sending)."""
        for item in batch:
            if isinstance(item, Registration):
                continue
            try:
                self._commit(conn, [item])
            except Exception as exc:
                if not _record_error(exc):
                    self._stop_with(exc)
                    break
                self.refused += 1
                if self._refused is None and self._error is None:
                    self._error_text = _describe(exc, item)
                    self._refused = exc
        if self._refused is None and self._error is None:  # no answer failed alone: a registration did
            self._error_text = "a sample registration was refused"
            self._refused = DataError(self._error_text)
        for item in batch:
            _fail(item, self._failure())

    def _commit(self, conn: sqlite3.Connection, batch: list[ResultRecord | Registration]) -> None:
        regs = [b for b in batch if isinstance(b, Registration)]
        results = [b for b in batch if isinstance(b, ResultRecord)]
        conn.execute("BEGIN IMMEDIATE")
        try:
            for reg in regs:  # samples first: an answer is never stored before its sample's request hash
                if reg.records:
                    conn.executemany(
                        _INSERT_SAMPLE,
                        [
                            (r.task, r.sample_id, r.doc_id, r.request_hash, r.image_count, r.treatment)
                            for r in reg.records
                        ],
                    )
            if results:
                conn.executemany(UPSERT_RESULT, [result_row(r) for r in results])
                write_tokens(conn, results)
            conn.execute("COMMIT")
        except BaseException:
            rollback(conn)
            raise
        self.commits += 1
        try:
            for reg in regs:
                if reg.on_commit is not None:
                    reg.on_commit()
            if results:
                self.committed += len(results)
                if self._on_commit is not None:
                    self._on_commit(results)
        except Exception as exc:  # committed already: never retried as if a record were at fault
            raise CallbackError(f"{type(exc).__name__}: {exc}") from exc

    def _drain_unfinished(self) -> None:
        # After a failure nothing more is committed: release any flush() or registration waiting on it.
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if self._error is not None:
                _fail(item, self._failure())
            self._queue.task_done()


class CallbackError(RuntimeError):
    """A commit callback failed (after its transaction was committed)."""


# Errors that concern one record, not the store: the other answers can still be committed.
_RECORD_ERRORS = (
    OverflowError,
    TypeError,
    ValueError,
    UnicodeError,
    sqlite3.InterfaceError,
    sqlite3.IntegrityError,
    sqlite3.DataError,
    sqlite3.ProgrammingError,
)


def _record_error(exc: BaseException) -> bool:
    return isinstance(exc, _RECORD_ERRORS)


def _describe(exc: BaseException, item: ResultRecord | Registration | None = None) -> str:
    """The one-line cause: SQLite's own message for database errors, the exception's type otherwise."""
    text = str(exc).strip().replace("\n", " ") or type(exc).__name__
    if not isinstance(exc, sqlite3.Error):
        text = f"{type(exc).__name__}: {text}"
    if isinstance(item, ResultRecord):
        text = f"the answer to {item.task} {item.sample_id!r} cannot be stored ({text})"
        bad = [_unstorable(c, getattr(item, c)) for c in RESULT_COLUMNS]
        named = [b for b in bad if b]
        if named:
            text += ": " + "; ".join(named)
    return text


def _unstorable(column: str, value: Any) -> str | None:
    """Why SQLite cannot take `value`, in words (None when it can)."""
    if _out_of_range(value):
        return f"{column}={value} is beyond SQLite's 64-bit integers"
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return f"{column} is not valid Unicode (a lone surrogate)"
    return None


def _out_of_range(value: Any) -> bool:
    return isinstance(value, int) and not -(2**63) <= value < 2**63


def _fail(item: ResultRecord | Registration | None, error: BaseException) -> None:
    if isinstance(item, Registration) and item.on_error is not None:
        item.on_error(error)
