"""Fault soak: `vlmparity run` against simulated vLLM and OVMS servers that fail 30 % of requests in every
way the simulator knows (500, 503 and 429 with Retry-After, connection reset, hang past the client's
timeout, truncated JSON, a 200 that is not JSON, a proxy's HTML page).

What must hold (issue 4 and 7): the final results equal the fault-free run's, and every stored attempt
count and outcome class agrees with what the servers say they received and injected: each retry was
caused by an injected transient fault, nothing permanent was retried, and a sample that ran out of
retries is stored as the class of the fault that ended it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

import torture_support as ts
from vlmparity.sim import SimConfig, SimServer
from vlmparity.sim.reqlog import LogEntry

pytestmark = pytest.mark.slow

ENDPOINTS = ("vllm", "ovms")
LOAD = {"capacity": 16, "base_latency": 0.02, "per_image": 0.0, "per_token": 0.0}
# --timeout per attempt: far above a healthy answer (~20 ms), so only an injected hang times out
TIMEOUT_S = 3
FAULTS = {
    "p_500": 0.05,
    "p_503": 0.04,
    "p_429": 0.04,
    "p_reset": 0.04,
    "p_hang": 0.03,
    "p_truncated": 0.04,
    "p_non_json": 0.03,
    "p_html": 0.03,
    "retry_after": 1,
    "hang_seconds": 6,  # longer than --timeout: the client gives up on the attempt
}
assert abs(sum(v for k, v in FAULTS.items() if k.startswith("p_")) - 0.30) < 1e-9

# What each injected fault looks like to a client (DESIGN.md outcome classes): (outcome, HTTP status).
FAULT_OUTCOME: dict[str, tuple[str, int | None]] = {
    "http_500": ("http_error", 500),
    "http_503": ("http_error", 503),
    "http_429": ("http_error", 429),
    "html": ("http_error", 502),  # a proxy's error page
    "non_json": ("malformed", 200),  # a 200 whose body is not JSON
    "reset": ("connection", None),
    "truncated": ("connection", None),  # the body ends before its Content-Length
    "hang": ("timeout", None),
}
# The parts of a result that do not depend on how it was obtained (attempts and timings do).
COMPARED = ("request_hash", "outcome", "text", "finish_reason", "prompt_tokens", "completion_tokens")
# results.json keys that hold times or the server's URL (the fault-free run used other servers)
NOT_COMPARED = ("date", "start_time", "end_time", "total_evaluation_time_seconds", "config", "vlmparity")


@contextmanager
def _sims(
    data: list[Path], faults: dict[str, Any] | None, seeds: tuple[int, int]
) -> Iterator[dict[str, SimServer]]:
    def cfg(personality: str, seed: int) -> SimConfig:
        extra = {"faults": {**faults, "fault_seed": seed}} if faults else {}
        return SimConfig(personality=personality, data=data, image_limit=1, load=LOAD, **extra)  # type: ignore[arg-type]

    with SimServer(cfg("vllm", seeds[0])) as vllm, SimServer(cfg("ovms", seeds[1])) as ovms:
        yield {"vllm": vllm, "ovms": ovms}


@pytest.fixture(scope="module")
def data(synth_mme_small: Path, synth_mmmu_small: Path) -> dict[str, Path]:
    return {"mme": synth_mme_small, "mmmu_val": synth_mmmu_small}


@pytest.fixture(scope="module")
def faulty(data: dict[str, Path]) -> Iterator[dict[str, SimServer]]:
    with _sims(list(data.values()), FAULTS, (101, 202)) as sims:
        yield sims


def _cmd(data: dict[str, Path], sims: dict[str, SimServer], out: Path, *extra: str) -> list[str]:
    eps = [a for name in ENDPOINTS for a in ("-e", f"{name}={sims[name].url}")]
    return ts.vlmparity_cmd(
        "run", *eps, "--tasks", "mme,mmmu_val", "--data", f"mme={data['mme']}",
        "--data", f"mmmu_val={data['mmmu_val']}", "-o", str(out), "--timeout", str(TIMEOUT_S),
        "--concurrency", "8", *extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def clean_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The fault-free run of the same data on the same kinds of server: its output folder."""
    out = tmp_path_factory.mktemp("clean") / "out"
    with _sims(list(data.values()), None, (0, 0)) as sims:
        inv = ts.invoke(_cmd(data, sims, out), out.parent / "clean.log")
        assert inv.returncode == 0, inv.stderr
        assert sum(sims["ovms"].fault_counts.values()) == 0
    return out


