"""The OVMS-like front end of tests/realengine/ovgenai_server.py, with a fake engine instead of OpenVINO GenAI.

The real-engine tests run it with OpenVINO GenAI in CI (.ci/real_ovgenai.sh); these check its wire behaviour
without OpenVINO, against OVMS's documented texts and codes (../shared/research/servers.md §1.4-1.7): the
prompt history OVMS builds (tags `<ov_genai_image_N>\\n` in front of the message text, N across the request),
flat `{"error": ...}` bodies with 412/404/400, logprobs a boolean with one entry per token and refused when
streaming, SSE with a first role chunk and `[DONE]`.
"""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

SERVER_PY = Path(__file__).resolve().parent / "realengine" / "ovgenai_server.py"
spec = importlib.util.spec_from_file_location("ovgenai_server", SERVER_PY)
assert spec is not None and spec.loader is not None
srv = importlib.util.module_from_spec(spec)
sys.modules["ovgenai_server"] = srv  # dataclasses look their module up there
spec.loader.exec_module(srv)

WRAP = (
    "Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \n"
    'Calculator::Process() for node "LLMExecutor" failed: '
)
TOKENS = {10: "a", 11: "b", 12: "c"}  # the fake tokenizer


def png_url(colour: tuple[int, int, int] = (1, 2, 3)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), colour).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


class FakeEngine:
    """Answers [10, 11, 12] (log-probabilities -1, -2, -3) to anything, finish 'length'; records requests."""

    def __init__(self) -> None:
        self.seen: list[Any] = []

    def submit(self, parsed: Any) -> tuple[Any, int]:
        for data in parsed.images:
            Image.open(io.BytesIO(data)).verify()  # what the real engine's decode would refuse
        self.seen.append(parsed)
        return object(), 42

    def wait(self, handle: Any) -> None:
        return None

    def result(self, handle: Any, n_prompt: int) -> Any:
        return srv.Generation([10, 11, 12], [-1.0, -2.0, -3.0], "length", n_prompt)

    def stream(self, handle: Any) -> Iterator[tuple[list[int], str | None]]:
        yield [10], None
        yield [11, 12], "length"

    def decode(self, ids: list[int]) -> str:
        return "".join(TOKENS[i] for i in ids)

    def token_text(self, token_id: int) -> str:
        return TOKENS[token_id]


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, FakeEngine]]:
    engine = FakeEngine()
    httpd = srv.Server(("127.0.0.1", 0), engine, "tiny", "fake 0", verbose=False)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", engine
    finally:
        httpd.shutdown()
        httpd.server_close()


def chat(n_images: int = 1, **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": png_url()}} for _ in range(n_images)
    ]
    content.append({"type": "text", "text": "Q?"})
    return {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 3, **extra}


def test_prompt_history_puts_ovms_image_tags_before_the_text(server: tuple[str, FakeEngine]) -> None:
    url, engine = server
    body = {
        "model": "tiny",
        "messages": [
            {"role": "system", "content": "S"},
            {"role": "user", "content": [
                {"type": "text", "text": "before"},
                {"type": "image_url", "image_url": {"url": png_url()}},
                {"type": "text", "text": "after"},
                {"type": "image_url", "image_url": {"url": png_url((9, 9, 9))}},
            ]},
        ],
    }  # fmt: skip
    resp = httpx.post(f"{url}/v3/chat/completions", json=body)
    assert resp.status_code == 200, resp.text
    parsed = engine.seen[-1]
    assert parsed.prompt_history == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "<ov_genai_image_0>\n<ov_genai_image_1>\nbefore after"},
    ]
    assert len(parsed.images) == 2


def test_unary_answer_has_ovms_shape_and_one_logprob_per_token(server: tuple[str, FakeEngine]) -> None:
    url, _ = server
    for path in ("/v3/chat/completions", "/v3/v1/chat/completions", "/v1/chat/completions"):
        doc = httpx.post(url + path, json=chat(logprobs=True)).json()
        assert set(doc) == {"choices", "created", "model", "object", "usage"}  # no id, no system_fingerprint
        (choice,) = doc["choices"]
        assert choice["message"] == {"content": "abc", "role": "assistant"}
        assert choice["finish_reason"] == "length"
        assert [(c["token"], c["logprob"]) for c in choice["logprobs"]["content"]] == [
            ("a", -1.0),
            ("b", -2.0),
            ("c", -3.0),
        ]
        assert doc["usage"] == {"prompt_tokens": 42, "completion_tokens": 3, "total_tokens": 45}
    plain = httpx.post(f"{url}/v3/chat/completions", json=chat()).json()
    assert plain["choices"][0]["logprobs"] is None


