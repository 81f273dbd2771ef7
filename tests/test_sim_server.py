"""The simulator over real HTTP: endpoints, response shapes, error shapes, image limit, readiness.

Expected wording and codes come from /work/shared/research/servers.md (vLLM §2.1-2.5, OVMS §1.1-1.7).
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from test_sim_support import (
    MODEL,
    body_for,
    drawn_png,
    image_part,
    mme_text,
    original_url,
    text_part,
    write_tiny_mme,
    write_tiny_mmmu,
    yes_no,
)
from vlmparity.data.sources import load_rows
from vlmparity.sim import SimConfig, SimServer

FAST = {"time_scale": 0}  # zero-latency load model
TERSE = {"styles": {"terse": 1, "verbose": 0, "unparseable": 0}}


@pytest.fixture(scope="module")
def tiny_mme(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mme(tmp_path_factory.mktemp("tiny-mme"))


@pytest.fixture(scope="module")
def tiny_mmmu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_mmmu(tmp_path_factory.mktemp("tiny-mmmu"))


@pytest.fixture(scope="module")
def mme_rows(tiny_mme: Path) -> list[dict[str, Any]]:
    return load_rows(tiny_mme, split="test")


@pytest.fixture(scope="module")
def vllm(tiny_mme: Path, tiny_mmmu: Path) -> Any:
    with SimServer(data=[tiny_mme, tiny_mmmu], load=FAST, answers={"accuracy": 1.0, **TERSE}) as sim:
        yield sim


@pytest.fixture(scope="module")
def ovms(tiny_mme: Path, tiny_mmmu: Path) -> Any:
    with SimServer(
        personality="ovms", data=[tiny_mme, tiny_mmmu], load=FAST, answers={"accuracy": 1.0, **TERSE}
    ) as sim:
        yield sim


def post(sim: SimServer, body: Any, path: str = "/chat/completions", **kw: Any) -> httpx.Response:
    return httpx.post(sim.base_url + path, json=body, timeout=30, **kw)


def two_image_body(n: int = 2) -> dict[str, Any]:
    content = [image_part(original_url(drawn_png(50 + i))) for i in range(n)] + [text_part("Describe these.")]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 16}


def words(text: str) -> int:
    return len(text.split())


# ------------------------------------------------------------------ happy paths


def test_vllm_sdk_chat_completion_shape(vllm: SimServer, mme_rows: list[dict[str, Any]]) -> None:
    client = openai.OpenAI(base_url=vllm.base_url, api_key="unused", max_retries=0)
    row = mme_rows[0]
    body = body_for(row)
    done = client.chat.completions.create(
        model=MODEL, messages=body["messages"], max_tokens=16, temperature=0
    )
    assert done.id.startswith("chatcmpl-")
    assert done.object == "chat.completion"
    assert done.model == MODEL
    assert done.choices[0].message.content == "Yes"  # accuracy 1, terse; the first question's answer is Yes
    assert done.choices[0].finish_reason == "stop"
    # usage: whitespace words of the text + 576 per image; completion = answer words
    assert done.usage is not None
    assert done.usage.prompt_tokens == words(mme_text(row["question"])) + 576
    assert done.usage.completion_tokens == 1
    assert done.usage.total_tokens == done.usage.prompt_tokens + 1
    raw = post(vllm, body).json()
    assert "system_fingerprint" in raw and raw["id"].startswith("chatcmpl-")


def test_vllm_models_health_version(vllm: SimServer) -> None:
    models = httpx.get(vllm.url + "/v1/models").json()
    assert models["object"] == "list"
    card = models["data"][0]
    assert (card["id"], card["object"], card["owned_by"], card["max_model_len"]) == (
        MODEL,
        "model",
        "vllm",
        4096,
    )
    client = openai.OpenAI(base_url=vllm.base_url, api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MODEL]
    health = httpx.get(vllm.url + "/health")
    assert health.status_code == 200 and health.content == b""
    assert httpx.get(vllm.url + "/version").json() == {"version": "0.11.0"}
    assert httpx.get(vllm.url + "/v3/chat/completions").status_code == 404  # vLLM has no /v3


def test_ovms_unary_shape_has_no_id(ovms: SimServer, mme_rows: list[dict[str, Any]]) -> None:
    assert ovms.base_url.endswith("/v3")
    raw = post(ovms, body_for(mme_rows[1])).json()
    assert "id" not in raw and "system_fingerprint" not in raw
    assert raw["object"] == "chat.completion"
    assert raw["choices"][0]["message"] == {"content": "No", "role": "assistant"}
    assert set(raw["usage"]) == {"prompt_tokens", "completion_tokens", "total_tokens"}
    client = openai.OpenAI(base_url=ovms.base_url, api_key="unused", max_retries=0)
    done = client.chat.completions.create(
        model=MODEL, messages=body_for(mme_rows[1])["messages"], max_tokens=16
    )
    assert done.choices[0].message.content == "No"


def test_ovms_models_and_health(ovms: SimServer) -> None:
    listing = httpx.get(ovms.url + "/v3/models").json()
    assert listing["object"] == "list" and listing["data"][0]["owned_by"] == "OVMS"
    assert listing["data"][0]["id"] == MODEL
    assert httpx.get(ovms.url + "/v2/health/live").status_code == 200
    assert httpx.get(ovms.url + "/v2/health/ready").status_code == 200
    assert httpx.get(f"{ovms.url}/v2/models/{MODEL}/ready").status_code == 200
    config = httpx.get(ovms.url + "/v1/config").json()
    assert config[MODEL]["model_version_status"][0]["state"] == "AVAILABLE"
    # 2025.4 has no /v1 OpenAI path (it came in 2026.3)
    assert httpx.post(ovms.url + "/v1/chat/completions", json={"model": MODEL}).status_code == 404


def test_ovms_versions_change_paths(tiny_mme: Path, mme_rows: list[dict[str, Any]]) -> None:
    with SimServer(personality="ovms", ovms_version="2026.3", load=FAST, data=[tiny_mme]) as new:
        assert httpx.post(new.url + "/v1/chat/completions", json=body_for(mme_rows[0])).status_code == 200
        assert httpx.get(new.url + "/v1/models").json()["data"][0]["id"] == MODEL
    with SimServer(personality="ovms", ovms_version="2025.2", load=FAST) as old:
        assert httpx.get(old.url + "/v3/models").status_code == 404  # listing arrived in 2025.3
        assert httpx.get(old.url + "/v1/config").status_code == 200


def collect_sse(response: httpx.Response) -> list[Any]:
    events = []
    for line in response.text.split("\n"):
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            events.append(payload if payload == "[DONE]" else json.loads(payload))
    return events


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
def test_streaming_with_usage(
    personality: str, request: pytest.FixtureRequest, mme_rows: list[dict[str, Any]]
) -> None:
    sim: SimServer = request.getfixturevalue(personality)
    body = body_for(mme_rows[0], stream=True, stream_options={"include_usage": True})
    response = post(sim, body)
    assert response.headers["content-type"].startswith("text/event-stream")
    events = collect_sse(response)
    assert events[-1] == "[DONE]"
    first = events[0]["choices"][0]["delta"]
    assert first["role"] == "assistant"
    assert first["content"] == ("" if personality == "vllm" else None)
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == [] and usage_chunk["usage"]["completion_tokens"] == 1
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-2])
    assert text == "Yes"
    assert events[-3]["choices"][0]["finish_reason"] == "stop"
    assert all(("id" in e) == (personality == "vllm") for e in events[:-1])
    # the SDK reads the same stream
    client = openai.OpenAI(base_url=sim.base_url, api_key="unused", max_retries=0)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=body["messages"],
        max_tokens=16,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "Yes"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 1


def test_stream_without_usage_has_no_usage_chunk(vllm: SimServer, mme_rows: list[dict[str, Any]]) -> None:
    events = collect_sse(post(vllm, body_for(mme_rows[0], stream=True)))
    assert events[-1] == "[DONE]"
    assert all(e["choices"] for e in events[:-1])


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
def test_usage_off_leaves_usage_out(personality: str, tiny_mme: Path, mme_rows: list[dict[str, Any]]) -> None:
    answers = {"accuracy": 1.0, **TERSE}
    with SimServer(personality=personality, data=[tiny_mme], load=FAST, answers=answers, usage=False) as sim:
        unary = post(sim, body_for(mme_rows[0])).json()
        events = collect_sse(
            post(sim, body_for(mme_rows[0], stream=True, stream_options={"include_usage": True}))
        )
        client = openai.OpenAI(base_url=sim.base_url, api_key="unused", max_retries=0)
        done = client.chat.completions.create(model=MODEL, messages=body_for(mme_rows[0])["messages"])
    assert unary["choices"][0]["message"]["content"] == "Yes" and "usage" not in unary
    assert done.usage is None
    # the stream still answers and ends with [DONE], but no usage chunk although include_usage asked
    assert events[-1] == "[DONE]"
    assert all(e["choices"] and "usage" not in e for e in events[:-1])
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "Yes"


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
def test_stream_done_off_ends_without_done(
    personality: str, tiny_mme: Path, mme_rows: list[dict[str, Any]]
) -> None:
    answers = {"accuracy": 1.0, **TERSE}
    with SimServer(
        personality=personality, data=[tiny_mme], load=FAST, answers=answers, stream_done=False
    ) as sim:
        body = body_for(mme_rows[0], stream=True, stream_options={"include_usage": True})
        response = post(sim, body)
        unary = post(sim, body_for(mme_rows[0])).json()
    assert response.status_code == 200
    assert b"[DONE]" not in response.content
    events = collect_sse(response)
    # everything else is sent: the answer, its finish_reason, then the usage chunk last
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "Yes"
    assert events[-2]["choices"][0]["finish_reason"] == "stop"
    assert events[-1]["choices"] == [] and events[-1]["usage"]["completion_tokens"] == 1
    assert unary["usage"]["completion_tokens"] == 1  # unary responses are unchanged


def test_max_tokens_cuts_answer_with_length(tiny_mme: Path, mme_rows: list[dict[str, Any]]) -> None:
    verbose = {"accuracy": 1.0, "styles": {"terse": 0, "verbose": 1, "unparseable": 0}}
    with SimServer(data=[tiny_mme], load=FAST, answers=verbose) as sim:
        full = post(sim, body_for(mme_rows[0])).json()
        text = full["choices"][0]["message"]["content"]
        # the question is "Is there a square number 0 in the image?": verbose answers restate it
        assert text == "Yes, there is a square number 0 in the image."
        assert full["usage"]["completion_tokens"] == 10
        cut = post(sim, body_for(mme_rows[0], max_tokens=2)).json()
        assert cut["choices"][0]["message"]["content"] == "Yes, there"
        assert cut["choices"][0]["finish_reason"] == "length"
        assert cut["usage"]["completion_tokens"] == 2
        events = collect_sse(post(sim, body_for(mme_rows[0], max_tokens=3, stream=True)))
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "Yes, there is"
        assert events[-2]["choices"][0]["finish_reason"] == "length"


# ------------------------------------------------------------------ errors


def test_vllm_unknown_model_nested_and_flat(tiny_mme: Path, mme_rows: list[dict[str, Any]]) -> None:
    expected = {
        "message": "The model `nope` does not exist.",
        "type": "NotFoundError",
        "param": "model",
        "code": 404,
    }
    with SimServer(load=FAST) as sim:
        response = post(sim, {**body_for(mme_rows[0]), "model": "nope"})
        assert response.status_code == 404
        assert response.json() == {"error": expected}
        client = openai.OpenAI(base_url=sim.base_url, api_key="unused", max_retries=0)
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=body_for(mme_rows[0])["messages"])
    for options in ({"vllm_error_format": "flat"}, {"vllm_version": "0.9.2"}):
        with SimServer(load=FAST, **options) as old:
            flat = post(old, {**body_for(mme_rows[0]), "model": "nope"})
            assert flat.status_code == 404
            assert flat.json() == {"object": "error", **expected}


def test_vllm_image_limit(vllm: SimServer) -> None:
    response = post(vllm, two_image_body(2))
    assert response.status_code == 400
    assert response.json()["error"] == {
        "message": "At most 1 image(s) may be provided in one prompt.",
        "type": "BadRequestError",
        "param": "image",
        "code": 400,
    }
    client = openai.OpenAI(base_url=vllm.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="At most 1 image"):
        client.chat.completions.create(model=MODEL, messages=two_image_body(2)["messages"])
    with SimServer(load=FAST, image_limit=2) as two:
        assert post(two, two_image_body(2)).status_code == 200
        assert post(two, two_image_body(3)).json()["error"]["message"].startswith("At most 2 image(s)")
    with SimServer(load=FAST, image_limit=None) as unlimited:
        assert post(unlimited, two_image_body(5)).status_code == 200


def test_ovms_has_no_image_limit(ovms: SimServer) -> None:
    assert post(ovms, two_image_body(4)).status_code == 200


def corrupt_body(url: str) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": [image_part(url), text_part("What is it?")]}],
    }


def test_vllm_corrupt_image(vllm: SimServer) -> None:
    response = post(vllm, corrupt_body("data:image/png;base64,aGVsbG8gd29ybGQ="))  # "hello world"
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "BadRequestError" and error["message"].startswith("Failed to load image: ")


def test_ovms_error_shapes(ovms: SimServer) -> None:
    wrapped = 'Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \nCalculator::Process() for node "LLMExecutor" failed: '
    bad_json = httpx.post(
        ovms.base_url + "/chat/completions",
        content=b"{not json",
        headers={"Content-Type": "application/json"},
    )
    assert bad_json.status_code == 412
    assert bad_json.json() == {"error": "The file is not valid json - Cannot parse JSON body"}
    no_model = post(ovms, {"messages": [{"role": "user", "content": "hi"}]})
    assert no_model.status_code == 412
    assert no_model.json() == {"error": "The file is not valid json - model field is missing in JSON body"}
    unknown = post(ovms, {"model": "nope", "messages": [{"role": "user", "content": "hi"}]})
    assert unknown.status_code == 404
    assert unknown.json() == {"error": "Mediapipe graph definition with requested name is not found"}
    corrupt = post(ovms, corrupt_body("data:image/png;base64,aGVsbG8gd29ybGQ="))
    assert corrupt.status_code == 400
    assert corrupt.json() == {"error": wrapped + "Image parsing failed"}
    bad_b64 = post(ovms, corrupt_body("data:image/png;base64,@@@not-base64@@@"))
    assert bad_b64.json() == {"error": wrapped + "Invalid base64 string in request"}
    client = openai.OpenAI(base_url=ovms.base_url, api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}])


def test_vllm_rejects_stream_options_without_stream(vllm: SimServer) -> None:
    response = post(
        vllm,
        {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "stream_options": {"include_usage": True},
        },
    )
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "Stream options can only be defined when `stream=True`."


# ------------------------------------------------------------------ readiness


def test_vllm_not_ready_then_ready(mme_rows: list[dict[str, Any]]) -> None:
    with SimServer(load=FAST, startup_delay=3600) as sim:
        assert httpx.get(sim.url + "/health").status_code == 503
        assert post(sim, body_for(mme_rows[0])).status_code == 503
        assert sim.log[-1].outcome == "not_ready"
        sim.mark_ready()
        assert httpx.get(sim.url + "/health").status_code == 200
        assert post(sim, body_for(mme_rows[0])).status_code == 200


def test_ovms_not_ready_then_ready(mme_rows: list[dict[str, Any]]) -> None:
    with SimServer(personality="ovms", load=FAST, startup_delay=3600) as sim:
        assert httpx.get(sim.url + "/v2/health/live").status_code == 200
        assert httpx.get(sim.url + "/v2/health/ready").status_code == 503
        assert httpx.get(f"{sim.url}/v2/models/{MODEL}/ready").status_code == 404
        assert (
            httpx.get(sim.url + "/v1/config").json()[MODEL]["model_version_status"][0]["state"] == "LOADING"
        )
        loading = post(sim, body_for(mme_rows[0]))
        assert (loading.status_code, loading.json()) == (500, {"error": "Mediapipe is not loaded yet"})
        sim.mark_ready()
        assert httpx.get(sim.url + "/v2/health/ready").status_code == 200
        assert httpx.get(f"{sim.url}/v2/models/{MODEL}/ready").status_code == 200
        assert post(sim, body_for(mme_rows[0])).status_code == 200


def test_startup_delay_ends_by_itself() -> None:
    with SimServer(load=FAST, startup_delay=0.3) as sim:
        statuses = []
        for _ in range(400):  # polls until ready; no assertion on how long it took
            statuses.append(httpx.get(sim.url + "/health").status_code)
            if statuses[-1] == 200:
                break
            time.sleep(0.05)
        assert statuses[-1] == 200 and set(statuses) <= {503, 200}


# ------------------------------------------------------------------ request log


def test_log_records_what_was_sent(tiny_mme: Path, mme_rows: list[dict[str, Any]], tmp_path: Path) -> None:
    log_file = tmp_path / "sim.jsonl"
    with SimServer(data=[tiny_mme], load=FAST, log_file=log_file) as sim:
        body = body_for(mme_rows[2])
        post(sim, body)
        entry = sim.chat_log[-1]
    without_model = {k: v for k, v in body.items() if k != "model"}
    canonical = json.dumps(without_model, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert entry.body_hash == hashlib.sha256(canonical.encode()).hexdigest()
    assert entry.path == "/v1/chat/completions" and entry.status == 200 and entry.outcome == "ok"
    assert entry.model == MODEL and entry.image_count == 1
    assert entry.sample_id == f"{mme_rows[2]['question_id']}::{mme_rows[2]['question'].strip()}"
    assert entry.task == "mme"
    lines = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert lines[-1]["body_hash"] == entry.body_hash and lines[-1]["sample_id"] == entry.sample_id


def test_config_object_and_overrides_agree(tiny_mme: Path) -> None:
    config = SimConfig(personality="ovms", data=[tiny_mme])
    with SimServer(config, load=FAST) as sim:
        assert sim.config.personality == "ovms" and sim.config.load.time_scale == 0
        assert len(sim.index.samples) == 8
        assert yes_no(
            post(
                sim, {"model": MODEL, "messages": [{"role": "user", "content": "Is it? Answer yes or no."}]}
            ).json()["choices"][0]["message"]["content"]
        ) in ("yes", "no")
