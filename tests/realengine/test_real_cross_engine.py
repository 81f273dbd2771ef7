"""Two real engines: vLLM (float32) against OpenVINO GenAI (the engine inside OVMS), on the same tiny LLaVA.

`.ci/real_ovgenai.sh test` starts the real vLLM of `.ci/real_vllm.sh` (VLMPARITY_VLLM_URL) and two servers of
`ovgenai_server.py` (OpenVINO GenAI behind an OVMS-like front end) on the same exported weights: one with
f32 inference and an f32 KV cache (VLMPARITY_OVGENAI_URL), one with OpenVINO's defaults
(VLMPARITY_OVGENAI_DEFAULT_URL). Without the first two URLs every test here is skipped; without the third,
the default-precision checks are.

What is asserted is what is true of the engines, whatever the verdict:
- `vlmparity doctor` passes on every server and recognises each backend;
- `vlmparity compare` sends byte-identical requests to all three (request hashes in the store);
- every prompt-token count of OpenVINO GenAI equals vLLM's plus the BOS token the model's tokenizer adds
  (vLLM's chat path tokenizes the templated prompt without special tokens; the llava-1.5 template writes no
  BOS), read from the model files, not from either engine;
- compare's answer agreement equals an independent count over the stored texts;
- compare's token-level closeness (issue 15: logprobs requested by default, one decision for all three) is
  computed by `vlmparity compare` itself; its token agreement equals an independent count over the stored
  token texts, and the run's likely cause is the BOS token (prompt tokens +1 on every sample);
- on a CPU with BF16, OpenVINO's default precision (bf16 inference, u8 KV cache) changes the computation:
  the per-token log-probabilities of the same greedy requests move, and answers or tokens differ
  somewhere; on a CPU without BF16 that test says so and is skipped.
The verdicts, agreements and token-level figures are written to a JSON artifact (VLMPARITY_CROSS_ENGINE_JSON,
default <tmp>/cross-engine.json) that the CI script prints; docs/ovms-vs-vllm.md §11 quotes them.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

VLLM = os.environ.get("VLMPARITY_VLLM_URL", "").rstrip("/")
OV_F32 = os.environ.get("VLMPARITY_OVGENAI_URL", "").rstrip("/")
OV_DEFAULT = os.environ.get("VLMPARITY_OVGENAI_DEFAULT_URL", "").rstrip("/")
MODEL = os.environ.get("VLMPARITY_OVGENAI_MODEL", "tiny-llava")
CACHE = Path(
    os.environ.get("VLMPARITY_CI_CACHE") or Path(os.environ.get("HOME") or "/tmp") / ".cache/vlmparity-ci"
)
TINY = Path(os.environ.get("VLMPARITY_TINY_LLAVA") or CACHE / "tiny-llava")

pytestmark = [
    pytest.mark.realengine,
    pytest.mark.skipif(
        not (VLLM and OV_F32),
        reason="needs a real vLLM and OpenVINO GenAI: set VLMPARITY_VLLM_URL and VLMPARITY_OVGENAI_URL "
        "(.ci/real_ovgenai.sh test does)",
    ),
]
needs_default = pytest.mark.skipif(
    not OV_DEFAULT, reason="needs OpenVINO GenAI at its default precision: set VLMPARITY_OVGENAI_DEFAULT_URL"
)

N_MME = 56  # 28 image pairs: every category
N_MMMU = 60  # two questions of every subject; the multi-image ones are skipped on every endpoint
ANSWERED = {"ok", "length", "empty"}
PROBE_IMAGES = 12
PROBE_TOKENS = 16


def cpu_bf16_flags() -> list[str]:
    """The BF16 instruction flags /proc/cpuinfo lists (OpenVINO's CPU plugin picks bf16 by default with them)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags.update(line.split(":", 1)[1].split())
    return sorted(flags & {"avx512_bf16", "amx_bf16"})


def endpoints() -> dict[str, str]:
    found = {"vllm": VLLM, "ov_f32": OV_F32}
    if OV_DEFAULT:
        found["ov_default"] = OV_DEFAULT
    return found


def vlmparity(*args: str, timeout: float = 1200) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args], capture_output=True, text=True, timeout=timeout
    )


