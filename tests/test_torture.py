"""Crash torture: `vlmparity run` SIGKILLed at seeded random points of a 2 x 1000-sample run and resumed
each time, the store's writer killed in the middle of a commit, and a disk that fills up mid-run.

What must hold (issue 4 and 7): no answer is lost or changed once committed, none is stored twice,
none is sent again after it was committed, and the final results are those of an uninterrupted run;
a full disk ends in one clear line (exit 3) with the store intact and resumable.
"""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

import torture_support as ts
from vlmparity.sim import SimConfig, SimServer

N_MME, N_MMMU = 600, 400
PER_ENDPOINT = N_MME + N_MMMU
ENDPOINTS = ("vllm", "ovms")
TOTAL = PER_ENDPOINT * len(ENDPOINTS)
# ~25 ms per request, 16 at once: the client's own work (PNG encoding) sets the pace, the run lasts long
# enough to be killed anywhere.
LOAD = {"capacity": 16, "base_latency": 0.025, "per_image": 0.0, "per_token": 0.0}
TIME_KEYS = ("date", "start_time", "end_time", "total_evaluation_time_seconds")


@pytest.fixture(scope="module")
def torture_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic MME (600 questions) and MMMU (400), written once for this module."""
    from vlmparity.synth import write_mme, write_mmmu

    root = tmp_path_factory.mktemp("torture-data")
    return {
        "mme": write_mme(root / "mme", n=N_MME, seed=11),
        "mmmu_val": write_mmmu(root / "mmmu", n=N_MMMU, seed=11),
    }


@pytest.fixture(scope="module")
def sims(torture_data: dict[str, Path]) -> Iterator[dict[str, SimServer]]:
    paths = list(torture_data.values())
    with (
        SimServer(SimConfig(personality="vllm", data=paths, image_limit=None, load=LOAD)) as vllm,
        SimServer(SimConfig(personality="ovms", data=paths, load=LOAD)) as ovms,
    ):
        yield {"vllm": vllm, "ovms": ovms}


def _run_cmd(data: dict[str, Path], sims: dict[str, SimServer], out: Path) -> list[str]:
    eps = [a for name in ENDPOINTS for a in ("-e", f"{name}={sims[name].url}")]
    return ts.vlmparity_cmd(
        "run", *eps, "--tasks", "mme,mmmu_val", "--data", f"mme={data['mme']}",
        "--data", f"mmmu_val={data['mmmu_val']}", "-o", str(out), "--log-samples",
    )  # fmt: skip


def _latest_outputs(out: Path, endpoint: str) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    """The newest results.json of an endpoint (timings removed) and its samples lines (latencies removed)."""
    results = sorted((out / endpoint).glob("*_results.json"))[-1]
    stamp = results.name.removesuffix("_results.json")
    doc = json.loads(results.read_text())
    for key in TIME_KEYS:
        doc.pop(key)
    samples = {}
    for task in ("mme", "mmmu_val"):
        lines = [
            json.loads(x) for x in (out / endpoint / f"{stamp}_samples_{task}.jsonl").read_text().splitlines()
        ]
        samples[task] = [_drop_keys(line, {"latency", "ttft"}) for line in lines]
    return doc, samples


def _drop_keys(obj: Any, keys: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _drop_keys(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop_keys(v, keys) for v in obj]
    return obj


def _table(stdout: str) -> list[str]:
    """The lmms-eval table rows and the both-policies rows the command prints."""
    return [line for line in stdout.splitlines() if line.startswith(("|mme", "|mmmu"))]


def _outputs_parse(out: Path) -> None:
    """Every lmms-eval file present is whole (written atomically even when killed while writing)."""
    for path in out.glob("*/*_results.json"):
        json.loads(path.read_text())
    for path in out.glob("*/*_samples_*.jsonl"):
        for line in path.read_text().splitlines():
            json.loads(line)
    json.loads((out / "run.json").read_text())


def _arrivals(sim: SimServer) -> list[tuple[float, str]]:
    """(arrival time, body hash) of every chat request that carried a sample's images."""
    return [(e.time, e.body_hash) for e in sim.chat_log if e.body_hash and e.image_count > 0]