def _compared(out: Path) -> dict[ts.Key, tuple[Any, ...]]:
    return {k: tuple(r[c] for c in COMPARED) for k, r in ts.rows(out / ts.STORE).items()}


def _results_doc(out: Path, endpoint: str) -> dict[str, Any]:
    """The newest results.json of an endpoint: metrics, outcome counts, intervals (no times, no URLs)."""
    doc = json.loads(sorted((out / endpoint).glob("*_results.json"))[-1].read_text())
    kept = {k: v for k, v in doc.items() if k not in NOT_COMPARED}
    kept["vlmparity.tasks"] = doc["vlmparity"]["tasks"]
    return kept


def _check_accounting(
    out: Path,
    inv: ts.Invocation,
    before: dict[ts.Key, dict[str, Any]],
    after: dict[ts.Key, dict[str, Any]],
    sims: dict[str, SimServer],
    max_attempts: int,
) -> Counter[str]:
    """Per endpoint and sample, what the store says about one invocation against what the server logged
    during it. Returns the outcome classes of the samples that ran out of retries."""
    exhausted: Counter[str] = Counter()
    hashes = {r["request_hash"] for r in after.values()}
    for name, sim in sims.items():
        arrivals: dict[str, list[LogEntry]] = defaultdict(list)
        for e in sim.chat_log:
            if e.body_hash in hashes and inv.spawned <= e.time <= inv.ended:
                arrivals[e.body_hash].append(e)
        retries = 0
        for key, row in after.items():
            if key[0] != name:
                continue
            got = sorted(arrivals.pop(row["request_hash"], []), key=lambda e: e.attempt)
            where = f"{name} {key[1]} {key[2]}"
            if before.get(key) == row:  # done before this invocation: not sent again
                assert not got, f"{where}: sent {len(got)} time(s) though already stored"
                continue
            assert row["attempts"] == len(got), (
                f"{where}: stored {row['attempts']} attempts, server saw {len(got)}"
            )
            if not got:  # known image limit: recorded `unsupported` without sending
                assert (row["outcome"], row["transient"]) == ("unsupported", 0), where
                continue
            retries += len(got) - 1
            assert [e.attempt for e in got] == list(range(got[0].attempt, got[0].attempt + len(got))), where
            retried = [e.fault for e in got[:-1]]
            assert None not in retried, (
                f"{where}: retried after a response without an injected fault: {retried}"
            )
            last = got[-1]
            # A fault applied to the response (truncated, non-JSON) is pre-empted when the simulated vLLM
            # refuses the request for its images first: the client got the plain 400.
            if last.fault in ("truncated", "non_json") and last.status == 400:
                last = replace(last, fault=None)
            if last.fault is None:
                assert row["transient"] == 0, where
                if last.status == 400:  # the image limit: permanent, never retried
                    assert name == "vllm" and last.image_count > 1 and row["outcome"] == "unsupported", where
                else:
                    assert (row["outcome"], row["text"], row["status"]) == ("ok", last.answer, 200), where
            else:  # every attempt failed: stored as the class of the last fault, to be retried by a rerun
                assert row["attempts"] == max_attempts, f"{where}: gave up early after {last.fault}"
                assert (row["outcome"], row["status"]) == FAULT_OUTCOME[last.fault], (where, last.fault, row)
                assert row["transient"] == 1 and row["text"] is None, where
                exhausted[row["outcome"]] += 1
        assert not arrivals, f"{name}: requests for bodies with no stored result: {list(arrivals)[:3]}"
        sessions = json.loads((out / "run.json").read_text())["sessions"]
        assert sessions[name]["retries"] == retries, (name, sessions[name], retries)
    return exhausted