# ----- the artifact ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def record() -> Iterator[dict[str, Any]]:
    """Figures gathered by the tests, written as JSON when the module ends (also when a test failed)."""
    doc: dict[str, Any] = {"cpu_bf16_flags": cpu_bf16_flags(), "endpoints": endpoints()}
    yield doc
    target = Path(os.environ.get("VLMPARITY_CROSS_ENGINE_JSON") or Path("/tmp") / "cross-engine.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n")


# ----- doctor ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["vllm", "ov_f32", "ov_default"])
def test_doctor_passes_on_each_engine(name: str, record: dict[str, Any]) -> None:
    url = endpoints().get(name)
    if not url:
        pytest.skip(f"{name}: no URL given")
    proc = vlmparity("doctor", url, "--model", MODEL, "--timeout", "120", "--json", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    record.setdefault("doctor", {})[name] = {
        k: report.get(k)
        for k in (
            "kind",
            "server_version",
            "chat_url",
            "image_limit",
            "deterministic",
            "error_shape",
            "logprobs",
        )
    }
    assert report["deterministic"] is True
    if name == "vllm":
        assert report["kind"] == "vllm"
        assert report["error_shape"] == "nested"
    else:  # the OVMS-like front end: detected as OVMS, no image limit, OVMS's flat errors
        assert report["kind"] == "ovms"
        assert report["chat_url"].endswith("/v3/chat/completions")
        assert report["images"] == {"1": "ok", "2": "ok", "3": "ok"}
        assert report["error_shape"] == "flat-string"


# ----- compare ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from vlmparity.synth import write_mme, write_mmmu

    base = tmp_path_factory.mktemp("cross-engine-data")
    return {
        "mme": write_mme(base / "mme", n=N_MME, seed=0),
        "mmmu_val": write_mmmu(base / "mmmu", n=N_MMMU, seed=0),
    }


@pytest.fixture(scope="module")
def compared(
    data: dict[str, Path], tmp_path_factory: pytest.TempPathFactory, record: dict[str, Any]
) -> dict[str, Any]:
    """One `vlmparity compare` of vLLM (reference) against every OpenVINO GenAI server; the runbook's options
    for multi-image questions (vLLM runs with one image per prompt: they are skipped on every endpoint)."""
    out = tmp_path_factory.mktemp("cross-engine") / "cmp"
    verdict = out.parent / "verdict.json"
    args = ["compare"]
    for name, url in endpoints().items():
        args += ["--endpoint", f"{name}={url}", "--model", f"{name}={MODEL}"]
    args += [
        "--reference", "vllm", "--tasks", "mme,mmmu_val",
        "--data", f"mme={data['mme']}", "--data", f"mmmu_val={data['mmmu_val']}",
        "--max-images", "1", "--multi-image", "skip",
        "--output-path", str(out), "--json", str(verdict), "--no-report",
    ]  # fmt: skip
    proc = vlmparity(*args)
    record["compare_exit_code"] = proc.returncode
    assert "Traceback" not in proc.stderr, proc.stderr
    # 0 equivalent, 1 not equivalent, 2 inconclusive: all are answers about the engines; 3 and 4 are not
    assert proc.returncode in (0, 1, 2), proc.stdout + proc.stderr
    return {"out": out, "verdict": json.loads(verdict.read_text()), "stdout": proc.stdout}


def stored(out: Path) -> dict[str, dict[tuple[str, str], dict[str, Any]]]:
    """Result rows per endpoint, keyed by (task, sample_id)."""
    conn = sqlite3.connect(out / "vlmparity.sqlite", timeout=30)
    conn.row_factory = sqlite3.Row
    try:
        rows = conn.execute("SELECT r.*, u.endpoint FROM results r JOIN runs u USING (run_id)").fetchall()
        planned = {
            (r["task"], r["sample_id"]): r["request_hash"]
            for r in conn.execute("SELECT * FROM samples WHERE treatment != 'skipped'")
        }
    finally:
        conn.close()
    found: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
        "_planned": {k: {"request_hash": v} for k, v in planned.items()}
    }
    for r in rows:
        found.setdefault(r["endpoint"], {})[(r["task"], r["sample_id"])] = dict(r)
    return found


