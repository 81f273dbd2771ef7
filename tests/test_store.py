"""The SQLite run store: schema, resume queries, upserts, hash guard, durable single writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vlmparity.errors import ConfigError, DataError
from vlmparity.store import ResultRecord, ResultWriter, SampleRecord, Store, is_done, store_path
from vlmparity.store import schema as store_mod


def _sample(i: int, rhash: str = "h", task: str = "mme") -> SampleRecord:
    return SampleRecord(task=task, sample_id=f"s{i}", doc_id=i, request_hash=f"{rhash}{i}", image_count=1)


def test_new_store_has_schema_wal_and_full_sync(tmp_path: Path) -> None:
    with Store.open(tmp_path / "out") as st:
        assert st.path == tmp_path / "out" / "vlmparity.sqlite"
        assert st.schema_version == store_mod.SCHEMA_VERSION
        conn = sqlite3.connect(st.path)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert st._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"runs", "samples", "results"} <= tables


def test_open_without_create_and_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no run store"):
        Store.open(tmp_path / "missing", create=False)
    bad = tmp_path / "bad"
    bad.mkdir()
    store_path(bad).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(DataError, match="cannot open the run store"):
        Store.open(bad)


def test_newer_schema_refused_and_migration_hook_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "o"
    Store.open(out).close()
    conn = sqlite3.connect(store_path(out))
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    with pytest.raises(DataError, match="newer"):
        Store.open(out)

    out2 = tmp_path / "o2"
    Store.open(out2).close()

    def add_column(c: sqlite3.Connection) -> None:
        c.execute("ALTER TABLE runs ADD COLUMN note TEXT")

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 3)
    monkeypatch.setitem(store_mod.MIGRATIONS, 2, add_column)
    with Store.open(out2) as st:
        assert st.schema_version == 3
        cols = [r[1] for r in st._conn.execute("PRAGMA table_info(runs)")]
        assert "note" in cols


def test_run_resume_keeps_id_and_refuses_other_model(tmp_path: Path) -> None:
    with Store.open(tmp_path) as st:
        a = st.upsert_run("a", url="http://x/v1", kind="vllm", model="m1", config={"k": 1})
        b = st.upsert_run("b", url="http://y/v3", kind="ovms", model="m1")
        assert a.run_id != b.run_id
        again = st.upsert_run("a", url="http://x/v1", kind="vllm", model="m1", server_version="0.9")
        assert again.run_id == a.run_id and again.server_version == "0.9"
        assert [r.endpoint for r in st.runs()] == ["a", "b"]
        with pytest.raises(ConfigError, match=r"was run with model .m1."):
            st.upsert_run("a", model="m2")
        st.set_image_limit(a.run_id, 3)
        st.set_image_limit(a.run_id, 1)
        st.set_image_limit(a.run_id, 2)  # the smallest limit seen wins
        run = st.get_run("a")
        assert run is not None and run.image_limit == 1


def test_register_samples_refuses_a_different_request(tmp_path: Path) -> None:
    with Store.open(tmp_path) as st:
        st.register_samples([_sample(0), _sample(1)])
        st.register_samples([_sample(0), _sample(1), _sample(2)])  # same hashes + a new one: fine
        assert len(st.samples("mme")) == 3
        with pytest.raises(ConfigError) as err:
            st.register_samples([_sample(1, rhash="other")])
        assert "--output-path" in err.value.one_line()
        # a deliberate re-treatment (multi-image merge) is allowed
        st.retreat_samples([SampleRecord("mme", "s1", 1, "merged1", 1, "merged")])
        assert st.samples()[("mme", "s1")].treatment == "merged"


def test_upsert_replaces_transient_failure_and_to_send(tmp_path: Path) -> None:
    with Store.open(tmp_path) as st:
        run = st.upsert_run("a", model="m")
        rid = run.run_id
        wanted = {("mme", f"s{i}"): f"h{i}" for i in range(6)}
        st.put_results(
            [
                ResultRecord(rid, "mme", "s0", "h0", "ok", text="Yes"),
                ResultRecord(rid, "mme", "s1", "h1", "timeout", transient=True, attempts=3),
                ResultRecord(rid, "mme", "s2", "h2", "unsupported", status=400, server_message="At most 1"),
                ResultRecord(rid, "mme", "s3", "OLD", "ok", text="No"),  # answer to another request
                ResultRecord(rid, "mme", "s4", "h4", "length", text="Yes, the", finish_reason="length"),
            ]
        )
        assert st.to_send(rid, wanted) == [("mme", "s1"), ("mme", "s3"), ("mme", "s5")]
        assert st.to_send(rid, wanted, rerun_errors=True) == [
            ("mme", "s1"),
            ("mme", "s2"),
            ("mme", "s3"),
            ("mme", "s5"),
        ]
        st.put_results([ResultRecord(rid, "mme", "s1", "h1", "ok", text="No", attempts=1)])
        got = st.results(rid)
        assert got[("mme", "s1")].outcome == "ok" and got[("mme", "s1")].text == "No"
        assert got[("mme", "s1")].transient is False
        assert len(got) == 5  # one row per (run, task, sample)
        assert st.counts(rid) == {"ok": 3, "unsupported": 1, "length": 1}


def test_is_done_policy() -> None:
    ok = ResultRecord(1, "t", "s", "h", "empty", text="")
    perm = ResultRecord(1, "t", "s", "h", "http_error", status=400)
    trans = ResultRecord(1, "t", "s", "h", "http_error", status=503, transient=True)
    assert is_done(ok) and is_done(ok, rerun_errors=True)
    assert is_done(perm) and not is_done(perm, rerun_errors=True)
    assert not is_done(trans)


def test_writer_commits_and_acknowledges(tmp_path: Path) -> None:
    with Store.open(tmp_path) as st:
        rid = st.upsert_run("a", model="m").run_id
    acked: list[str] = []
    writer = ResultWriter(store_path(tmp_path), on_commit=lambda b: acked.extend(r.sample_id for r in b))
    for i in range(500):
        writer.put(ResultRecord(rid, "mme", f"s{i}", f"h{i}", "ok", text="Yes"))
    writer.close()
    assert sorted(acked) == sorted(f"s{i}" for i in range(500))
    assert writer.committed == 500 and 1 <= writer.commits <= 500
    with Store.open(tmp_path) as st:
        assert len(st.results(rid)) == 500


_KILL_CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from vlmparity.store import ResultRecord, ResultWriter, Store, store_path
    out = Path(sys.argv[1])
    with Store.open(out) as st:
        rid = st.upsert_run("a", model="m").run_id
    def ack(batch):
        for r in batch:
            sys.stdout.write(r.sample_id + "\\n")
        sys.stdout.flush()
    w = ResultWriter(store_path(out), on_commit=ack)
    i = 0
    while True:
        w.put(ResultRecord(rid, "mme", f"s{i}", f"h{i}", "ok", text="Yes"))
        i += 1
        if i % 50 == 0:
            time.sleep(0.001)
    """
)


