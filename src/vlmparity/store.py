"""The run store: one SQLite file (`vlmparity.sqlite`) per output directory.

Every answer is committed as it arrives, so a killed run loses nothing it has acknowledged and a rerun of
the same command sends only what is missing. Everything after the store (scoring, reports, comparisons) is
a pure function of its contents.

Durability: WAL with `synchronous=FULL`. WAL alone already survives a killed *process* (a committed
transaction is in the OS page cache); FULL also fsyncs each commit so an answer survives a power cut.
Measured on the project machines FULL costs ~0.14 ms per commit (vs ~0.015 ms for NORMAL), paid on the
writer thread and amortised by group commit (`ResultWriter`), so durability is bought for free.
"""

from __future__ import annotations

import functools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import orjson

from vlmparity.errors import ConfigError, DataError
from vlmparity.tokentrace import TokenTrace, unpack_ids, unpack_logprobs

STORE_FILENAME = "vlmparity.sqlite"
SCHEMA_VERSION = 2

# Outcome classes (DESIGN.md "Outcome"). An answered outcome carries the model's text and is scored as is;
# a failure carries no text and is scored per the two explicit policies.
ANSWERED = ("ok", "length", "empty")
FAILURES = ("http_error", "timeout", "connection", "unsupported", "malformed")
OUTCOMES = ANSWERED + FAILURES

# How a sample's request was treated under the multi-image policy.
TREATMENTS = ("full", "merged", "skipped")

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


@dataclass(frozen=True)
class RunRecord:
    """One endpoint's run inside a store (a resumed run keeps its row)."""

    run_id: int
    endpoint: str
    url: str
    kind: str
    model: str
    server_version: str | None
    image_limit: int | None
    created: float
    updated: float
    config: Mapping[str, Any]
    tool_version: str


@dataclass(frozen=True)
class PlanRecord:
    """One invocation's plan: which endpoints, and per task its data source (an absolute path for local
    data, else a hub id) and sampling (`limit`/`sample`/`seed`/`mode`). `completed` are the endpoints that
    finished every task of it; `status` is running | complete | incomplete | failed | interrupted."""

    plan_id: int
    created: float
    updated: float
    status: str
    endpoints: tuple[str, ...]
    completed: tuple[str, ...]
    tasks: Mapping[str, Mapping[str, Any]]  # task -> {"source": ..., "plan": {...}}
    config: Mapping[str, Any]
    stamp: str

    def complete_for(self, endpoint: str) -> bool:
        return endpoint in self.completed

    def describe(self, task: str) -> str:
        """E.g. 'plan #2 (limit 20, 2026-12-07 01:40)'."""
        return f"plan #{self.plan_id} ({describe_sampling(self.tasks[task].get('plan') or {})}, {self.when})"

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))


def describe_sampling(plan: Mapping[str, Any]) -> str:
    """'all', 'limit 20' or 'sample 250 seed 0' for a stored sampling plan."""
    if plan.get("sample") is not None:
        return f"sample {plan['sample']} seed {plan.get('seed', 0)}"
    if plan.get("limit") is not None:
        limit = float(plan["limit"])
        return f"limit {int(limit) if limit.is_integer() else limit:g}"
    return "all samples"


@dataclass(frozen=True)
class SampleRecord:
    """What was (or will be) sent for one sample, identical for every endpoint."""

    task: str
    sample_id: str
    doc_id: int
    request_hash: str
    image_count: int
    treatment: str = "full"


@dataclass(frozen=True)
class ResultRecord:
    """One endpoint's outcome for one sample (`text` is None unless the outcome is answered)."""

    run_id: int
    task: str
    sample_id: str
    request_hash: str
    outcome: str
    text: str | None = None
    finish_reason: str | None = None
    status: int | None = None
    server_message: str | None = None
    attempts: int = 1
    latency: float | None = None
    ttft: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    transient: bool = False
    created: float = 0.0
    error_body: str | None = None  # the failed request's response body as received (capped)
    trace: TokenTrace | None = None  # written to the `tokens` table; `results()` does not load it

    @property
    def answered(self) -> bool:
        return self.outcome in ANSWERED