def _kill_point(
    kind: str,
    rng: random.Random,
    spawned: float,
    stored: int,
    watch: ts.StoreWatch,
    sims: dict[str, SimServer],
    out: Path,
) -> tuple[Callable[[], bool], float]:
    """When to kill an invocation started at `spawned` with `stored` answers in the store, and how long
    after that condition first holds."""
    if kind == "early":  # the first sample request reached a server
        return lambda: any(t >= spawned for sim in sims.values() for t, _h in _arrivals(sim)), 0.0
    if kind == "random_time":  # start-up, resume checks or the first requests
        after = rng.uniform(0.5, 4.0)
        return lambda: time.time() - spawned >= after, 0.0
    if kind == "commits":  # mid-dispatch: a seeded share of what is left has been committed
        target = stored + max(1, int(rng.uniform(0.08, 0.3) * (TOTAL - stored)))
        return lambda: watch.results() >= target, rng.uniform(0.0, 0.05)
    if kind == "scoring":  # every answer committed: flushing, scoring
        return lambda: watch.results() >= TOTAL, rng.uniform(0.0, 0.02)
    # writing: the first lmms-eval file of this invocation is on disk, the others are not yet
    return lambda: any(p.stat().st_mtime >= spawned for p in out.glob("*/*_results.json")), 0.0


@pytest.mark.slow
def test_ten_sigkills_and_resumes_equal_an_uninterrupted_run(
    torture_data: dict[str, Path], sims: dict[str, SimServer], tmp_path: Path
) -> None:
    # The uninterrupted reference, against the same simulators (same URLs in the output files).
    ref_out = tmp_path / "ref"
    ref = ts.invoke(_run_cmd(torture_data, sims, ref_out), tmp_path / "ref.log")
    assert ref.returncode == 0, ref.stderr
    ref_rows = ts.rows(ref_out / ts.STORE)
    assert len(ref_rows) == TOTAL and {r["outcome"] for r in ref_rows.values()} == {"ok"}
    hashes = {(k[1], k[2]): r["request_hash"] for k, r in ref_rows.items()}
    # one distinct body per sample: the servers' logs can tell the samples apart
    assert len(set(hashes.values())) == PER_ENDPOINT
    for sim in sims.values():
        sim.clear_log()

    out = tmp_path / "out"
    db = out / ts.STORE
    cmd = _run_cmd(torture_data, sims, out)
    watch = ts.StoreWatch(db)
    rng = random.Random(20261128)
    kinds = ["early", "random_time"] + ["commits"] * 6 + ["scoring", "writing"]
    snapshots: list[dict[ts.Key, dict[str, Any]]] = [{}]
    invocations: list[ts.Invocation] = []
    at_kill: list[tuple[str, int]] = []  # (kind, answers stored when killed)

    for i, kind in enumerate(kinds):
        spawn_at = time.time()
        if kind == "early":
            # Slow the servers down so that no answer can arrive, then kill as soon as the first sample's
            # request reaches a server: its registration is committed, no answer is.
            for sim in sims.values():
                sim.server.load.cfg.time_scale = 400.0  # type: ignore[union-attr]
        kill_when, delay = _kill_point(kind, rng, spawn_at, len(snapshots[-1]), watch, sims, out)
        try:
            inv = ts.invoke(cmd, tmp_path / f"kill{i}.log", kill_when=kill_when, delay=delay)
        finally:
            watch.close()
            for sim in sims.values():
                sim.server.load.cfg.time_scale = 1.0  # type: ignore[union-attr]
        assert inv.killed and inv.returncode == -9, f"kill {i} ({kind}) came too late: {inv.stderr}"
        invocations.append(inv)

        snap = ts.rows(db)
        assert ts.integrity(db) == "ok"
        assert ts.duplicates(db) == 0
        lost = [k for k, v in snapshots[-1].items() if snap.get(k) != v]
        assert not lost, f"kill {i} ({kind}): {len(lost)} committed answers lost or changed, e.g. {lost[:3]}"
        _outputs_parse(out)
        at_kill.append((kind, len(snap)))
        snapshots.append(snap)
        if kind == "early":
            with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
                registered = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
            assert len(snap) == 0 and registered >= 1, (
                "the early kill lands after registration, before answers"
            )

    final = ts.invoke(cmd, tmp_path / "final.log")
    invocations.append(final)
    assert final.returncode == 0, final.stderr
    snap = ts.rows(db)
    assert ts.integrity(db) == "ok" and ts.duplicates(db) == 0
    assert all(snap.get(k) == v for k, v in snapshots[-1].items())

    # the kills landed where they were meant to
    mid = [n for kind, n in at_kill if kind == "commits"]
    assert all(0 < n < TOTAL for n in mid) and mid == sorted(mid)
    assert [n for kind, n in at_kill if kind in ("scoring", "writing")] == [TOTAL, TOTAL]

    # nothing sent again once its answer was committed: not by a later invocation (the answers committed
    # when it started) and not within one (no arrival of a body after its answer's commit time)
    for inv, committed in zip(invocations[1:], snapshots[1:], strict=True):
        for name, sim in sims.items():
            done = {r["request_hash"] for k, r in committed.items() if k[0] == name}
            again = [h for t, h in _arrivals(sim) if t >= inv.spawned and h in done]
            assert not again, f"{name}: {len(again)} committed answers requested again"
    for name, sim in sims.items():
        last_arrival: dict[str, float] = defaultdict(float)
        for t, h in _arrivals(sim):
            last_arrival[h] = max(last_arrival[h], t)
        late = [k for k, r in snap.items() if k[0] == name and last_arrival[r["request_hash"]] > r["created"]]
        assert not late, f"{name}: sent again after their answer was stored: {late[:3]}"
        # every sample was sent, and at most once by each invocation (no fault here calls for a retry)
        assert {r["request_hash"] for k, r in snap.items() if k[0] == name} <= set(last_arrival)
        for inv in invocations:
            per_body = Counter(h for t, h in _arrivals(sim) if inv.spawned <= t <= inv.ended)
            assert max(per_body.values(), default=0) <= 1, f"{name}: a body sent twice in one invocation"

    # identical to the uninterrupted run: every stored answer, the scores, the lmms-eval files, the tables
    assert ts.stable(snap) == ts.stable(ref_rows)
    assert {r["attempts"] for r in snap.values()} == {1}
    for name in ENDPOINTS:
        got_doc, got_samples = _latest_outputs(out, name)
        ref_doc, ref_samples = _latest_outputs(ref_out, name)
        assert got_doc == ref_doc
        assert got_samples == ref_samples
    assert _table(final.stdout) == _table(ref.stdout) and _table(ref.stdout)


