"""Token-level closeness end to end (issue 15): simulated engines with one injected cause each, over HTTP,
through `vlmparity compare`; the JSON verdict must name the injected cause (and none when nothing is
injected). The expected causes and figures come from the injected knobs, not from the analysis code:
a BOS offset of +1 is "+1 on every sample", 1152 vs 576 image tokens is "+576 per image", a cap of one
token stops every longer answer at `length`, a model seed is other weights, noise flips near-ties.
"""

from __future__ import annotations

import json
import math
import sqlite3
from array import array
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest

from vlmparity.sim import SimConfig, SimServer

INSTANT = {"capacity": 16, "base_latency": 0.0, "per_image": 0.0, "per_token": 0.0, "time_scale": 0}


def sim(personality: str, data: list[Path], **extra: Any) -> SimConfig:
    if personality == "vllm":
        extra.setdefault("image_limit", None)
    return SimConfig(personality=personality, data=data, load=INSTANT, **extra)  # type: ignore[arg-type]


@contextmanager
def serving(*configs: SimConfig) -> Iterator[list[SimServer]]:
    with ExitStack() as stack:
        yield [stack.enter_context(SimServer(c)) for c in configs]


def main(args: list[str]) -> int:
    from vlmparity.cli import main as cli_main

    try:
        cli_main(args)
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def compare_json(
    tmp_path: Path, data: dict[str, Path], cand: dict[str, Any], *, extra: list[str] = ()
) -> tuple[int, dict[str, Any], list[SimServer]]:
    paths = list(data.values())
    out, verdict = tmp_path / "out", tmp_path / "verdict.json"
    args = ["--tasks", ",".join(data)]
    for task, path in data.items():
        args += ["--data", f"{task}={path}"]
    with serving(sim("vllm", paths), sim("ovms", paths, **cand)) as servers:
        ref, can = servers
        code = main(
            ["compare", "-e", f"ref={ref.url}", "-e", f"cand={can.url}", *args, "-o", str(out),
             "--json", str(verdict), *extra]
        )  # fmt: skip
    doc = json.loads(verdict.read_text())
    return code, doc["candidates"][0]["closeness"], servers


@pytest.fixture(scope="module")
def mme(synth_mme_small: Path) -> dict[str, Path]:
    return {"mme": synth_mme_small}


def causes(close: dict[str, Any]) -> list[str]:
    return [c["cause"] for c in close["causes"]]


def test_no_cause_injected_names_none_and_is_close(mme: dict[str, Path], tmp_path: Path) -> None:
    code, close, (ref, cand) = compare_json(tmp_path, mme, {})
    assert code in (0, 2)
    assert causes(close) == []
    assert close["statement"] == "numerically close"
    overall = close["overall"]
    assert overall["compared"] == 56 and overall["token_agreement"] == 1.0
    assert overall["abs_logprob_delta"]["max"] == 0.0 and overall["prompt_token_mismatch_share"] == 0.0
    assert close["disagreements"] == []
    # one probe per endpoint before the questions; identical bodies (logprobs on) on both engines
    assert len(ref.probe_log) == 1 and len(cand.probe_log) == 1
    assert ref.probe_log[0].time <= min(e.time for e in ref.chat_log if e.sample_id)
    assert {e.body_hash for e in ref.chat_log if e.sample_id} == {
        e.body_hash for e in cand.chat_log if e.sample_id
    }


def test_bos_offset_is_named_from_prompt_tokens(mme: dict[str, Path], tmp_path: Path) -> None:
    _, close, _ = compare_json(tmp_path, mme, {"tokens": {"bos_offset": 1}})
    assert causes(close) == ["BOS token / chat template"]
    assert "+1 on 56/56 samples" in close["causes"][0]["evidence"]
    assert close["overall"]["prompt_token_mismatch_share"] == 1.0