_RESULT_COLUMNS = tuple(f.name for f in fields(ResultRecord) if f.name != "trace")
_UPSERT_RESULT = (
    f"INSERT INTO results ({', '.join(_RESULT_COLUMNS)}) VALUES ({', '.join('?' for _ in _RESULT_COLUMNS)}) "
    "ON CONFLICT (run_id, task, sample_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in _RESULT_COLUMNS if c not in ("run_id", "task", "sample_id"))
)


# SQLite INTEGER is a signed 64-bit number: a larger Python int would raise OverflowError in the writer.
_SQLITE_INT_MIN, _SQLITE_INT_MAX = -(2**63), 2**63 - 1


def _sqlite_value(value: Any) -> Any:
    """`value`, with an integer SQLite cannot hold (a number from the wire that escaped its range check)
    stored as NULL ("absent") instead of killing the writer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value if _SQLITE_INT_MIN <= value <= _SQLITE_INT_MAX else None
    return value


def _result_row(rec: ResultRecord) -> tuple[Any, ...]:
    values = [_sqlite_value(getattr(rec, c)) for c in _RESULT_COLUMNS]
    values[_RESULT_COLUMNS.index("transient")] = int(rec.transient)
    if not rec.created:
        values[_RESULT_COLUMNS.index("created")] = time.time()
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


def _write_tokens(conn: sqlite3.Connection, results: Sequence[ResultRecord]) -> None:
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


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back a failed transaction, unless SQLite already did: after SQLITE_FULL or an I/O error it may
    have, and a ROLLBACK then fails with "no transaction is active", hiding the error that matters."""
    if conn.in_transaction:
        conn.execute("ROLLBACK")


def _writable(folder: Path) -> bool:
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