def test_every_engine_got_byte_identical_requests(compared: dict[str, Any], record: dict[str, Any]) -> None:
    rows = stored(compared["out"])
    planned = rows.pop("_planned")
    assert set(rows) == set(endpoints())
    keys = set(planned)
    for name, results in rows.items():
        assert set(results) == keys, name
        assert {k: r["request_hash"] for k, r in results.items()} == {
            k: p["request_hash"] for k, p in planned.items()
        }
    answered = {name: sum(r["outcome"] in ANSWERED for r in res.values()) for name, res in rows.items()}
    outcomes = {name: dict(Counter(r["outcome"] for r in res.values())) for name, res in rows.items()}
    record["samples"] = {"planned": len(keys), "answered": answered, "outcomes": outcomes}
    assert all(n >= N_MME for n in answered.values()), outcomes  # real answers were compared, not failures


def tokenizer_adds_bos(model_dir: Path) -> bool:
    """Whether the tokenizer's post-processor puts a BOS in front of a single sequence (tokenizer.json)."""
    post = json.loads((model_dir / "tokenizer.json").read_text())["post_processor"] or {}
    single = post.get("single") or []
    bos = json.loads((model_dir / "tokenizer_config.json").read_text()).get("bos_token") or "<s>"
    return bool(single) and single[0].get("SpecialToken", {}).get("id") == bos


def test_prompt_tokens_equal_up_to_the_bos_token(compared: dict[str, Any], record: dict[str, Any]) -> None:
    if not (TINY / "tokenizer.json").exists():
        pytest.skip(f"needs the tiny model's folder {TINY} to read its tokenizer (VLMPARITY_TINY_LLAVA)")
    template = (TINY / "chat_template.jinja").read_text()
    assert "<s>" not in template and "bos_token" not in template.replace("No BOS", "")
    # vLLM tokenizes the templated prompt without special tokens; OpenVINO GenAI with them (its tokenizer's).
    expected = 1 if tokenizer_adds_bos(TINY) else 0
    rows = stored(compared["out"])
    rows.pop("_planned")
    vllm = rows["vllm"]
    figures = {}
    for name in rows:
        if name == "vllm":
            continue
        diffs = Counter(
            r["prompt_tokens"] - vllm[k]["prompt_tokens"]
            for k, r in rows[name].items()
            if r["outcome"] in ANSWERED and vllm[k]["outcome"] in ANSWERED
        )
        figures[name] = {
            "difference_vs_vllm": {str(d): n for d, n in sorted(diffs.items())},
            "explained_by_bos": expected,
        }
        assert diffs and set(diffs) == {expected}, (name, diffs)
    record["prompt_tokens"] = figures


def independent_agreement(
    a: dict[tuple[str, str], dict[str, Any]], b: dict[tuple[str, str], dict[str, Any]], task: str
) -> tuple[int, int]:
    """(same text, both answered) over one task's samples: the raw answer agreement, counted here."""
    pairs = [(a[k], b[k]) for k in a if k[0] == task and k in b]
    both = [(x, y) for x, y in pairs if x["outcome"] in ANSWERED and y["outcome"] in ANSWERED]
    return sum(x["text"] == y["text"] for x, y in both), len(both)


