"""`vlmparity run` against a real vLLM (CPU build) serving the tiny random LLaVA (issue 6, item 1).

Needs the server `.ci/real_vllm.sh up` starts (VLMPARITY_VLLM_URL; `--limit-mm-per-prompt 1`); without it every
test here is skipped. The kill/resume test starts a second vLLM of its own with `vlmparity launch vllm`, from the
venv and model folder that script made (VLMPARITY_VLLM_VENV / VLMPARITY_TINY_LLAVA, else the script's defaults).

Expected values come from the data (how many MMMU questions name more than one image: lmms-eval sends each
`<image N>` of question and options once), from vLLM's documented behaviour (one image per prompt under the
limit, a 400 `At most 1 image(s) may be provided in one prompt.` beyond it, greedy decoding is deterministic:
../shared/research/real-vllm.md §B) and from the run contract (every answer stored as it arrives; a rerun
sends only what is missing) — never from running the code under test.

Cost with the shared server already up (measured on 2 shared cores): 10-30 s for the two runs; the
kill/resume test 115-215 s (two starts of a second vLLM, 20-60 s each, the killed run waiting ~60 s for its
circuit breaker to give up, the resume ~12 s).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

URL = os.environ.get("VLMPARITY_VLLM_URL", "").rstrip("/")

pytestmark = [
    pytest.mark.realengine,
    pytest.mark.skipif(
        not URL, reason="needs a real vLLM: set VLMPARITY_VLLM_URL (.ci/real_vllm.sh up does)"
    ),
]

N_MME = 20  # 10 image pairs
N_MMMU = 30  # the first subjects; 4 of them (seed 0) name 2-7 images
ANSWERED = {"ok", "length", "empty"}
LIMIT_MESSAGE = "At most 1 image(s) may be provided in one prompt."
PLACEHOLDER = re.compile(r"<image \d+>")

# Same defaults as .ci/real_vllm.sh (CACHE, VENV, MODEL_DIR there).
CACHE = Path(
    os.environ.get("VLMPARITY_CI_CACHE") or Path(os.environ.get("HOME") or "/tmp") / ".cache/vlmparity-ci"
)
VENV = Path(os.environ.get("VLMPARITY_VLLM_VENV") or CACHE / "venv-vllm")


# ----- helpers -----------------------------------------------------------------------------------------------


def vlmparity(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run the CLI as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args], capture_output=True, text=True, timeout=timeout
    )


def run_args(url: str, data: dict[str, Path], out: Path, *extra: str) -> list[str]:
    """`vlmparity run` of both synthetic sets against one endpoint named vllm."""
    return [
        "run", "--endpoint", f"vllm={url}", "--tasks", "mme,mmmu_val",
        "--data", f"mme={data['mme']}", "--data", f"mmmu_val={data['mmmu_val']}",
        "--output-path", str(out), *extra,
    ]  # fmt: skip


def stored(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every result row of a run store, keyed by (task, sample_id) (one endpoint per store here)."""
    conn = sqlite3.connect(out / "vlmparity.sqlite", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT * FROM results").fetchall()
    finally:
        conn.close()
    return {(r["task"], r["sample_id"]): dict(r) for r in rows}


def answered_count(out: Path) -> int:
    """Answers committed so far (0 while the store does not exist yet)."""
    path = out / "vlmparity.sqlite"
    if not path.exists():
        return 0
    try:
        conn = sqlite3.connect(path, timeout=1)
        try:
            row = conn.execute(
                "SELECT count(*) FROM results WHERE outcome IN ('ok', 'length', 'empty')"
            ).fetchone()
        finally:
            conn.close()
    except sqlite3.Error:  # created but the schema not yet committed
        return 0
    return int(row[0])


def multi_image_ids(mmmu_dir: Path) -> set[str]:
    """MMMU ids whose question and options name more than one distinct image: lmms-eval sends each once."""
    import pyarrow.parquet as pq

    ids = set()
    for path in sorted(mmmu_dir.rglob("*.parquet")):
        for row in pq.read_table(path, columns=["id", "question", "options"]).to_pylist():
            if len(set(PLACEHOLDER.findall(row["question"] + row["options"]))) > 1:
                ids.add(row["id"])
    return ids


def mmmu_ids(mmmu_dir: Path) -> set[str]:
    import pyarrow.parquet as pq

    return {
        row["id"]
        for path in sorted(mmmu_dir.rglob("*.parquet"))
        for row in pq.read_table(path, columns=["id"]).to_pylist()
    }


def texts(rows: dict[tuple[str, str], dict[str, Any]]) -> dict[tuple[str, str], tuple[str, str | None]]:
    return {k: (r["outcome"], r["text"]) for k, r in rows.items()}


# ----- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> dict[str, Any]:
    """The model the shared server lists (its `root` is the model folder vLLM loaded)."""
    resp = httpx.get(f"{URL}/models", timeout=30)
    assert resp.status_code == 200, resp.text
    card = resp.json()["data"][0]
    return {"name": card["id"], "root": card.get("root")}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Small synthetic MME (20) and MMMU-val (30) parquet folders, seed 0."""
    from vlmparity.synth import write_mme, write_mmmu

    base = tmp_path_factory.mktemp("real-run-data")
    return {
        "mme": write_mme(base / "mme", n=N_MME, seed=0),
        "mmmu_val": write_mmmu(base / "mmmu", n=N_MMMU, seed=0),
    }


@pytest.fixture(scope="module")
def first_run(data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One uninterrupted run of both sets against the shared server (adaptive concurrency)."""
    out = tmp_path_factory.mktemp("real-run") / "a"
    proc = vlmparity(*run_args(URL, data, out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return out


# ----- a run with multi-image questions ------------------------------------------------------------------------


def test_run_counts_multi_image_questions_as_unsupported(first_run: Path, data: dict[str, Path]) -> None:
    multi = multi_image_ids(data["mmmu_val"])
    assert multi, "the synthetic MMMU sample must hold multi-image questions for this test to mean anything"
    rows = stored(first_run)
    assert len(rows) == N_MME + N_MMMU  # every planned sample has a result

    mme = {k: r for k, r in rows.items() if k[0] == "mme"}
    mmmu = {k[1]: r for k, r in rows.items() if k[0] == "mmmu_val"}
    assert set(mmmu) == mmmu_ids(data["mmmu_val"])
    assert len(mme) == N_MME and all(r["outcome"] in ANSWERED for r in mme.values())
    # exactly the multi-image questions are unsupported, and carry no text (not a wrong answer)
    assert {sid for sid, r in mmmu.items() if r["outcome"] == "unsupported"} == multi
    assert all(mmmu[sid]["text"] is None for sid in multi)
    assert all(
        r["outcome"] in ANSWERED and isinstance(r["text"], str) for sid, r in mmmu.items() if sid not in multi
    )
    # the limit was the real server's 400 (the first one sent), later ones were recorded without sending
    messages = [mmmu[sid]["server_message"] or "" for sid in multi]
    assert any(m.startswith(LIMIT_MESSAGE) for m in messages), messages
    assert all(LIMIT_MESSAGE in m for m in messages), messages

    # the same counts in run.json and in the lmms-eval results file
    run_json = json.loads((first_run / "run.json").read_text())
    assert run_json["status"] == "complete"
    (endpoint,) = run_json["endpoints"]
    assert endpoint["kind"] == "vllm" and endpoint["image_limit_refused"] == 1  # every question was sent
    result = run_json["results"]["vllm"]["mmmu_val"]
    assert result["outcomes"].get("unsupported") == len(multi)
    assert sum(n for o, n in result["outcomes"].items() if o in ANSWERED) == N_MMMU - len(multi)
    assert result["lmms_eval"]["n"] == result["strict"]["n"] == N_MMMU  # a failure is scored
    assert result["answered"]["n"] == N_MMMU - len(multi)
    assert sum(run_json["results"]["vllm"]["mme"]["outcomes"].values()) == N_MME
    (results_file,) = sorted((first_run / "vllm").glob("*_results.json"))
    extra = json.loads(results_file.read_text())["vlmparity"]["tasks"]["mmmu_val"]
    assert extra["outcomes"].get("unsupported") == len(multi)


def test_same_run_twice_gives_byte_identical_answers(
    first_run: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    second = tmp_path / "b"
    proc = vlmparity(*run_args(URL, data, second))
    assert proc.returncode == 0, proc.stderr
    a, b = stored(first_run), stored(second)
    assert a.keys() == b.keys()
    assert {k: r["request_hash"] for k, r in a.items()} == {k: r["request_hash"] for k, r in b.items()}
    assert texts(a) == texts(b)
    # real texts were compared, not only failures
    assert sum(1 for r in a.values() if r["outcome"] in ANSWERED and r["text"]) >= N_MME


# ----- kill the server mid-run, restart it, resume --------------------------------------------------------------


@dataclass
class SecondServer:
    """A second vLLM started by `vlmparity launch vllm` on a port of its own."""

    args: list[str]
    state: Path
    log: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> None:
        proc = vlmparity(*self.args, timeout=420)
        assert proc.returncode == 0, f"{proc.stderr}\n--- log tail:\n{_tail(self.log)}"
        assert proc.stdout.strip().endswith(self.url), proc.stdout

    def pid(self) -> int | None:
        with contextlib.suppress(OSError, ValueError, KeyError):
            return int(json.loads(self.state.read_text())["pid"])
        return None

    def kill(self) -> None:
        """SIGKILL the whole process group (API server, engine core, worker) and wait until it is gone."""
        from vlmparity.launch.common import group_alive, port_in_use

        pid = self.pid()
        assert pid is not None, "no state file: was the server started?"
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while (group_alive(pid) or port_in_use("127.0.0.1", self.port)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not port_in_use("127.0.0.1", self.port), "the killed server still accepts connections"

    def stop(self) -> None:
        """Stop it whatever state it is in (finalizer): `launch stop`, then SIGKILL what may be left."""
        pid = self.pid()
        if self.state.exists():
            vlmparity("launch", "stop", "--state-file", str(self.state), "--grace", "5", timeout=60)
        if pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


def _tail(path: Path, lines: int = 30) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    return "(no log)"


@pytest.fixture
def second_server(served: dict[str, Any], tmp_path: Path) -> Iterator[SecondServer]:
    """A second tiny-LLaVA vLLM (not yet started); stopped at the end even when the test fails."""
    from vlmparity.launch.common import free_port

    model = Path(os.environ.get("VLMPARITY_TINY_LLAVA") or served["root"] or CACHE / "tiny-llava")
    if not (VENV / "bin" / "python").exists() or not (model / "config.json").exists():
        pytest.skip(f"needs the vLLM venv {VENV} and the tiny model {model} (.ci/real_vllm.sh install build)")
    port = free_port()
    state, log = tmp_path / "vllm2.json", tmp_path / "vllm2.log"
    args = [
        "launch", "vllm", "--model", str(model), "--served-model-name", served["name"],
        "--python", str(VENV), "--host", "127.0.0.1", "--port", str(port),
        "--limit-mm-per-prompt", "1", "--max-model-len", "2048", "--dtype", "float32", "--enforce-eager",
        "--kv-cache-gb", "1", "--log", str(log), "--state-file", str(state), "--ready-timeout", "360",
    ]  # fmt: skip
    server = SecondServer(args, state, log, port)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.timeout(1200)
def test_server_killed_mid_run_then_restarted_resumes_with_nothing_lost(
    second_server: SecondServer, first_run: Path, data: dict[str, Path], tmp_path: Path
) -> None:
    second_server.start()
    out = tmp_path / "killed"
    # One request at a time and one retry: the kill lands between stored answers, the failing tail is short.
    args = run_args(second_server.url, data, out, "--concurrency", "1", "--max-retries", "1")
    with (tmp_path / "run1.err").open("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vlmparity", *args], stdout=subprocess.DEVNULL, stderr=err, text=True
        )
        try:
            deadline = time.monotonic() + 300
            while answered_count(out) < 6 and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.02)
            assert proc.poll() is None, "the run finished before the server could be killed"
            second_server.kill()
            code = proc.wait(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        err.seek(0)
        stderr = err.read()
    assert "Traceback" not in stderr, stderr
    before = stored(out)
    # ended cleanly: either aborted by its circuit breaker (exit 3, one error line) or with connection failures
    if code == 3:
        assert "vlmparity: error:" in stderr and "connection" in stderr, stderr
    else:
        assert code == 0 and any(r["outcome"] == "connection" for r in before.values()), stderr
    done_before = {k: r for k, r in before.items() if r["outcome"] in ANSWERED or not r["transient"]}
    answered_before = {k: r for k, r in before.items() if r["outcome"] in ANSWERED}
    assert 6 <= len(answered_before) < N_MME + N_MMMU - len(multi_image_ids(data["mmmu_val"]))
    assert all(r["outcome"] in ANSWERED | {"connection", "unsupported"} for r in before.values())

    second_server.start()  # same port: the rerun is the very same command
    rerun = vlmparity(*args)
    assert rerun.returncode == 0, rerun.stderr
    after = stored(out)

    # none lost: every planned sample has its final outcome, as in the uninterrupted run
    assert texts(after) == texts(stored(first_run))
    assert not any(r["outcome"] == "connection" for r in after.values())
    # the answers stored before the kill were kept as they were (same text, same commit time: not resent)
    for key, rec in answered_before.items():
        assert {c: after[key][c] for c in ("text", "request_hash", "created", "latency")} == {
            c: rec[c] for c in ("text", "request_hash", "created", "latency")
        }
    # the rerun sent (or recorded as over the image limit) exactly what was not done before the kill
    session = json.loads((out / "run.json").read_text())["sessions"]["vllm"]
    assert session["sent"] + session["not_sent"] == N_MME + N_MMMU - len(done_before)
