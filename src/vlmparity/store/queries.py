"""`Store`: the run store of one output folder, opened (created, migrated, checked) for reads and small
writes; answers go through the writer thread (`store.writer.ResultWriter`)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from vlmparity.errors import ConfigError, DataError
from vlmparity.store import schema
from vlmparity.store.records import PlanRecord, ResultRecord, RunRecord, SampleRecord, is_done
from vlmparity.store.schema import (
    RESULT_COLUMNS,
    UPSERT_RESULT,
    init_schema,
    result_row,
    sqlite_value,
    store_path,
    transaction,
    writable,
    write_tokens,
)
from vlmparity.tokentrace import TokenTrace, unpack_ids, unpack_logprobs


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
                conn = schema._connect(path)
            except sqlite3.OperationalError:
                if create or writable(output_dir):
                    raise
                # A finished run on read-only media (an archive, a read-only mount): nobody can write it,
                # so it is read as an immutable file (WAL mode needs write access otherwise).
                conn = sqlite3.connect(
                    f"{path.resolve().as_uri()}?immutable=1", uri=True, check_same_thread=False
                )
            store = cls(path, conn)
            store._init_schema()
        except sqlite3.DatabaseError as exc:
            if create and not writable(output_dir):
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
        with transaction(self._conn) as conn:
            yield conn

    def _init_schema(self) -> None:
        init_schema(self._conn, self.path)

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
        if sqlite_value(limit) is None:
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
            c.executemany(UPSERT_RESULT, [result_row(r) for r in records])
            if self.has_tokens_table():
                write_tokens(c, records)

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
        sql = f"SELECT {', '.join(RESULT_COLUMNS)} FROM results WHERE run_id = ?"
        args: tuple[Any, ...] = (run_id,)
        if task is not None:
            sql += " AND task = ?"
            args = (run_id, task)
        out: dict[tuple[str, str], ResultRecord] = {}
        t = RESULT_COLUMNS.index("transient")
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