def test_verdict_and_agreement_are_recorded(compared: dict[str, Any], record: dict[str, Any]) -> None:
    doc = compared["verdict"]
    rows = stored(compared["out"])
    rows.pop("_planned")
    assert doc["reference"] == "vllm"
    candidates = {c["candidate"]: c for c in doc["candidates"]}
    assert set(candidates) == set(endpoints()) - {"vllm"}
    summary = {}
    for name, cand in candidates.items():
        agreement = {}
        for task in ("mme", "mmmu_val"):
            same, n = independent_agreement(rows["vllm"], rows[name], task)
            raw = cand["agreement"][task]["raw"]
            assert raw is not None and n > 0
            # compare's own figure equals the count made here from the stored texts
            assert raw["n"] == n and math.isclose(raw["rate"], same / n), (task, raw, same, n)
            agreement[task] = {
                "raw_same": same,
                "n": n,
                "raw_rate": round(same / n, 4),
                "parsed_rate": None
                if cand["agreement"][task]["parsed"] is None
                else round(cand["agreement"][task]["parsed"]["rate"], 4),
            }
        summary[name] = {
            "verdict": cand["verdict"],
            "label": cand["label"],
            "exit_code": cand["exit_code"],
            "agreement": agreement,
            "metrics": cand["metrics"],
        }
    record["compare"] = summary
    assert doc["exit_code"] == record["compare_exit_code"]


def stored_tokens(out: Path) -> dict[str, dict[tuple[str, str], list[str]]]:
    """The token texts stored per endpoint (the `tokens` table), keyed by (task, sample_id)."""
    conn = sqlite3.connect(out / "vlmparity.sqlite", timeout=30)
    try:
        rows = conn.execute(
            "SELECT u.endpoint, t.task, t.sample_id, t.token_text FROM tokens t JOIN runs u USING (run_id)"
        ).fetchall()
        logprobs_meta = conn.execute("SELECT value FROM meta WHERE key = 'logprobs'").fetchone()
    finally:
        conn.close()
    on = logprobs_meta is not None and json.loads(logprobs_meta[0]) is True
    found: dict[str, dict[tuple[str, str], list[str]]] = {"_meta": {("logprobs", ""): [str(on)]}}
    for endpoint, task, sid, text in rows:
        found.setdefault(endpoint, {})[(task, sid)] = json.loads(text) if text else []
    return found


def test_closeness_is_computed_by_compare_and_recorded(
    compared: dict[str, Any], record: dict[str, Any]
) -> None:
    doc = compared["verdict"]
    toks = stored_tokens(compared["out"])
    meta = toks.pop("_meta")
    assert meta[("logprobs", "")] == ["True"], meta  # on by default: every engine answered the probe
    rows = stored(compared["out"])
    rows.pop("_planned")
    expected_bos = 1 if (TINY / "tokenizer.json").exists() and tokenizer_adds_bos(TINY) else None
    figures = {}
    for cand in doc["candidates"]:
        name, close = cand["candidate"], cand["closeness"]
        o = close["overall"]
        # independent: answers both engines gave with identical token sequences, over the stored token texts
        both = [k for k in toks["vllm"] if k in toks[name] and rows["vllm"][k]["outcome"] in ANSWERED
                and rows[name][k]["outcome"] in ANSWERED]  # fmt: skip
        same = sum(toks["vllm"][k] == toks[name][k] for k in both)
        assert o["compared"] == len(both) > 0 and math.isclose(o["token_agreement"], same / len(both)), (
            o,
            same,
        )
        figures[name] = {
            "statement": close["statement"],
            "statement_text": close["statement_text"],
            "causes": close["causes"],
            "overall": {
                "compared": o["compared"],
                "token_agreement": round(o["token_agreement"], 4),
                "text_equal": o["text_equal"],
                "prompt_token_mismatch_share": o["prompt_token_mismatch_share"],
                **{k: o["abs_logprob_delta"][k] for k in ("n_tokens", "median", "p95", "max")},
                "first_token_median": o["first_token_abs_logprob_delta"]["median"],
            },
            "tasks": {
                t: {
                    "token_agreement": v["token_agreement"],
                    "p95": v["abs_logprob_delta"]["p95"],
                    "max": v["abs_logprob_delta"]["max"],
                    "disagreements": v["disagreements"],
                }
                for t, v in close["tasks"].items()
            },
            "disagreement_causes": dict(Counter(r["cause"] for r in close["disagreements"])),
        }
        if expected_bos == 1:  # the BOS OpenVINO GenAI adds and vLLM does not: named, with its evidence
            assert close["causes"][0]["cause"] == "BOS token / chat template", close["causes"]
            assert "+1 on" in close["causes"][0]["evidence"]
    record["closeness"] = figures


