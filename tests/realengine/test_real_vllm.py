"""Smoke tests against a real vLLM (CPU build) serving the tiny random LLaVA built by build_tiny_llava.py.

CI starts the server with `.ci/real_vllm.sh up` (which uses `vlmparity launch vllm ... --limit-mm-per-prompt 1`)
and exports VLMPARITY_VLLM_URL; without it every test here is skipped. Expected values are vLLM's documented
and measured behaviour (../shared/research/real-vllm.md §B), not this project's output.
"""

from __future__ import annotations

import base64
import io
import os
from typing import Any

import httpx
import pytest
from PIL import Image

URL = os.environ.get("VLMPARITY_VLLM_URL", "").rstrip("/")
MODEL = os.environ.get("VLMPARITY_VLLM_MODEL", "tiny-llava")

pytestmark = [
    pytest.mark.realengine,
    pytest.mark.skipif(
        not URL, reason="needs a real vLLM: set VLMPARITY_VLLM_URL (.ci/real_vllm.sh up does)"
    ),
]

IMAGE_TOKENS = 256  # (224 / 14)^2 patches, CLS dropped by the "default" feature strategy


def png_data_url(width: int, height: int, colour: tuple[int, int, int]) -> str:
    """A small solid PNG as a base64 data URL."""
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_body(n_images: int, question: str = "What is in this image?") -> dict[str, Any]:
    """A chat request with `n_images` images, greedy, 8 tokens."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": png_data_url(64, 48, (40 * i, 120, 200))}}
        for i in range(n_images)
    ]
    content.append({"type": "text", "text": question})
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "temperature": 0,
        "max_tokens": 8,
    }


@pytest.fixture(scope="module")
def client() -> httpx.Client:
    with httpx.Client(base_url=URL, timeout=120) as c:
        yield c


def test_models_lists_the_tiny_model(client: httpx.Client) -> None:
    resp = client.get("/models")
    assert resp.status_code == 200
    data = resp.json()["data"]
    assert MODEL in [m["id"] for m in data]
    assert all(m["owned_by"] == "vllm" for m in data)


def test_one_image_chat_answers(client: httpx.Client) -> None:
    resp = client.post("/chat/completions", json=chat_body(1))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
    assert choice["finish_reason"] == "length"  # a random model never says EOS within 8 tokens here
    assert body["usage"]["completion_tokens"] == 8
    assert body["usage"]["prompt_tokens"] > IMAGE_TOKENS  # the image expands to 256 tokens, plus the text
    assert body["system_fingerprint"].startswith("vllm-0.32.0")


def test_two_images_get_the_image_limit_400(client: httpx.Client) -> None:
    resp = client.post("/chat/completions", json=chat_body(2))
    assert resp.status_code == 400
    error = resp.json()["error"]
    assert "At most 1 image(s) may be provided in one prompt." in error["message"]
    assert error["type"] == "BadRequestError"
    assert error["code"] == 400


def test_temperature_zero_is_deterministic(client: httpx.Client) -> None:
    first = client.post("/chat/completions", json=chat_body(1, "Describe the colours."))
    second = client.post("/chat/completions", json=chat_body(1, "Describe the colours."))
    assert first.status_code == second.status_code == 200
    assert (
        first.json()["choices"][0]["message"]["content"] == second.json()["choices"][0]["message"]["content"]
    )


def test_unknown_model_is_404(client: httpx.Client) -> None:
    body = chat_body(1)
    body["model"] = "no-such-model"
    resp = client.post("/chat/completions", json=body)
    assert resp.status_code == 404
    assert resp.json()["error"]["type"] == "NotFoundError"


# --- Tests through vlmparity itself (issue 6 item 1) ------------------------------------------------------
# When `vlmparity doctor` and `vlmparity run` exist, add here: doctor against URL; a run of >= 20 synthetic
# MME and MMMU samples (multi-image MMMU questions counted as `unsupported`); the same run twice giving
# byte-identical answers; a server kill mid-run, restart (`.ci/real_vllm.sh stop` / `start`) and resume.
