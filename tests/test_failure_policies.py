"""Issue 10: the three scoring policies and outcomes that never depend on timing.

A simulated vLLM refuses a deterministic share of the multi-image requests (chosen by a hash of the prompt
text) with vLLM's 400 "At most 1 image(s) may be provided in one prompt.". The `lmms-eval` policy's
scores and per-sample parsed predictions must equal an independent replay of lmms-eval 0.7.3's rules,
written here from ../shared/research/lmms-eval.md (§4.5 failure text, §2.5-2.7 MMMU parse, random fallback
`random.seed(0)` drawn in document order) on the answers the simulator logged. The same command gives the
same results.json and samples files at any concurrency and after a kill and a resume.
"""

from __future__ import annotations

import ast
import json
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from vlmparity import runner
from vlmparity.config import RunConfig, RunOptions, SamplingPlan, parse_endpoints
from vlmparity.report.run_summary import run_outputs
from vlmparity.sim import SimConfig, SimServer
from vlmparity.tasks.failure_text import lmms_eval_failure_text, openai_exception_text

VLLM_MESSAGE = "At most 1 image(s) may be provided in one prompt."

# ----- the failure text (openai-python's exception text, lmms-eval's wrapper) --------------------------


def test_failure_text_as_lmms_eval_and_openai_python_write_it() -> None:
    nested = json.dumps(
        {"error": {"message": VLLM_MESSAGE, "type": "BadRequestError", "param": "image", "code": 400}}
    )
    flat = json.dumps(
        {"object": "error", "message": VLLM_MESSAGE, "type": "BadRequestError", "param": None, "code": 400}
    )
    ovms = json.dumps({"error": "Mediapipe execution failed. MP status - INVALID_ARGUMENT: x"})
    # openai-python >= 3.51: only the designated message
    assert openai_exception_text("unsupported", 400, nested) == f"Error code: 400 - {VLLM_MESSAGE}"
    assert openai_exception_text("unsupported", 400, flat) == f"Error code: 400 - {VLLM_MESSAGE}"
    assert openai_exception_text("http_error", 400, ovms) == "Error code: 400"  # "error" is a string
    assert openai_exception_text("http_error", 502, "<html>Bad gateway</html>") == "Error code: 502"
    assert openai_exception_text("http_error", 500, None) == "Error code: 500"
    assert openai_exception_text("timeout", None, None) == "Request timed out."
    assert openai_exception_text("connection", None, None) == "Connection error."
    # older openai-python: the whole parsed body as Python prints a dict, or the raw text
    assert openai_exception_text("unsupported", 400, flat, style="body") == (
        "Error code: 400 - {'object': 'error', 'message': '" + VLLM_MESSAGE + "', 'type': "
        "'BadRequestError', 'param': None, 'code': 400}"
    )
    assert openai_exception_text("http_error", 502, " Bad gateway\n", style="body") == "Bad gateway"
    # lmms-eval: N retries, newlines as spaces, the first 200 characters of the exception text
    long = json.dumps({"error": {"message": "line one\nline two " + "x" * 300}})
    text = lmms_eval_failure_text("http_error", 400, long, max_retries=3)
    assert text.startswith("[LMMS_EVAL_REQUEST_FAILED after 3 retries] Error code: 400 - line one line two x")
    assert len(text) == len("[LMMS_EVAL_REQUEST_FAILED after 3 retries] ") + 200


# ----- an independent replay of lmms-eval 0.7.3's MMMU scoring (from research/lmms-eval.md) ------------