# ----- token level: the same greedy requests with log-probabilities -------------------------------------------


def probe_bodies() -> list[dict[str, Any]]:
    """Greedy one-image requests with random images (seeded), log-probabilities on."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(14)
    bodies = []
    for i in range(PROBE_IMAGES):
        h, w = int(rng.integers(32, 400)), int(rng.integers(32, 400))
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
        url = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        question = ["What is in this image?", "Is there a dog in the image? Please answer yes or no."][i % 2]
        bodies.append({
            "model": MODEL,
            "messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": question}]}],
            "max_tokens": PROBE_TOKENS, "temperature": 0, "logprobs": True,
        })  # fmt: skip
    return bodies


def tokens(base: str, body: dict[str, Any]) -> list[tuple[str, float]]:
    resp = httpx.post(f"{base}/chat/completions", json=body, timeout=300)
    assert resp.status_code == 200, resp.text
    choice = resp.json()["choices"][0]
    content = choice["logprobs"]["content"]
    # one log-probability per generated token (OVMS: one per token, no alternatives)
    assert len(content) == resp.json()["usage"]["completion_tokens"]
    return [(c["token"], float(c["logprob"])) for c in content]


@pytest.fixture(scope="module")
def probed() -> dict[str, list[list[tuple[str, float]]]]:
    """Every endpoint's tokens for the probe; `vllm_bos` is vLLM asked to add the tokenizer's special tokens
    (vLLM's `add_special_tokens`, which OVMS does not have): the same input ids as OpenVINO GenAI's."""
    bodies = probe_bodies()
    found = {name: [tokens(url, b) for b in bodies] for name, url in endpoints().items()}
    found["vllm_bos"] = [tokens(VLLM, {**b, "add_special_tokens": True}) for b in bodies]
    return found


def token_figures(a: list[list[tuple[str, float]]], b: list[list[tuple[str, float]]]) -> dict[str, Any]:
    """Same tokens (position by position), requests identical throughout, max |Δ logprob| on the common prefix."""
    same = total = identical = 0
    max_delta = 0.0
    for x, y in zip(a, b, strict=True):
        total += max(len(x), len(y))
        for (tx, lx), (ty, ly) in zip(x, y, strict=False):
            if tx != ty:
                break
            max_delta = max(max_delta, abs(lx - ly))
        same += sum(tx == ty for (tx, _), (ty, _) in zip(x, y, strict=False))
        identical += [t for t, _ in x] == [t for t, _ in y]
    return {
        "tokens_same": same,
        "tokens": total,
        "requests_identical": identical,
        "requests": len(a),
        "max_abs_logprob_delta_common_prefix": max_delta,
    }


def test_token_level_figures_are_recorded(probed: dict[str, Any], record: dict[str, Any]) -> None:
    figures = {}
    for ref in ("vllm", "vllm_bos"):
        for name in endpoints():
            if name != "vllm":
                figures[f"{ref}~{name}"] = token_figures(probed[ref], probed[name])
    if "ov_default" in probed:
        figures["ov_f32~ov_default"] = token_figures(probed["ov_f32"], probed["ov_default"])
    record["tokens"] = figures
    for (
        name
    ) in endpoints():  # greedy decoding is deterministic on each engine: the probe twice gives the same
        if name != "vllm":
            assert [t for t, _ in tokens(endpoints()[name], probe_bodies()[0])] == [
                t for t, _ in probed[name][0]
            ]


def test_text_only_f32_language_models_agree_given_the_same_ids(record: dict[str, Any]) -> None:
    """Without an image and with the BOS on both sides, vLLM float32 and OpenVINO GenAI f32 run the same
    language model on the same ids: the same greedy tokens, log-probabilities equal to f32 rounding."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "What is in this image?"}],
            "max_tokens": PROBE_TOKENS, "temperature": 0, "logprobs": True}  # fmt: skip
    figures = token_figures([tokens(VLLM, {**body, "add_special_tokens": True})], [tokens(OV_F32, body)])
    record["tokens_text_only_vllm_bos~ov_f32"] = figures
    assert figures["requests_identical"] == 1, figures
    assert figures["max_abs_logprob_delta_common_prefix"] < 1e-4, figures


