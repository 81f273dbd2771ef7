"""The store's schema: tables, migrations, the connection settings (WAL, `synchronous=FULL`), opening a
store's tables (creating, migrating and checking them), and how records map to rows."""

from __future__ import annotations

import functools
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import orjson

from vlmparity.errors import DataError
from vlmparity.store.records import ResultRecord

STORE_FILENAME = "vlmparity.sqlite"
SCHEMA_VERSION = 2

_SCHEMA_V1 = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint TEXT NOT NULL UNIQUE,
    url TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL DEFAULT '',
    model TEXT NOT NULL DEFAULT '',
    server_version TEXT,
    image_limit INTEGER,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    config_json TEXT NOT NULL DEFAULT '{}',
    tool_version TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS samples (
    task TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    doc_id INTEGER NOT NULL,
    request_hash TEXT NOT NULL,
    image_count INTEGER NOT NULL,
    treatment TEXT NOT NULL DEFAULT 'full',
    PRIMARY KEY (task, sample_id)
);
CREATE TABLE IF NOT EXISTS results (
    run_id INTEGER NOT NULL REFERENCES runs(run_id),
    task TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    outcome TEXT NOT NULL,
    text TEXT,
    finish_reason TEXT,
    status INTEGER,
    server_message TEXT,
    attempts INTEGER NOT NULL DEFAULT 1,
    latency REAL,
    ttft REAL,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    transient INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    PRIMARY KEY (run_id, task, sample_id)
);
"""

# One row per `vlmparity run` invocation: its own plan (tasks, data source, sampling) so that a folder can
# be reused with other plans (as lmms-eval's --output_path is) and `compare`/`report` pick one plan per
# endpoint and task instead of mixing them. Added to every store when opened (an additive table: older
# vlmparity versions ignore it, so no schema version bump).
_PLANS_TABLE = """
CREATE TABLE IF NOT EXISTS plans (
    plan_id INTEGER PRIMARY KEY AUTOINCREMENT,
    created REAL NOT NULL,
    updated REAL NOT NULL,
    status TEXT NOT NULL,
    endpoints_json TEXT NOT NULL,
    completed_json TEXT NOT NULL DEFAULT '[]',
    tasks_json TEXT NOT NULL,
    config_json TEXT NOT NULL DEFAULT '{}',
    stamp TEXT NOT NULL DEFAULT ''
)
"""

# An error body is kept (as received, up to this many characters) so that the lmms-eval scoring policy can
# rebuild, at scoring time, the exception text openai-python would have raised for it.
ERROR_BODY_MAX_CHARS = 65536


def _v1_to_v2(c: sqlite3.Connection) -> None:
    """Schema 2: the raw error body of a failed request (`results.error_body`)."""
    c.execute("ALTER TABLE results ADD COLUMN error_body TEXT")


# Migration hook: MIGRATIONS[v] upgrades a store from schema v to v + 1 (a new store is made at schema 1
# and migrated, so every store of one schema version has the same tables).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {1: _v1_to_v2}

# Per-token log-probabilities (issue 15), one row per stored answer that carried them: float32 bytes
# (4 bytes a token), the token texts as a JSON array and the ids as int64 bytes when the server gave them.
# Additive: created on open when absent, so a store from before it simply has no traces (no version bump).
_SCHEMA_TOKENS = """
CREATE TABLE IF NOT EXISTS tokens (
    run_id INTEGER NOT NULL,
    task TEXT NOT NULL,
    sample_id TEXT NOT NULL,
    n INTEGER NOT NULL,
    logprobs BLOB NOT NULL,
    token_text TEXT,
    token_ids BLOB,
    PRIMARY KEY (run_id, task, sample_id)
) WITHOUT ROWID
"""
_UPSERT_TOKENS = (
    "INSERT INTO tokens (run_id, task, sample_id, n, logprobs, token_text, token_ids) VALUES (?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT (run_id, task, sample_id) DO UPDATE SET n = excluded.n, logprobs = excluded.logprobs, "
    "token_text = excluded.token_text, token_ids = excluded.token_ids"
)
_DELETE_TOKENS = "DELETE FROM tokens WHERE run_id = ? AND task = ? AND sample_id = ?"


@functools.cache
def _expected_schema() -> dict[str, tuple[str, ...]]:
    """Tables and their columns as the current schema creates them."""
    conn = sqlite3.connect(":memory:")
    try:
        conn.executescript(_SCHEMA_V1)
        for version in range(1, SCHEMA_VERSION):  # a new store is made at schema 1 and migrated
            MIGRATIONS[version](conn)
        tables = [
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table' ORDER BY name")
        ]
        return {
            t: tuple(r[1] for r in conn.execute(f"PRAGMA table_info({t})"))
            for t in tables
            if t != "sqlite_sequence"
        }
    finally:
        conn.close()


RESULT_COLUMNS = tuple(f.name for f in fields(ResultRecord) if f.name != "trace")
UPSERT_RESULT = (
    f"INSERT INTO results ({', '.join(RESULT_COLUMNS)}) VALUES ({', '.join('?' for _ in RESULT_COLUMNS)}) "
    "ON CONFLICT (run_id, task, sample_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in RESULT_COLUMNS if c not in ("run_id", "task", "sample_id"))
)


# SQLite INTEGER is a signed 64-bit number: a larger Python int would raise OverflowError in the writer.
_SQLITE_INT_MIN, _SQLITE_INT_MAX = -(2**63), 2**63 - 1


def sqlite_value(value: Any) -> Any:
    """`value`, with an integer SQLite cannot hold (a number from the wire that escaped its range check)
    stored as NULL ("absent") instead of killing the writer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _SQLITE_INT_MIN <= value <= _SQLITE_INT_MAX else None
    return value