def _replay_mc(response: str, letters: list[str], index2ans: dict[str, str], rng: random.Random) -> str:
    for ch in [",", ".", "!", "?", ";", ":", "'"]:
        response = response.strip(ch)
    response = " " + response + " "
    index_ans, ans_with_brack = True, False
    candidates = [x for x in letters if f"({x})" in response]
    if candidates:
        ans_with_brack = True
    else:
        candidates = [x for x in letters if f"{x} " in response]
    if not candidates:
        candidates = [x for x in letters if f"{x}." in response]
    if not candidates and len(response.split()) > 5:
        candidates = [x for x in letters if index2ans[x].lower() in response.lower()]
        index_ans = False
    if not candidates:
        return rng.choice(letters)
    if len(candidates) == 1:
        return candidates[0]
    if index_ans and ans_with_brack:
        pos = [response.rfind(f"({x})") for x in candidates]
    elif index_ans:
        pos = [response.rfind(f" {x} ") for x in candidates]
    else:
        pos = [response.lower().rfind(index2ans[x].lower()) for x in candidates]
    return candidates[pos.index(max(pos))]  # ties: the first, as numpy's argmax


def _replay_numbers(s: str) -> list[str]:
    commas = re.findall(r"-?\b\d{1,3}(?:,\d{3})+\b", s)
    sci = re.findall(r"-?\d+(?:\.\d+)?[eE][+-]?\d+", s)
    simple = re.findall(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])", s)
    return commas + sci + simple


def _replay_normalize(s: str) -> list[Any]:
    s = s.strip()
    try:
        return [round(float(s.replace(",", "")), 2)]
    except ValueError:
        s = s.lower()
        return [" " + s, s + " "] if len(s) == 1 else [s]


def _replay_open(response: str) -> list[Any]:
    resp = response.strip().strip(".").lower()
    subs = re.split(r"\.\s(?=[A-Z])|\n", resp)
    keys = []
    for i, sub in enumerate(subs):
        indicators = ["could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result "]
        if i == len(subs) - 1:
            indicators.append("=")
        shortest: str | None = None
        for ind in indicators:
            if ind in sub:
                tail = sub.split(ind)[-1].strip()
                if shortest is None or len(tail) < len(shortest):
                    shortest = tail
        if shortest and shortest not in [":", ",", ".", "!", "?", ";", ":", "'"]:
            keys.append(shortest)
    if not keys:
        keys = [resp]
    preds: list[str] = list(keys)
    for k in keys:
        preds += _replay_numbers(k)
    out: list[Any] = []
    for p in preds:
        out += _replay_normalize(p)
    return list(set(out))


def _replay_open_correct(gold: str, preds: list[Any]) -> bool:
    golds = _replay_normalize(gold)
    for p in preds:
        if isinstance(p, str):
            if any(isinstance(g, str) and g in p for g in golds):
                return True
        elif p in golds:
            return True
    return False


def _strip_reasoning(text: str) -> str:
    for start, end in (("<think>", "</think>"), ("<analysis>", "</analysis>")):
        while start in text and end in text and text.index(start) < text.index(end):
            text = text[: text.index(start)] + text[text.index(end) + len(end) :]
        if end in text and start not in text:
            text = text.split(end)[-1]
    return text.strip()


def replay_lmms_eval(rows: list[dict[str, Any]], responses: list[str]) -> tuple[list[Any], float]:
    """Per-sample parsed predictions and mmmu_acc of lmms-eval 0.7.3, rows in document order."""
    rng = random.Random(0)  # random.seed(0) once, draws in document order
    parsed: list[Any] = []
    correct = 0
    for row, response in zip(rows, responses, strict=True):
        text = _strip_reasoning(response)
        if row["question_type"] == "multiple-choice":
            options = ast.literal_eval(row["options"])
            letters = [chr(65 + i) for i in range(len(options))]
            letter = _replay_mc(text, letters, dict(zip(letters, options, strict=True)), rng)
            parsed.append(letter)
            correct += letter == row["answer"]
        else:
            preds = _replay_open(text)
            parsed.append(preds)
            correct += _replay_open_correct(row["answer"], preds)
    return parsed, round(correct / len(rows), 5)


# ----- runs against a simulator that refuses some multi-image requests ----------------------------------