def _rerun_until_done(
    cmd: list[str], out: Path, sims: dict[str, SimServer], tmp: Path, start: int, max_attempts: int
) -> None:
    """Rerun the same command (the documented remedy) while some sample holds a transient failure."""
    for i in range(start, start + 4):
        before = ts.rows(out / ts.STORE)
        if not any(r["transient"] for r in before.values()):
            return
        inv = ts.invoke(cmd, tmp / f"run{i}.log")
        assert inv.returncode == 0, inv.stderr
        _check_accounting(out, inv, before, ts.rows(out / ts.STORE), sims, max_attempts)
    raise AssertionError("transient failures left after 4 reruns")


def _faulted(sims: dict[str, SimServer]) -> Counter[str]:
    return Counter(e.fault for sim in sims.values() for e in sim.chat_log if e.fault)


def test_soak_thirty_percent_faults_equal_the_fault_free_run(
    data: dict[str, Path], faulty: dict[str, SimServer], clean_run: Path, tmp_path: Path
) -> None:
    for sim in faulty.values():
        sim.clear_log()
    counts_before = _counts(faulty)
    out = tmp_path / "out"
    cmd = _cmd(data, faulty, out)
    inv = ts.invoke(cmd, tmp_path / "run0.log")
    assert inv.returncode == 0, inv.stderr
    rows = ts.rows(out / ts.STORE)
    _check_accounting(out, inv, {}, rows, faulty, max_attempts=6)  # --max-retries 5 (the default)

    # the servers really failed ~30 % of the time, in every way they know, and their logs say so
    hashes = {r["request_hash"] for r in rows.values()}
    sample_faults = Counter(
        e.fault for sim in faulty.values() for e in sim.chat_log if e.fault and e.body_hash in hashes
    )
    sent = sum(1 for sim in faulty.values() for e in sim.chat_log if e.body_hash in hashes)
    assert set(sample_faults) == set(FAULT_OUTCOME), sample_faults
    assert 0.2 < sum(sample_faults.values()) / sent < 0.4, (sample_faults, sent)
    assert _faulted(faulty) == _counts(faulty) - counts_before

    _rerun_until_done(cmd, out, faulty, tmp_path, 1, max_attempts=6)
    assert _compared(out) == _compared(clean_run)
    for name in ENDPOINTS:
        assert _results_doc(out, name) == _results_doc(clean_run, name)


def _counts(sims: dict[str, SimServer]) -> Counter[str]:
    """The faults the servers count as injected so far."""
    return sum((Counter(sim.fault_counts) for sim in sims.values()), Counter())


def test_soak_exhausted_retries_stored_as_the_injected_class_then_resumed(
    data: dict[str, Path], faulty: dict[str, SimServer], clean_run: Path, tmp_path: Path
) -> None:
    # One retry only: ~9 % of the samples run out of attempts, each stored as the class of its last fault.
    for sim in faulty.values():
        sim.clear_log()
    out = tmp_path / "out"
    inv = ts.invoke(_cmd(data, faulty, out, "--max-retries", "1"), tmp_path / "run0.log")
    assert inv.returncode == 0, inv.stderr
    rows = ts.rows(out / ts.STORE)
    exhausted = _check_accounting(out, inv, {}, rows, faulty, max_attempts=2)
    assert sum(exhausted.values()) >= 5 and {"http_error", "connection"} <= set(exhausted), exhausted

    # results.json counts them per class, and scores them as failures under every policy
    for name in ENDPOINTS:
        doc = json.loads(sorted((out / name).glob("*_results.json"))[-1].read_text())
        for task, info in doc["vlmparity"]["tasks"].items():
            mine = Counter(r["outcome"] for k, r in rows.items() if k[0] == name and k[1] == task)
            assert info["outcomes"] == dict(mine), (name, task)
            failures = sum(n for o, n in mine.items() if o not in ("ok", "length", "empty"))
            assert info["lmms_eval"]["n"] - info["answered"]["n"] == failures
            assert info["strict"]["n"] == info["lmms_eval"]["n"]

    # the same command with the default retries resends exactly the transient failures and ends equal
    _rerun_until_done(_cmd(data, faulty, out), out, faulty, tmp_path, 1, max_attempts=6)
    assert _compared(out) == _compared(clean_run)
    for name in ENDPOINTS:
        assert _results_doc(out, name) == _results_doc(clean_run, name)
