"""The tiny requests that probe an endpoint: doctor's checklist and the run's start-up image-limit probe.

They send the same bodies, so a limit doctor reports is the limit a run acts on.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from PIL import Image

__all__ = ["IMAGE_COLOURS", "MAX_TOKENS", "chat_body", "png_data_url"]

MAX_TOKENS = 8
IMAGE_COLOURS = ((220, 40, 40), (40, 180, 60), (40, 80, 220))


def png_data_url(colour: tuple[int, int, int], side: int = 32) -> str:
    """A small PNG as a base64 data URL: a solid colour with a white diagonal (distinct, decodable)."""
    img = Image.new("RGB", (side, side), colour)
    for i in range(side):
        img.putpixel((i, i), (255, 255, 255))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def chat_body(
    n_images: int, *, temperature: float = 0.0, seed: int | None = None, text: str | None = None
) -> dict[str, Any]:
    """A tiny chat request (without `model`): `n_images` distinct 32x32 PNGs and a short question."""
    colours = [IMAGE_COLOURS[i % len(IMAGE_COLOURS)] for i in range(n_images)]
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": png_data_url(c)}} for c in colours
    ]
    question = text or ("What colour is this image?" if n_images == 1 else "What colours are these images?")
    content.append({"type": "text", "text": question})
    body: dict[str, Any] = {
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "temperature": temperature,
    }
    if seed is not None:
        body["seed"] = seed
    return body