@needs_default
def test_default_precision_diverges_on_a_bf16_cpu(
    probed: dict[str, Any], compared: dict[str, Any], record: dict[str, Any]
) -> None:
    flags = cpu_bf16_flags()
    if not flags:
        record["default_precision"] = "this CPU has no BF16 (avx512_bf16/amx_bf16): only f32 is checked"
        pytest.skip(
            "this CPU has no BF16 (no avx512_bf16 or amx_bf16 flag): OpenVINO's default is f32 here; f32 only"
        )
    f32_vs_default = token_figures(probed["ov_f32"], probed["ov_default"])
    # bf16 arithmetic moves every log-probability by far more than f32 rounding does
    assert f32_vs_default["max_abs_logprob_delta_common_prefix"] > 1e-4, f32_vs_default
    rows = stored(compared["out"])
    rows.pop("_planned")
    texts_differ = {
        other: sum(
            rows["ov_default"][k]["text"] != rows[other][k]["text"]
            for k, r in rows["ov_default"].items()
            if r["outcome"] in ANSWERED and rows[other][k]["outcome"] in ANSWERED
        )
        for other in ("vllm", "ov_f32")
    }
    record["default_precision"] = {
        "cpu_bf16_flags": flags,
        "answers_differing_from": texts_differ,
        "tokens_f32_vs_default": f32_vs_default,
    }
    token_diff = f32_vs_default["tokens_same"] < f32_vs_default["tokens"]
    assert texts_differ["vllm"] + texts_differ["ov_f32"] > 0 or token_diff, record["default_precision"]


# ----- the OVMS-like front end (research/servers.md Part 1) -------------------------------------------------------


def test_front_end_speaks_ovms_wire() -> None:
    root = OV_F32.rsplit("/v3", 1)[0]
    body = probe_bodies()[0]
    with httpx.Client(timeout=120) as c:
        assert c.get(f"{root}/v2/health/ready").status_code == 200
        listing = c.get(f"{root}/v3/models").json()
        assert listing["object"] == "list" and listing["data"][0]["owned_by"] == "OVMS"
        v1 = c.post(f"{root}/v1/chat/completions", json=body)  # the /v1 alias of OVMS >= 2026.3
        assert v1.status_code == 200 and "id" not in v1.json() and "system_fingerprint" not in v1.json()
        streamed = c.post(f"{root}/v3/chat/completions", json={**body, "stream": True})
        assert streamed.status_code == 400
        assert streamed.json()["error"].endswith("logprobs are not supported in streaming mode.")
        assert c.post(f"{root}/v3/chat/completions", content=b"{").status_code == 404  # no JSON content type
        bad = c.post(
            f"{root}/v3/chat/completions", content=b"{", headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 412 and bad.json() == {
            "error": "The file is not valid json - Cannot parse JSON body"
        }
        unknown = c.post(f"{root}/v3/chat/completions", json={**body, "model": "nope"})
        assert unknown.status_code == 404
        assert unknown.json() == {"error": "Mediapipe graph definition with requested name is not found"}
        tagged = {
            **body,
            "logprobs": False,
            "messages": [{"role": "user", "content": "<ov_genai_image_0> hi"}],
        }
        refused = c.post(f"{root}/v3/chat/completions", json=tagged)
        assert refused.status_code == 400
        assert refused.json()["error"].endswith("Message contains restricted <ov_genai_image> tag")
        remote = {**body, "logprobs": False}
        remote["messages"] = [
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "http://example.com/a.png"}}],
            }
        ]
        assert (
            c.post(f"{root}/v3/chat/completions", json=remote)
            .json()["error"]
            .endswith("Given url does not match any allowed domain from allowed_media_domains")
        )