class Store:
    """The SQLite run store of one output directory. Reads and small writes; answers go via `ResultWriter`."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self._conn = conn

    # ----- lifecycle -------------------------------------------------------------------------------------

    @classmethod
    def open(cls, output_dir: Path, *, create: bool = True) -> Store:
        """Open (and create, with `create`) the store of `output_dir`, migrating an older schema."""
        output_dir = Path(output_dir)
        path = store_path(output_dir)
        if not path.exists() and not create:
            raise DataError(f"no run store at {path}", hint="run `vlmparity run --output-path` first")
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the output folder {output_dir}: {exc.strerror or exc}",
                hint="choose another --output-path",
            ) from exc
        try:
            try:
                conn = _connect(path)
            except sqlite3.OperationalError:
                if create or _writable(output_dir):
                    raise
                # A finished run on read-only media (an archive, a read-only mount): nobody can write it,
                # so it is read as an immutable file (WAL mode needs write access otherwise).
                conn = sqlite3.connect(
                    f"{path.resolve().as_uri()}?immutable=1", uri=True, check_same_thread=False
                )
            store = cls(path, conn)
            store._init_schema()
        except sqlite3.DatabaseError as exc:
            if create and not _writable(output_dir):
                raise ConfigError(
                    f"the output folder {output_dir} is not writable ({exc}): a run writes its store there",
                    hint="choose another --output-path, or make it writable",
                ) from exc
            raise DataError(
                f"cannot open the run store {path}: {exc}",
                hint="is it a vlmparity store? use another --output-path",
            ) from exc
        return store

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            _rollback(self._conn)
            raise
        self._conn.execute("COMMIT")

    def _init_schema(self) -> None:
        self._init_versioned()
        has_tokens = self._conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='tokens'"
        ).fetchone()[0]
        if not has_tokens:
            try:
                with self._tx() as c:
                    c.execute(_SCHEMA_TOKENS)
            except sqlite3.OperationalError:  # a read-only store of an older version: it has no traces
                pass

    def _init_versioned(self) -> None:
        version = int(self._conn.execute("PRAGMA user_version").fetchone()[0])
        has_tables = self._conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='runs'"
        ).fetchone()[0]
        if version == 0 and not has_tables:
            with self._tx() as c:
                for stmt in _SCHEMA_V1.split(";"):
                    if stmt.strip():
                        c.execute(stmt)
                c.execute(_PLANS_TABLE)
                c.execute("PRAGMA user_version = 1")
            version = 1
        if version > SCHEMA_VERSION:
            raise DataError(
                f"the run store {self.path} has schema {version}, newer than this vlmparity ({SCHEMA_VERSION})",
                hint="upgrade vlmparity or use another --output-path",
            )
        while version < SCHEMA_VERSION:
            migrate = MIGRATIONS.get(version)
            if migrate is None:
                raise DataError(f"no migration for run store schema {version} in {self.path}")
            with self._tx() as c:
                migrate(c)
                c.execute(f"PRAGMA user_version = {version + 1}")
            version += 1
        self._check_schema()
        has_plans = self._conn.execute(
            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='plans'"
        ).fetchone()[0]
        if not has_plans:
            with self._tx() as c:
                c.execute(_PLANS_TABLE)

    def _check_schema(self) -> None:
        """Every table and column of the schema is there (a store another program changed, or a damaged
        one, is one clear line now rather than a database error in the middle of a run)."""
        for table, columns in _expected_schema().items():
            have = {row[1] for row in self._conn.execute(f"PRAGMA table_info({table})")}
            if not have:
                raise DataError(
                    f"the run store {self.path} has no table {table!r}: it is damaged or was changed by "
                    "another program",
                    hint="use another --output-path (or restore the store from a copy)",
                )
            missing = [c for c in columns if c not in have]
            if missing:
                raise DataError(
                    f"the run store {self.path} lacks column(s) {', '.join(f'{table}.{c}' for c in missing)}: "
                    "it is damaged or was changed by another program",
                    hint="use another --output-path (or restore the store from a copy)",
                )

    @property
    def schema_version(self) -> int:
        return int(self._conn.execute("PRAGMA user_version").fetchone()[0])

    # ----- meta ------------------------------------------------------------------------------------------

    def get_meta(self, key: str) -> Any:
        """A JSON value stored under `key` (None if absent)."""
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else orjson.loads(row[0])

    def set_meta(self, key: str, value: Any) -> None:
        """Store a JSON value under `key` (replacing it)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, orjson.dumps(value).decode()),
            )

    # ----- runs ------------------------------------------------------------------------------------------

    def upsert_run(
        self,
        endpoint: str,
        *,
        url: str = "",
        kind: str = "",
        model: str = "",
        server_version: str | None = None,
        config: Mapping[str, Any] | None = None,
        tool_version: str = "",
    ) -> RunRecord:
        """Create the run of `endpoint`, or resume it; refuse to resume it with another model."""
        now = time.time()
        existing = self.get_run(endpoint)
        cfg = orjson.dumps(dict(config or {})).decode()
        with self._tx() as c:
            if existing is None:
                c.execute(
                    "INSERT INTO runs (endpoint, url, kind, model, server_version, created, updated, config_json,"
                    " tool_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (endpoint, url, kind, model, server_version, now, now, cfg, tool_version),
                )
            else:
                if existing.model and model and existing.model != model:
                    raise ConfigError(
                        f"endpoint {endpoint!r} in {self.path} was run with model {existing.model!r}, "
                        f"not {model!r}",
                        hint="use a new --output-path, or another endpoint name",
                    )
                c.execute(
                    "UPDATE runs SET url = ?, kind = ?, model = ?, server_version = ?, updated = ?, "
                    "config_json = ?, tool_version = ? WHERE endpoint = ?",
                    (url, kind, model, server_version, now, cfg, tool_version, endpoint),
                )
        run = self.get_run(endpoint)
        assert run is not None
        return run

    def set_image_limit(self, run_id: int, limit: int) -> None:
        """Remember the image limit an endpoint reported (the smallest seen wins)."""
        if _sqlite_value(limit) is None:
            return  # not a limit any server can have (the client range-checks it first)
        with self._tx() as c:
            c.execute(
                "UPDATE runs SET image_limit = CASE WHEN image_limit IS NULL OR image_limit > ? THEN ? "
                "ELSE image_limit END WHERE run_id = ?",
                (limit, limit, run_id),
            )

    def replace_image_limit(self, run_id: int, limit: int | None) -> None:
        """Set the image limit a start-up probe found now (None: none), replacing the stored one."""
        with self._tx() as c:
            c.execute("UPDATE runs SET image_limit = ? WHERE run_id = ?", (limit, run_id))

    def _run_from_row(self, row: Sequence[Any]) -> RunRecord:
        return RunRecord(
            run_id=row[0],
            endpoint=row[1],
            url=row[2],
            kind=row[3],
            model=row[4],
            server_version=row[5],
            image_limit=row[6],
            created=row[7],
            updated=row[8],
            config=orjson.loads(row[9]),
            tool_version=row[10],
        )

    _RUN_SELECT = (
        "SELECT run_id, endpoint, url, kind, model, server_version, image_limit, created, updated, config_json,"
        " tool_version FROM runs"
    )

    def get_run(self, endpoint: str) -> RunRecord | None:
        row = self._conn.execute(self._RUN_SELECT + " WHERE endpoint = ?", (endpoint,)).fetchone()
        return None if row is None else self._run_from_row(row)

    def runs(self) -> list[RunRecord]:
        """Every endpoint run in the store, in creation order."""
        return [self._run_from_row(r) for r in self._conn.execute(self._RUN_SELECT + " ORDER BY run_id")]

    # ----- plans (one per invocation) ---------------------------------------------------------------------

    def begin_plan(
        self,
        endpoints: Sequence[str],
        tasks: Mapping[str, Mapping[str, Any]],
        *,
        config: Mapping[str, Any] | None = None,
        stamp: str = "",
    ) -> PlanRecord:
        """The plan of a new invocation; a rerun of an unfinished invocation with the same endpoints and
        the same plan resumes its record (the same command rerun after a crash is one invocation)."""
        now = time.time()
        eps = orjson.dumps(list(endpoints)).decode()
        spec = orjson.dumps(dict(tasks), option=orjson.OPT_SORT_KEYS).decode()
        cfg = orjson.dumps(dict(config or {})).decode()
        latest = self._conn.execute(
            "SELECT plan_id, status, endpoints_json, tasks_json FROM plans ORDER BY plan_id DESC LIMIT 1"
        ).fetchone()
        with self._tx() as c:
            if (
                latest is not None
                and latest[1] != "complete"
                and latest[2] == eps
                and orjson.dumps(orjson.loads(latest[3]), option=orjson.OPT_SORT_KEYS).decode() == spec
            ):
                plan_id = int(latest[0])
                c.execute(
                    "UPDATE plans SET status = 'running', updated = ?, config_json = ?, stamp = ? "
                    "WHERE plan_id = ?",
                    (now, cfg, stamp, plan_id),
                )
            else:
                cur = c.execute(
                    "INSERT INTO plans (created, updated, status, endpoints_json, tasks_json, config_json, stamp)"
                    " VALUES (?, ?, 'running', ?, ?, ?, ?)",
                    (now, now, eps, spec, cfg, stamp),
                )
                plan_id = int(cur.lastrowid or 0)
        plan = self.get_plan(plan_id)
        assert plan is not None
        return plan

    def end_plan(self, plan_id: int, status: str, completed: Sequence[str] = ()) -> None:
        """Record how an invocation ended and which endpoints finished every task of it."""
        with self._tx() as c:
            c.execute(
                "UPDATE plans SET status = ?, completed_json = ?, updated = ? WHERE plan_id = ?",
                (status, orjson.dumps(list(completed)).decode(), time.time(), plan_id),
            )

    _PLAN_SELECT = (
        "SELECT plan_id, created, updated, status, endpoints_json, completed_json, tasks_json, config_json,"
        " stamp FROM plans"
    )

    @staticmethod
    def _plan_from_row(row: Sequence[Any]) -> PlanRecord:
        return PlanRecord(
            plan_id=int(row[0]),
            created=float(row[1]),
            updated=float(row[2]),
            status=str(row[3]),
            endpoints=tuple(orjson.loads(row[4])),
            completed=tuple(orjson.loads(row[5])),
            tasks=orjson.loads(row[6]),
            config=orjson.loads(row[7]),
            stamp=str(row[8]),
        )

    def get_plan(self, plan_id: int) -> PlanRecord | None:
        row = self._conn.execute(self._PLAN_SELECT + " WHERE plan_id = ?", (plan_id,)).fetchone()
        return None if row is None else self._plan_from_row(row)

    def plans(self) -> list[PlanRecord]:
        """Every invocation's plan, oldest first."""
        return [self._plan_from_row(r) for r in self._conn.execute(self._PLAN_SELECT + " ORDER BY plan_id")]

    # ----- samples ---------------------------------------------------------------------------------------

    def register_samples(self, records: Iterable[SampleRecord]) -> None:
        """Record what is sent for each sample; refuse a sample whose stored request differs.

        A store mixes no two request bodies for the same sample: that would compare answers to different
        questions. Changed generation parameters, image format, prompt or data all change the hash.
        """
        records = list(records)
        stored = self.samples()
        conflicts = [
            r
            for r in records
            if (r.task, r.sample_id) in stored
            and stored[(r.task, r.sample_id)].request_hash != r.request_hash
        ]
        if conflicts:
            first = conflicts[0]
            raise ConfigError(
                f"{self.path} holds different requests for {len(conflicts)} sample(s) (first: {first.task} "
                f"{first.sample_id!r}): the generation parameters, image format, multi-image policy, prompt or "
                "data differ from the run stored there",
                hint="use a new --output-path, or rerun with the original options",
            )
        new = [r for r in records if (r.task, r.sample_id) not in stored]
        if not new:
            return
        with self._tx() as c:
            c.executemany(
                "INSERT INTO samples (task, sample_id, doc_id, request_hash, image_count, treatment) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                [(r.task, r.sample_id, r.doc_id, r.request_hash, r.image_count, r.treatment) for r in new],
            )

    def retreat_samples(self, records: Iterable[SampleRecord]) -> None:
        """Deliberately change how samples are sent (multi-image merge/skip decided mid-run)."""
        with self._tx() as c:
            c.executemany(
                "INSERT INTO samples (task, sample_id, doc_id, request_hash, image_count, treatment) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (task, sample_id) DO UPDATE SET "
                "request_hash = excluded.request_hash, image_count = excluded.image_count, "
                "treatment = excluded.treatment",
                [
                    (r.task, r.sample_id, r.doc_id, r.request_hash, r.image_count, r.treatment)
                    for r in records
                ],
            )

    def samples(self, task: str | None = None) -> dict[tuple[str, str], SampleRecord]:
        """Registered samples keyed by (task, sample_id), in document order."""
        sql = "SELECT task, sample_id, doc_id, request_hash, image_count, treatment FROM samples"
        args: tuple[Any, ...] = ()
        if task is not None:
            sql += " WHERE task = ?"
            args = (task,)
        sql += " ORDER BY task, doc_id"
        return {(r[0], r[1]): SampleRecord(*r) for r in self._conn.execute(sql, args)}

    # ----- results ---------------------------------------------------------------------------------------

    def put_results(self, records: Sequence[ResultRecord]) -> None:
        """Upsert results in one transaction (a retried transient failure is replaced by its outcome)."""
        if not records:
            return
        with self._tx() as c:
            c.executemany(_UPSERT_RESULT, [_result_row(r) for r in records])
            if self.has_tokens_table():
                _write_tokens(c, records)

    def has_tokens_table(self) -> bool:
        return bool(
            self._conn.execute(
                "SELECT count(*) FROM sqlite_master WHERE type='table' AND name='tokens'"
            ).fetchone()[0]
        )

    def traces(self, run_id: int, task: str | None = None) -> dict[tuple[str, str], TokenTrace]:
        """Stored token traces of one run keyed by (task, sample_id) (empty for a store without any)."""
        if not self.has_tokens_table():
            return {}
        sql = "SELECT task, sample_id, logprobs, token_text, token_ids FROM tokens WHERE run_id = ?"
        args: tuple[Any, ...] = (run_id,)
        if task is not None:
            sql += " AND task = ?"
            args = (run_id, task)
        out: dict[tuple[str, str], TokenTrace] = {}
        for t, sid, blob, text, ids in self._conn.execute(sql, args):
            tokens = orjson.loads(text) if text is not None else None
            out[(t, sid)] = TokenTrace(
                unpack_logprobs(blob),
                tuple(str(x) for x in tokens) if isinstance(tokens, list) else None,
                unpack_ids(ids),
            )
        return out

    def results(self, run_id: int, task: str | None = None) -> dict[tuple[str, str], ResultRecord]:
        """Stored results of one run keyed by (task, sample_id)."""
        sql = f"SELECT {', '.join(_RESULT_COLUMNS)} FROM results WHERE run_id = ?"
        args: tuple[Any, ...] = (run_id,)
        if task is not None:
            sql += " AND task = ?"
            args = (run_id, task)
        out: dict[tuple[str, str], ResultRecord] = {}
        t = _RESULT_COLUMNS.index("transient")
        for row in self._conn.execute(sql, args):
            values = list(row)
            values[t] = bool(values[t])
            rec = ResultRecord(*values)
            out[(rec.task, rec.sample_id)] = rec
        return out

    def to_send(
        self, run_id: int, wanted: Mapping[tuple[str, str], str], *, rerun_errors: bool = False
    ) -> list[tuple[str, str]]:
        """Which (task, sample_id) of `wanted` (→ request_hash) still need sending for this run.

        Done = a stored result for the same request that is answered, or a permanent failure (unless
        `rerun_errors`). Missing, transient failures and results of another request are sent again.
        """
        stored = self.results(run_id)
        out = []
        for key, rhash in wanted.items():
            rec = stored.get(key)
            if rec is None or rec.request_hash != rhash or not is_done(rec, rerun_errors=rerun_errors):
                out.append(key)
        return out

    def counts(self, run_id: int) -> dict[str, int]:
        """Number of stored results per outcome class for one run."""
        return {
            outcome: n
            for outcome, n in self._conn.execute(
                "SELECT outcome, count(*) FROM results WHERE run_id = ? GROUP BY outcome", (run_id,)
            )
        }


def is_done(rec: ResultRecord, *, rerun_errors: bool = False) -> bool:
    """An answered result is final; a failure is final only if permanent and errors are not rerun."""
    if rec.answered:
        return True
    return not rec.transient and not rerun_errors


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
            conn = _connect(self._path)
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
                conn.executemany(_UPSERT_RESULT, [_result_row(r) for r in results])
                _write_tokens(conn, results)
            conn.execute("COMMIT")
        except BaseException:
            _rollback(conn)
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
        bad = [_unstorable(c, getattr(item, c)) for c in _RESULT_COLUMNS]
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