def test_sigkill_loses_no_acknowledged_answer(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _KILL_CHILD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    acked = []
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= 2000:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rest = proc.stdout.read().split()
    acked.extend(rest)
    with Store.open(tmp_path) as st:
        stored = {sid for (_, sid) in st.results(st.runs()[0].run_id)}
    assert set(acked) <= stored


def test_writer_registers_samples_before_answers(tmp_path: Path) -> None:
    with Store.open(tmp_path) as st:
        rid = st.upsert_run("a", model="m").run_id
    done: list[str] = []
    writer = ResultWriter(store_path(tmp_path))
    writer.register([_sample(0), _sample(1)], lambda: done.append("registered"))
    writer.put(ResultRecord(rid, "mme", "s0", "h0", "ok", text="Yes"))
    writer.register([SampleRecord("mme", "s0", 0, "other", 1)])  # the first registration wins
    writer.flush()
    assert done == ["registered"]
    writer.close()
    with Store.open(tmp_path) as st:
        assert st.samples()[("mme", "s0")].request_hash == "h0"
        assert st.to_send(rid, {("mme", "s0"): "h0", ("mme", "s1"): "h1"}) == [("mme", "s1")]


def test_writer_that_cannot_open_the_store_fails_loudly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # If the writer thread cannot connect, answers must not vanish silently: put/flush/close raise.
    def broken(path: Path) -> sqlite3.Connection:
        raise sqlite3.OperationalError("unable to open database file")

    monkeypatch.setattr(store_mod, "_connect", broken)
    writer = ResultWriter(store_path(tmp_path))
    with pytest.raises(DataError, match="unable to open database file"):
        writer.flush()
    with pytest.raises(DataError):
        writer.put(ResultRecord(1, "mme", "s", "h", "ok", text="Yes"))


def test_a_schema_1_store_gains_the_error_body_column(tmp_path: Path) -> None:
    out = tmp_path / "v1"
    out.mkdir()
    conn = sqlite3.connect(store_path(out))
    conn.executescript(store_mod._SCHEMA_V1)
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO runs (endpoint, created, updated) VALUES ('ep', 0, 0)")
    conn.execute(
        "INSERT INTO results (run_id, task, sample_id, request_hash, outcome, status, server_message, created) "
        "VALUES (1, 'mme', 's1', 'h', 'http_error', 400, 'bad', 0)"
    )
    conn.commit()
    conn.close()
    with Store.open(out) as st:
        assert st.schema_version == store_mod.SCHEMA_VERSION == 2
        (rec,) = st.results(1).values()
        assert (rec.outcome, rec.status, rec.server_message, rec.error_body) == (
            "http_error",
            400,
            "bad",
            None,
        )
        st.put_results(
            [store_mod.ResultRecord(1, "mme", "s1", "h", "http_error", status=400, error_body='{"e": 1}')]
        )
        (rec,) = st.results(1).values()
        assert rec.error_body == '{"e": 1}'