# ----- a kill in the middle of a SQLite commit ------------------------------------------------------


def _writer_round(
    directory: Path, start: int, rng: random.Random, per_row: list[float]
) -> tuple[list[list[str]], int, int]:
    """Start a writer child committing six 4000-row transactions; SIGKILL it at a seeded point inside its
    second or third one (the last three are margin: a slow first transaction must not let it finish) (a share of how long a transaction takes here, measured on the earlier ones:
    `per_row` collects seconds per row). Returns its output lines, the uncommitted WAL frames left, and
    its exit code."""
    script = Path(ts.__file__)
    proc = subprocess.Popen(
        [sys.executable, str(script), "writer", str(directory), str(start), "6", "4000", "2000"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    target, share = rng.randint(2, 3), rng.uniform(0.3, 0.8)
    lines: list[list[str]] = []
    begun_at = 0.0
    for line in proc.stdout:
        now = time.perf_counter()
        lines.append(line.split())
        word, first, last = (lines[-1] + ["0", "0"])[:3]
        if word == "ack":
            per_row.append((now - begun_at) / (int(last) - int(first) + 1))
        elif word == "begin":
            begun_at = now
            if sum(1 for x in lines if x[0] == "begin") == target:
                rows = int(last) - int(first) + 1
                time.sleep(share * rows * sorted(per_row)[len(per_row) // 2])
                proc.kill()
                break
    lines += [x.split() for x in proc.stdout.read().splitlines()]
    proc.wait()
    return lines, ts.wal_uncommitted_frames(directory / (ts.STORE + "-wal")), proc.returncode


@pytest.mark.slow
def test_kill_during_sqlite_commit_keeps_exactly_the_committed_rows(tmp_path: Path) -> None:
    directory = tmp_path / "store"
    rng = random.Random(7)
    start = 0
    interrupted = 0  # kills that left a half-written transaction in the log
    per_row: list[float] = []
    seen: list[tuple[int, int]] = []  # per round: (uncommitted frames, rows kept beyond the acknowledged)
    for _round in range(12):
        lines, frames, code = _writer_round(directory, start, rng, per_row)
        assert code == -9 and ["done"] not in lines, "the writer finished before it was killed"
        acked = [(int(a), int(b)) for w, a, b in lines if w == "ack"]
        begun = [(int(a), int(b)) for w, a, b in lines if w == "begin"]
        assert begun and acked and begun[: len(acked)] == acked
        acked_end = acked[-1][1] + 1
        pending_end = begun[-1][1] + 1 if len(begun) > len(acked) else acked_end

        # recovery ignores the torn transaction: the store opens, is sound, and holds whole transactions
        assert ts.integrity(directory / ts.STORE) == "ok"
        with closing(sqlite3.connect(f"file:{directory / ts.STORE}?mode=ro", uri=True)) as conn:
            got = dict(conn.execute("SELECT sample_id, text FROM results"))
        ids = sorted(int(s[1:]) for s in got)
        seen.append((frames, len(ids) - acked_end))
        if frames:
            interrupted += 1
            assert ids == list(range(acked_end)), "a torn transaction must leave no row behind"
        else:
            # killed before its first byte reached the log, or after COMMIT but before the acknowledgement
            assert ids in (list(range(acked_end)), list(range(pending_end)))
        assert all(got[ts.sample_id(i)] == ts.payload(i, 2000) for i in ids)
        start = len(ids)
        if interrupted >= 3:
            break
    assert interrupted >= 1, f"no kill landed while a transaction was being written: {seen}"

    # the project's own open path accepts the store, and writing goes on where it stopped
    from vlmparity.store import ResultRecord, ResultWriter, Store, store_path

    with Store.open(directory) as store:
        run = store.get_run("w")
        assert run is not None and len(store.results(run.run_id)) == start
    writer = ResultWriter(store_path(directory))
    writer.put(ResultRecord(run.run_id, "t", ts.sample_id(start), "h", "ok", text="last"))
    writer.close()
    assert ts.integrity(directory / ts.STORE) == "ok"
    with Store.open(directory) as store:
        assert len(store.results(run.run_id)) == start + 1


# ----- a disk that fills up mid-run -------------------------------------------------------------------

SMALL_LOAD = {"capacity": 2, "base_latency": 0.08, "per_image": 0.0, "per_token": 0.0}
FULL_AFTER = 20  # answers committed before the disk fills
HANG_S = 90.0  # a run still going this long after its store failed is stuck (the whole run takes ~10 s)


@pytest.fixture(scope="module")
def small_sim(synth_mme_small: Path, synth_mmmu_small: Path) -> Iterator[SimServer]:
    with SimServer(
        SimConfig(personality="ovms", data=[synth_mme_small, synth_mmmu_small], load=SMALL_LOAD)
    ) as sim:
        yield sim


def _small_cmd(mme: Path, mmmu: Path, sim: SimServer, out: Path) -> list[str]:
    return ts.vlmparity_cmd(
        "run", "-e", f"ovms={sim.url}", "--tasks", "mme,mmmu_val", "--data", f"mme={mme}",
        "--data", f"mmmu_val={mmmu}", "-o", str(out), "--concurrency", "2",
    )  # fmt: skip


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
            capture_output=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


def _check_disk_full_run(inv: ts.Invocation, db: Path, before: dict[ts.Key, dict[str, Any]]) -> None:
    """One clear line, exit 3, no traceback; the store sound, holding every answer it acknowledged."""
    assert inv.returncode == 3, (inv.returncode, inv.stderr)
    err = inv.stderr
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith("vlmparity: error:")]
    assert len(errors) == 1 and err.strip().splitlines()[-1] == errors[0], err
    assert "cannot write to the run store" in errors[0] and "database or disk is full" in errors[0], errors[0]
    assert ts.integrity(db) == "ok"
    after = ts.rows(db)
    assert len(before) >= FULL_AFTER and all(after.get(k) == v for k, v in before.items())
    assert len(after) < len(SMALL_KEYS), "the disk filled before the run could finish"


SMALL_KEYS: set[tuple[str, str]] = set()


def _resume_and_compare(
    cmd: list[str], tmp: Path, db: Path, before: dict[ts.Key, dict[str, Any]], ref_db: Path
) -> None:
    again = ts.invoke(cmd, tmp / "resume.log")
    assert again.returncode == 0, again.stderr
    final = ts.rows(db)
    assert ts.integrity(db) == "ok" and ts.duplicates(db) == 0
    assert all(final.get(k) == v for k, v in before.items())
    assert ts.stable(final) == ts.stable(ts.rows(ref_db))


@pytest.fixture(scope="module")
def small_ref(
    synth_mme_small: Path,
    synth_mmmu_small: Path,
    small_sim: SimServer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Path:
    """The uninterrupted run of the small sets (its store)."""
    out = tmp_path_factory.mktemp("small-ref") / "out"
    inv = ts.invoke(_small_cmd(synth_mme_small, synth_mmmu_small, small_sim, out), out.parent / "ref.log")
    assert inv.returncode == 0, inv.stderr
    rows = ts.rows(out / ts.STORE)
    SMALL_KEYS.update((t, s) for (_e, t, s) in rows)
    assert len(rows) == 116
    return out / ts.STORE


@pytest.mark.slow
def test_full_disk_tmpfs_clear_error_store_intact_and_resumable(
    synth_mme_small: Path, synth_mmmu_small: Path, small_sim: SimServer, small_ref: Path, tmp_path: Path
) -> None:
    mnt = tmp_path / "disk"
    if not _mount_tmpfs(mnt, "8m"):
        pytest.skip("cannot mount a tmpfs here (needs root); the injected full-store test covers the path")
    try:
        out = mnt / "out"
        db = out / ts.STORE
        cmd = _small_cmd(synth_mme_small, synth_mmmu_small, small_sim, out)
        watch = ts.StoreWatch(db)
        before: dict[ts.Key, dict[str, Any]] = {}
        filler: list[Path] = []

        def fill_disk() -> None:
            before.update(ts.rows(db))
            filler.append(ts.fill(mnt))

        inv = ts.invoke(
            cmd,
            tmp_path / "full.log",
            kill_when=lambda: watch.results() >= FULL_AFTER,
            instead=fill_disk,
            timeout_s=HANG_S,
        )
        watch.close()
        assert filler, "the run ended before the disk was filled"
        _check_disk_full_run(inv, db, before)
        json.loads((out / "run.json").read_text())  # the provenance file written before is whole
        filler[0].unlink()  # space again: the same command resumes and finishes
        _resume_and_compare(cmd, tmp_path, db, before, small_ref)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


# The same failure without root. "capped": the writer's connection limited to a few pages above the
# store's size, which SQLite reports exactly as a full disk (SQLITE_FULL). "registration": the disk fills
# at the very commit that registers a sample a request is waiting for (SQLITE_FULL raised there).
_INJECT = {
    "capped": """
import threading
import vlmparity.store.schema as store
_connect = store._connect
def capped(path):
    conn = _connect(path)
    if threading.current_thread().name == "vlmparity-store-writer":  # the connection answers go through
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages + 6}")
    return conn
store._connect = capped
""",
    "registration": f"""
import sqlite3
import vlmparity.store as store
_commit = store.ResultWriter._commit
def full_at_registration(self, conn, batch):
    if self.committed >= {FULL_AFTER} and any(isinstance(b, store.Registration) for b in batch):
        raise sqlite3.OperationalError("database or disk is full")
    _commit(self, conn, batch)
store.ResultWriter._commit = full_at_registration
""",
}


@pytest.mark.slow
@pytest.mark.parametrize("inject", sorted(_INJECT))
def test_full_store_injected_clear_error_store_intact_and_resumable(
    synth_mme_small: Path,
    synth_mmmu_small: Path,
    small_sim: SimServer,
    small_ref: Path,
    tmp_path: Path,
    inject: str,
) -> None:
    out = tmp_path / "out"
    db = out / ts.STORE
    cmd = _small_cmd(synth_mme_small, synth_mmmu_small, small_sim, out)
    code = _INJECT[inject] + "from vlmparity.cli import main\nmain()\n"
    watch = ts.StoreWatch(db)
    before: dict[ts.Key, dict[str, Any]] = {}

    def snapshot() -> None:
        before.update(ts.rows(db))

    inv = ts.invoke(
        [sys.executable, "-c", code, *cmd[3:]],
        tmp_path / "full.log",
        kill_when=lambda: watch.results() >= FULL_AFTER,
        instead=snapshot,
        timeout_s=HANG_S,
    )
    watch.close()
    _check_disk_full_run(inv, db, before)
    status = json.loads((out / "run.json").read_text())  # on another file than the full store
    assert status["status"] == "failed" and "disk is full" in status["failure"], status.get("failure")
    _resume_and_compare(cmd, tmp_path, db, before, small_ref)
    assert json.loads((out / "run.json").read_text())["status"] == "complete"


def test_writer_failure_keeps_the_real_error_and_releases_waiting_registrations(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    from vlmparity.errors import DataError
    from vlmparity.store import ResultRecord, ResultWriter, SampleRecord, Store, store_path
    from vlmparity.store import schema as store_mod

    real_connect = store_mod._connect

    def capped(path: Path) -> sqlite3.Connection:
        conn = real_connect(path)
        if threading.current_thread().name == "vlmparity-store-writer":
            pages = conn.execute("PRAGMA page_count").fetchone()[0]
            conn.execute(f"PRAGMA max_page_count = {pages + 3}")  # ~12 KiB more: a handful of answers
        return conn

    monkeypatch.setattr(store_mod, "_connect", capped)
    with Store.open(tmp_path) as st:
        run_id = st.upsert_run("e").run_id
    acknowledged: list[ResultRecord] = []
    writer = ResultWriter(store_path(tmp_path), on_commit=acknowledged.extend, max_batch=4)
    outcome: list[object] = []
    with pytest.raises(DataError) as err:
        for i in range(400):
            writer.put(ResultRecord(run_id, "t", f"s{i:03d}", "h", "ok", text=ts.payload(i, 1000)))
            if i == 200:  # queued behind ~200 answers that cannot all fit: never committed
                writer.register(
                    [SampleRecord("t", "late", 0, "h", 1)],
                    on_commit=lambda: outcome.append("committed"),
                    on_error=outcome.append,
                )
        writer.close()
    line = err.value.one_line()
    assert "cannot write to the run store" in line and "database or disk is full" in line, line
    assert len(outcome) == 1 and isinstance(outcome[0], DataError), outcome
    with pytest.raises(DataError):
        writer.close()
    # the store holds exactly the acknowledged answers, intact
    assert ts.integrity(tmp_path / ts.STORE) == "ok"
    with Store.open(tmp_path) as st:
        stored = st.results(run_id)
        assert "late" not in {sid for (_t, sid) in st.samples()}
    assert 0 < len(acknowledged) < 200
    assert sorted(sid for (_t, sid) in stored) == sorted(r.sample_id for r in acknowledged)
    assert all(stored[("t", r.sample_id)].text == r.text for r in acknowledged)


def test_store_failure_while_the_feed_fails_too_prints_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    """The store fails on an answer and the request feed fails too (a registration that was never
    committed): the dispatcher raises one of them, and asyncio has no other one left to print as a
    traceback ("Task exception was never retrieved") after the one-line error."""
    import asyncio
    import gc
    import logging

    from aiohttp import web

    from vlmparity.client import BackendKind, Dispatcher, ResolvedEndpoint, Result
    from vlmparity.errors import DataError

    answer = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Yes"}, "finish_reason": "stop"}]
    }

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response(answer)

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        root = f"http://127.0.0.1:{runner.addresses[0][1]}"
        ep = ResolvedEndpoint(
            name="e", kind=BackendKind("vllm"), url=root, root_url=root, api_base=root + "/v1",
            chat_url=root + "/v1/chat/completions", model="m",
        )  # fmt: skip
        store_failed = asyncio.Event()

        def on_result(result: Result) -> None:
            store_failed.set()
            raise DataError("cannot write to the run store: database or disk is full")

        async def feed() -> Any:
            yield "0", {"messages": [{"role": "user", "content": "Is it?"}], "max_tokens": 4}
            await store_failed.wait()
            await asyncio.sleep(0.05)  # the consumer has died with the store's error by now
            raise DataError("cannot write to the run store: a registration was not committed")

        try:
            with pytest.raises(DataError):
                await Dispatcher(ep, concurrency=1).run(feed(), on_result)
        finally:
            await runner.cleanup()

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(main())
        gc.collect()
    assert "never retrieved" not in caplog.text, caplog.text