def test_image_token_count_is_named_per_image(synth_mmmu_small: Path, tmp_path: Path) -> None:
    data = {"mmmu_val": synth_mmmu_small}
    _, close, _ = compare_json(tmp_path, data, {"tokens_per_image": 1152})
    assert causes(close) == ["image-token count"]
    assert "+576 per image" in close["causes"][0]["evidence"]
    assert "scales with the number of images" in close["causes"][0]["evidence"]


def test_max_tokens_default_is_named_and_rows_are_length_limit(mme: dict[str, Path], tmp_path: Path) -> None:
    _, close, _ = compare_json(tmp_path, mme, {"tokens": {"max_tokens_cap": 1}})
    assert causes(close) == ["max-tokens default"]
    rows = close["disagreements"]
    assert rows and all(
        r["kind"] == "length-limit" and r["finish_reason"] == ["stop", "length"] for r in rows
    )
    assert all(r["cause"] == "max-tokens default" for r in rows)


def test_numeric_noise_flips_near_ties_only(mme: dict[str, Path], tmp_path: Path) -> None:
    _, close, _ = compare_json(tmp_path, mme, {"tokens": {"numeric_noise": 0.05, "noise_seed": 7}})
    assert causes(close) == ["numeric near-tie"]
    rows = close["disagreements"]
    assert rows, "noise of 0.05 flips some near-ties in 56 answers"
    for r in rows:
        assert r["cause"] == "numeric near-tie" and r["prompt_token_diff"] == 0
        assert r["kind"] in ("format-only", "answer flip")
        assert r["prefix_abs_logprob_delta_max"] is None or r["prefix_abs_logprob_delta_max"] <= 0.05
    d = close["overall"]["abs_logprob_delta"]
    # a gap perturbed by σ moves a two-way log-softmax by at most σ/2 per σ of noise
    assert 0 < d["median"] <= d["p95"] <= d["max"] < 0.05 * 6 / 2
    assert close["statement"] in ("numerically near", "numerically different")


def test_other_weights_are_named_from_the_first_token(mme: dict[str, Path], tmp_path: Path) -> None:
    _, close, _ = compare_json(tmp_path, mme, {"answers": {"model_seed": 99}})
    assert causes(close)[0] == "different weights or preprocessing"
    assert close["statement"] == "numerically different"


def test_report_shows_closeness_and_row_fingerprints(mme: dict[str, Path], tmp_path: Path) -> None:
    compare_json(tmp_path, mme, {"tokens": {"numeric_noise": 0.05, "noise_seed": 7}})
    html = (tmp_path / "out" / "report.html").read_text()
    assert 'id="closeness"' in html and "numeric near-tie" in html
    assert 'class="chart closeness-hist"' in html
    assert 'class="small fingerprint"' in html


# ----- the per-run logprobs decision, the store ---------------------------------------------------------


def run_args(url_a: str, url_b: str, data: Path, out: Path, *extra: str) -> list[str]:
    return ["run", "-e", f"a={url_a}", "-e", f"b={url_b}", "--tasks", "mme", "--data", f"mme={data}",
            "-o", str(out), "--limit", "8", *extra]  # fmt: skip