@pytest.fixture(scope="module")
def mmmu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from vlmparity.synth import write_mmmu

    return write_mmmu(tmp_path_factory.mktemp("refusals") / "mmmu", n=160, seed=5, workers=1)


def _rows(path: Path) -> list[dict[str, Any]]:
    from vlmparity.data.sources import load_rows

    return list(load_rows(path, split="validation"))


def _sim(mmmu: Path, fraction: float, **load: float) -> SimServer:
    cfg = {"capacity": 8, "base_latency": 0.002, "per_image": 0.0, "per_token": 0.0} | load
    return SimServer(
        SimConfig(personality="vllm", data=[mmmu], image_limit=None, multi_image_reject=fraction, load=cfg)
    )


def _config(mmmu: Path, url: str, out: Path, **options: Any) -> RunConfig:
    return RunConfig(
        endpoints=parse_endpoints([f"vllm={url}"]),
        tasks=("mmmu_val",),
        data={"mmmu_val": str(mmmu)},
        plan=SamplingPlan(),
        options=RunOptions(output_path=out, log_samples=True, **options),
    )


_VARYING = {"latency", "ttft", "date", "start_time", "end_time", "total_evaluation_time_seconds", "created"}


def _scrub(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _scrub(v) for k, v in doc.items() if k not in _VARYING}
    if isinstance(doc, list):
        return [_scrub(v) for v in doc]
    return doc


def _outputs(out: Path) -> dict[str, Any]:
    """results.json and the samples file of the endpoint, timestamps and latencies aside."""
    results = sorted((out / "vllm").glob("*_results.json"))
    samples = sorted((out / "vllm").glob("*_samples_mmmu_val.jsonl"))
    assert results and samples
    doc = json.loads(results[-1].read_text())
    for key in (
        "config",
        "model_name",
        "model_name_sanitized",
        "git_hash",
        "pretty_env_info",
        "transformers_version",
    ):
        doc.pop(key, None)
    lines = [json.loads(x) for x in samples[-1].read_text().splitlines()]
    return {"results": _scrub(doc), "samples": _scrub(lines)}


@pytest.fixture(scope="module")
def refusing(mmmu: Path) -> Iterator[SimServer]:
    with _sim(mmmu, 0.08) as sim:
        yield sim


def test_defaults_send_every_question_and_lmms_eval_policy_equals_the_replay(
    mmmu: Path, refusing: SimServer, tmp_path: Path
) -> None:
    refusing.clear_log()
    outcome = runner.run(_config(mmmu, refusing.url, tmp_path / "out"), outputs=run_outputs())
    assert outcome.errors == {}
    rows = _rows(mmmu)
    score = outcome.scores["vllm"][0]
    # defaults send every question: one request per sample, the refused ones included
    log = [e for e in refusing.chat_log if e.image_count]  # not the start-up probe's empty `{}`
    stored = {s.sample_id: s for s in _store_samples(tmp_path / "out")}
    assert {e.body_hash for e in log} == {s.request_hash for s in stored.values()}
    refused = [e for e in log if e.status == 400]
    multi = [e for e in log if e.image_count >= 2]
    assert refused and all(e.image_count >= 2 for e in refused)
    assert len(refused) < len(multi)  # only some are refused: the others are answered
    # the responses lmms-eval would have scored, taken from the server's own log
    by_hash = {e.body_hash: e for e in log}
    responses = []
    for row in rows:
        entry = by_hash[stored[row["id"]].request_hash]
        if entry.status == 400:
            responses.append("[LMMS_EVAL_REQUEST_FAILED after 5 retries] Error code: 400 - " + VLLM_MESSAGE)
        else:
            responses.append(entry.answer)
    parsed, acc = replay_lmms_eval(rows, responses)
    assert score.lmms_eval.result.metrics["mmmu_acc"] == acc
    ours = [sc.parsed for sc in score.scores]
    assert [set(p) if isinstance(p, list) else p for p in ours] == [
        set(p) if isinstance(p, list) else p for p in parsed
    ]
    # the same in the files lmms-eval users read
    files = _outputs(tmp_path / "out")
    assert files["results"]["results"]["mmmu_val"]["mmmu_acc,none"] == acc
    logged = [line["mmmu_acc"]["parsed_pred"][0] for line in files["samples"]]
    assert [set(p) if isinstance(p, list) else p for p in logged] == [
        set(p) if isinstance(p, list) else p for p in parsed
    ]
    failed_lines = [line for line in files["samples"] if line["vlmparity"]["outcome"] == "unsupported"]
    assert len(failed_lines) == len(refused)
    failure = f"[LMMS_EVAL_REQUEST_FAILED after 5 retries] Error code: 400 - {VLLM_MESSAGE}"
    assert {line["filtered_resps"] for line in failed_lines} == {failure}
    # strict: each refusal wrong with no draw; answered: refusals left out
    vl = files["results"]["vlmparity"]["tasks"]["mmmu_val"]
    assert vl["strict"]["n"] == len(rows) and vl["answered"]["n"] == len(rows) - len(refused)
    assert vl["lmms_eval"]["metrics"]["mmmu_acc"] == acc