def test_streaming_sends_role_chunk_content_usage_and_done(server: tuple[str, FakeEngine]) -> None:
    url, _ = server
    body = chat(stream=True, stream_options={"include_usage": True})
    resp = httpx.post(f"{url}/v3/chat/completions", json=body)
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "text/event-stream"
    events = [line[len("data: ") :] for line in resp.text.split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    docs = [json.loads(e) for e in events[:-1]]
    assert docs[0]["choices"][0]["delta"] == {"role": "assistant", "content": None}
    assert "".join(d["choices"][0]["delta"]["content"] for d in docs[1:-1]) == "abc"
    assert docs[-2]["choices"][0]["finish_reason"] == "length"
    assert docs[-1]["choices"] == [] and docs[-1]["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b"{", 412, "The file is not valid json - Cannot parse JSON body"),
        (b"[]", 412, "The file is not valid json - JSON body must be an object"),
        (b'{"messages": []}', 412, "The file is not valid json - model field is missing in JSON body"),
        (json.dumps(chat(model="nope")).encode(), 404, "Mediapipe graph definition with requested name is not found"),
        (json.dumps(chat(stream=True, logprobs=True)).encode(), 400, WRAP + "logprobs are not supported in streaming mode."),
        (json.dumps(chat(max_tokens=0)).encode(), 400, WRAP + "max_tokens value should be greater than 0"),
        (json.dumps(chat(temperature=2.5)).encode(), 400, WRAP + "temperature out of range(0.0, 2.0)"),
        (json.dumps(chat(logprobs=1)).encode(), 400, WRAP + "logprobs accepts values true or false"),
    ],
)  # fmt: skip
def test_errors_are_flat_strings_with_ovms_codes(
    server: tuple[str, FakeEngine], body: bytes, status: int, message: str
) -> None:
    url, _ = server
    resp = httpx.post(
        f"{url}/v3/chat/completions", content=body, headers={"Content-Type": "application/json"}
    )
    assert (resp.status_code, resp.json()) == (status, {"error": message})


@pytest.mark.parametrize(
    ("image_url", "message"),
    [
        ("data:image/png;base64,@@@", "Invalid base64 string in request"),
        (
            "https://example.com/cat.png",
            "Given url does not match any allowed domain from allowed_media_domains",
        ),
        ("/etc/passwd", "Loading images from local filesystem is disabled."),
    ],
)
def test_image_urls_follow_ovms_load_order(
    server: tuple[str, FakeEngine], image_url: str, message: str
) -> None:
    url, _ = server
    body = chat()
    body["messages"][0]["content"][0]["image_url"]["url"] = image_url
    resp = httpx.post(f"{url}/v3/chat/completions", json=body)
    assert (resp.status_code, resp.json()) == (400, {"error": WRAP + message})


def test_base64_marker_anywhere_and_mime_type_ignored(server: tuple[str, FakeEngine]) -> None:
    url, _ = server
    body = chat()
    body["messages"][0]["content"][0]["image_url"]["url"] = "base64," + png_url().split("base64,", 1)[1]
    assert httpx.post(f"{url}/v3/chat/completions", json=body).status_code == 200


def test_user_text_with_an_image_tag_is_refused(server: tuple[str, FakeEngine]) -> None:
    url, _ = server
    body = {"model": "tiny", "messages": [{"role": "user", "content": "see <ov_genai_image_0>"}]}
    resp = httpx.post(f"{url}/v3/chat/completions", json=body)
    assert resp.json() == {"error": WRAP + "Message contains restricted <ov_genai_image> tag"}


def test_readiness_models_and_other_routes(server: tuple[str, FakeEngine]) -> None:
    url, _ = server
    assert httpx.get(f"{url}/v2/health/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/tiny/ready").status_code == 200
    assert httpx.get(f"{url}/v2/models/other/ready").status_code == 404
    config = httpx.get(f"{url}/v1/config").json()
    assert config["tiny"]["model_version_status"][0]["state"] == "AVAILABLE"
    for base in ("/v3/models", "/v3/v1/models", "/v1/models"):
        listing = httpx.get(url + base).json()
        assert listing["object"] == "list" and [m["id"] for m in listing["data"]] == ["tiny"]
        assert listing["data"][0]["owned_by"] == "OVMS"
    assert httpx.get(f"{url}/v3/models/nope").json() == {"error": "Model not found"}
    completions = httpx.post(f"{url}/v3/completions", json={"model": "tiny", "prompt": "x"})
    assert completions.status_code == 400 and completions.json()["error"].endswith(
        "VLM Servable does not support the /completions endpoint. Use /chat/completions or /responses."
    )
    # without a JSON content type OVMS routes by URI and finds no graph
    resp = httpx.post(
        f"{url}/v3/chat/completions", content=json.dumps(chat()), headers={"Content-Type": "text/plain"}
    )
    assert resp.status_code == 404
    assert "not OVMS" in httpx.get(f"{url}/v2").json()["name"]