def result_row(rec: ResultRecord) -> tuple[Any, ...]:
    values = [sqlite_value(getattr(rec, c)) for c in RESULT_COLUMNS]
    values[RESULT_COLUMNS.index("transient")] = int(rec.transient)
    if not rec.created:
        values[RESULT_COLUMNS.index("created")] = time.time()
    return tuple(values)


def _token_rows(results: Sequence[ResultRecord]) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """(upserts, deletes) of the tokens table for answers being stored: an answer without a trace removes
    the trace of the answer it replaces."""
    upserts, deletes = [], []
    for r in results:
        if r.trace is not None and r.answered:
            text = orjson.dumps(list(r.trace.tokens)).decode() if r.trace.tokens is not None else None
            upserts.append(
                (
                    r.run_id,
                    r.task,
                    r.sample_id,
                    len(r.trace),
                    r.trace.packed_logprobs(),
                    text,
                    r.trace.packed_ids(),
                )
            )
        else:
            deletes.append((r.run_id, r.task, r.sample_id))
    return upserts, deletes


def write_tokens(conn: sqlite3.Connection, results: Sequence[ResultRecord]) -> None:
    upserts, deletes = _token_rows(results)
    if upserts:
        conn.executemany(_UPSERT_TOKENS, upserts)
    if deletes:
        conn.executemany(_DELETE_TOKENS, deletes)


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=60.0, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


def rollback(conn: sqlite3.Connection) -> None:
    """Roll back a failed transaction, unless SQLite already did: after SQLITE_FULL or an I/O error it may
    have, and a ROLLBACK then fails with "no transaction is active", hiding the error that matters."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def writable(folder: Path) -> bool:
    """Whether files can be created in `folder` (a read-only mount counts as not writable, even for root)."""
    if not os.access(folder, os.W_OK):
        return False
    try:
        return not (os.statvfs(folder).f_flag & os.ST_RDONLY)
    except OSError:
        return True


def store_path(output_dir: Path) -> Path:
    """The store file of an output directory."""
    return Path(output_dir) / STORE_FILENAME


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (taken at once: BEGIN IMMEDIATE), rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        rollback(conn)
        raise
    conn.execute("COMMIT")


def init_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create, migrate and check the tables of the store at `path` (open on `conn`)."""
    _init_versioned(conn, path)
    has_tokens = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='tokens'"
    ).fetchone()[0]
    if not has_tokens:
        try:
            with transaction(conn) as c:
                c.execute(_SCHEMA_TOKENS)
        except sqlite3.OperationalError:  # a read-only store of an older version: it has no traces
            pass


def _init_versioned(conn: sqlite3.Connection, path: Path) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    has_tables = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='runs'"
    ).fetchone()[0]
    if version == 0 and not has_tables:
        with transaction(conn) as c:
            for stmt in _SCHEMA_V1.split(";"):
                if stmt.strip():
                    c.execute(stmt)
            c.execute(_PLANS_TABLE)
            c.execute("PRAGMA user_version = 1")
        version = 1
    if version > SCHEMA_VERSION:
        raise DataError(
            f"the run store {path} has schema {version}, newer than this vlmparity ({SCHEMA_VERSION})",
            hint="upgrade vlmparity or use another --output-path",
        )
    while version < SCHEMA_VERSION:
        migrate = MIGRATIONS.get(version)
        if migrate is None:
            raise DataError(f"no migration for run store schema {version} in {path}")
        with transaction(conn) as c:
            migrate(c)
            c.execute(f"PRAGMA user_version = {version + 1}")
        version += 1
    _check_schema(conn, path)
    has_plans = conn.execute(
        "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='plans'"
    ).fetchone()[0]
    if not has_plans:
        with transaction(conn) as c:
            c.execute(_PLANS_TABLE)


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Every table and column of the schema is there (a store another program changed, or a damaged
    one, is one clear line now rather than a database error in the middle of a run)."""
    for table, columns in _expected_schema().items():
        have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
        if not have:
            raise DataError(
                f"the run store {path} has no table {table!r}: it is damaged or was changed by "
                "another program",
                hint="use another --output-path (or restore the store from a copy)",
            )
        missing = [c for c in columns if c not in have]
        if missing:
            raise DataError(
                f"the run store {path} lacks column(s) {', '.join(f'{table}.{c}' for c in missing)}: "
                "it is damaged or was changed by another program",
                hint="use another --output-path (or restore the store from a copy)",
            )