def test_endpoint_without_logprobs_turns_them_off_for_every_endpoint(
    synth_mme_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = [synth_mme_small]
    out = tmp_path / "o"
    with serving(sim("vllm", data), sim("ovms", data, tokens={"logprobs": False})) as (a, b):
        assert main(run_args(a.url, b.url, synth_mme_small, out)) == 0
        bodies = [e for s in (a, b) for e in s.chat_log if e.sample_id]
    assert "log-probabilities off for this run (b: the answer carries no log-probabilities)" in (
        capsys.readouterr().err
    )
    from vlmparity.store import Store
    from vlmparity.tasks.base import request_hash

    with Store.open(out) as store:
        hashes = {r.request_hash for r in store.samples().values()}
        assert store.get_meta("logprobs") is False
        assert all(store.traces(run.run_id) == {} for run in store.runs())
    assert {e.body_hash for e in bodies} == hashes and len(bodies) == 16
    # the stored hash is that of a body without `logprobs` (checked against a hash computed here)
    assert all(h != request_hash({"logprobs": True}) for h in hashes)


def test_resume_keeps_the_stored_setting_and_refuses_a_contrary_flag(
    synth_mme_small: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = [synth_mme_small]
    out = tmp_path / "o"
    with serving(sim("vllm", data), sim("ovms", data)) as (a, b):
        assert main(run_args(a.url, b.url, synth_mme_small, out, "--no-logprobs")) == 0
        assert main(run_args(a.url, b.url, synth_mme_small, out)) == 0  # auto: the store decides, no probe
        assert a.probe_log == [] and len([e for e in a.chat_log if e.sample_id]) == 8
        capsys.readouterr()
        assert main(run_args(a.url, b.url, synth_mme_small, out, "--logprobs")) == 4
    err = capsys.readouterr().err.strip().splitlines()
    assert any("made without log-probabilities" in line and "--no-logprobs" in line for line in err)
    assert "Traceback" not in "\n".join(err)


def test_store_without_tokens_table_is_upgraded_and_logprobs_are_float32(
    synth_mme_small: Path, tmp_path: Path
) -> None:
    data = [synth_mme_small]
    out = tmp_path / "o"
    with serving(sim("vllm", data), sim("ovms", data)) as (a, b):
        assert main(run_args(a.url, b.url, synth_mme_small, out)) == 0
        answers = {e.sample_id: e.answer for e in a.chat_log if e.sample_id}
    db = sqlite3.connect(out / "vlmparity.sqlite")
    rows = db.execute("SELECT t.n, t.logprobs, t.token_text FROM tokens t JOIN runs r USING (run_id) "
                      "WHERE r.endpoint = 'a'").fetchall()  # fmt: skip
    assert len(rows) == 8
    for n, blob, text in rows:
        assert len(blob) == 4 * n  # float32
        values = array("f")
        values.frombytes(blob)
        assert all(math.isfinite(v) and -math.log(2) - 1e-6 <= v <= 0 for v in values)
        assert "".join(json.loads(text)) in answers.values()
    # a store from before issue 15: no tokens table; opening it adds an empty one, answers untouched
    db.execute("DROP TABLE tokens")
    db.commit()
    n_results = db.execute("SELECT count(*) FROM results").fetchone()[0]
    db.close()
    from vlmparity.store import Store

    with Store.open(out) as store:
        assert store.has_tokens_table()
        assert all(store.traces(run.run_id) == {} for run in store.runs())
        assert sum(len(store.results(run.run_id)) for run in store.runs()) == n_results


def test_stream_with_logprobs_is_a_usage_error(synth_mme_small: Path, tmp_path: Path) -> None:
    code = main(run_args("http://127.0.0.1:9", "http://127.0.0.1:9", synth_mme_small, tmp_path / "o",
                         "--stream", "--logprobs"))  # fmt: skip
    assert code == 4


# ----- units: reading traces, kinds and causes of hand-made pairs ---------------------------------------


def test_extract_trace_reads_openai_logprobs_and_rejects_partial_ones() -> None:
    from vlmparity.client.logprobs import extract_trace

    choice = {"logprobs": {"content": [
        {"token": "Yes", "logprob": -0.25, "bytes": [89, 101, 115], "top_logprobs": []},
        {"token": "token_id:13", "logprob": -1.5},
    ]}}  # fmt: skip
    trace = extract_trace(choice)
    assert trace is not None and trace.logprobs == (-0.25, -1.5) and trace.tokens == ("Yes", "token_id:13")
    assert trace.token_ids is None  # only the second token carries an id
    assert extract_trace({"logprobs": None}) is None
    assert extract_trace({"logprobs": {"content": [{"token": "a", "logprob": float("nan")}]}}) is None
    assert extract_trace({"logprobs": {"content": [{"token": "a", "logprob": -1}, "junk"]}}) is None
    packed = trace.packed_logprobs()
    assert len(packed) == 8 and array("f", packed).tolist() == [-0.25, -1.5]  # both exact in float32


def _pair(text_a: str | None, text_b: str | None, parsed_a: Any, parsed_b: Any, images: int = 1) -> Any:
    from vlmparity.compare.join import Pair, Side
    from vlmparity.tasks.base import Sample

    sample = Sample(task="mme", id="s1", doc_id=0, target="Yes", group="g", cluster="c", images=(),
                    omitted_images=images)  # fmt: skip

    def side(text: str | None, parsed: Any) -> Side:
        return Side(outcome="ok" if text is not None else "timeout", text=text, parsed=parsed, correct=False)

    return Pair(sample, side(text_a, parsed_a), side(text_b, parsed_b))


def _rec(prompt: int, finish: str = "stop", completion: int = 2) -> Any:
    from vlmparity.store import ResultRecord

    return ResultRecord(run_id=1, task="mme", sample_id="s1", request_hash="h", outcome="ok",
                        finish_reason=finish, prompt_tokens=prompt, completion_tokens=completion)  # fmt: skip


def _trace(tokens: list[str], logprobs: list[float]) -> Any:
    from vlmparity.tokentrace import TokenTrace

    return TokenTrace(tuple(logprobs), tuple(tokens))


def test_kinds_and_causes_of_single_pairs() -> None:
    from vlmparity.compare.closeness import fingerprint

    # numeric near-tie: same prompt, agreeing prefix, both picks around p = 0.5 at the divergence
    fp = fingerprint("mme", _pair("Yes it is", "Yes it's", "yes", "yes"), _rec(100), _rec(100),
                     _trace(["Yes", " it", " is"], [-0.01, -0.69, -0.70]),
                     _trace(["Yes", " it", "'s"], [-0.0101, -0.6901, -0.69]))  # fmt: skip
    assert (fp.kind, fp.cause) == ("format-only", "numeric near-tie")
    assert fp.first_divergence == 2 and fp.prefix_len == 2
    assert fp.prefix_max is not None and abs(fp.prefix_max - 1e-4) < 1e-9
    # BOS: prompts one apart decide it, whatever the tokens say
    fp = fingerprint("mme", _pair("Yes", "No", "yes", "no"), _rec(100), _rec(101),
                     _trace(["Yes"], [-0.2]), _trace(["No"], [-0.3]))  # fmt: skip
    assert (fp.kind, fp.cause, fp.prompt_diff) == ("answer flip", "BOS token / chat template", 1)
    # image tokens: 2 images, 576 more each
    fp = fingerprint("mme", _pair("Yes", "No", "yes", "no", images=2), _rec(1000), _rec(2152),
                     None, None)  # fmt: skip
    assert fp.cause == "image-token count" and "+576 per image" in fp.evidence
    # other weights: first token agrees but its log-probability is far off
    fp = fingerprint("mme", _pair("Yes a", "Yes b", "yes", "yes"), _rec(100), _rec(100),
                     _trace(["Yes", " a"], [-0.05, -0.01]), _trace(["Yes", " b"], [-0.9, -0.02]))  # fmt: skip
    assert fp.cause == "different weights or preprocessing"
    # length limit, and a failure on one side
    fp = fingerprint("mme", _pair("Yes it", "Yes it is", "yes", "yes"), _rec(100, "length", 2),
                     _rec(100, "stop", 3), None, None)  # fmt: skip
    assert (fp.kind, fp.cause) == ("length-limit", "max-tokens default")
    fp = fingerprint("mme", _pair("Yes", None, "yes", None), _rec(100), None, None, None)
    assert (fp.kind, fp.cause) == ("failure", "request failure")
    # the same text is no disagreement, whatever the prompts
    fp = fingerprint("mme", _pair("Yes", "Yes", "yes", "yes"), _rec(100), _rec(101),
                     _trace(["Yes"], [-0.1]), _trace(["Yes"], [-0.1]))  # fmt: skip
    assert fp.kind is None and fp.cause is None and fp.tokens_agree