def _store_samples(out: Path) -> list[Any]:
    from vlmparity.store import Store

    with Store.open(out, create=False) as st:
        return list(st.samples().values())


def test_results_identical_at_concurrency_1_and_auto(mmmu: Path, refusing: SimServer, tmp_path: Path) -> None:
    one = runner.run(_config(mmmu, refusing.url, tmp_path / "c1", concurrency=1), outputs=run_outputs())
    auto = runner.run(_config(mmmu, refusing.url, tmp_path / "auto"), outputs=run_outputs())
    assert one.errors == auto.errors == {}
    assert _outputs(tmp_path / "c1") == _outputs(tmp_path / "auto")


@pytest.mark.slow
@pytest.mark.parametrize("concurrency", ["4", "64"])
def test_results_identical_at_other_concurrencies(
    mmmu: Path, refusing: SimServer, tmp_path: Path, concurrency: str
) -> None:
    ref = runner.run(_config(mmmu, refusing.url, tmp_path / "ref", concurrency=1), outputs=run_outputs())
    other = runner.run(
        _config(mmmu, refusing.url, tmp_path / "other", concurrency=int(concurrency)), outputs=run_outputs()
    )
    assert ref.errors == other.errors == {}
    assert _outputs(tmp_path / "ref") == _outputs(tmp_path / "other")


@pytest.mark.slow
def test_results_identical_after_a_kill_and_a_resume(mmmu: Path, tmp_path: Path) -> None:
    with _sim(mmmu, 0.08, capacity=2, base_latency=0.05) as sim:
        out = tmp_path / "killed"
        args = [sys.executable, "-m", "vlmparity", "run", "-e", f"vllm={sim.url}", "--tasks", "mmmu_val",
                "--data", f"mmmu_val={mmmu}", "-o", str(out), "--log-samples", "--concurrency", "auto"]  # fmt: skip
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        n = 0
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and n < 40 and proc.poll() is None:
            time.sleep(0.05)
            if (out / "vlmparity.sqlite").exists():
                try:
                    with sqlite3.connect(out / "vlmparity.sqlite", timeout=5) as conn:
                        n = conn.execute("SELECT count(*) FROM results").fetchone()[0]
                except sqlite3.OperationalError:
                    n = 0
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        assert 0 < n < 160, "the kill must land mid-run"
        again = subprocess.run(args, capture_output=True, text=True, timeout=300)
        assert again.returncode == 0, again.stderr
        ref = runner.run(_config(mmmu, sim.url, tmp_path / "ref", concurrency=1), outputs=run_outputs())
        assert ref.errors == {}
    assert _outputs(out) == _outputs(tmp_path / "ref")
