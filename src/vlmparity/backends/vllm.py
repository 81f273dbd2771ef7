"""vLLM (research/servers.md part 2): `/v1` API, `/health`, `/version`; nested errors since 0.10.1, flat before;
"At most N image(s) may be provided in one prompt." (V0: "... in one request.") raised by
`--limit-mm-per-prompt`."""

from __future__ import annotations

import re
from typing import Any

from vlmparity.backends.base import (
    BackendProfile,
    ErrorShape,
    ProbeSession,
    json_version,
    openai_like,
    register_backend,
    version_tuple,
)

KIND = "vllm"
FLAT_UNTIL = (0, 10, 1)  # vLLM < 0.10.1 answers flat errors, nested from then on (vllm-project/vllm#22099)


async def answers_version(session: ProbeSession) -> bool:
    """`/version` answers 200 with a JSON object holding `version` (vLLM and SGLang do)."""
    reply = await session.get("/version")
    doc = reply.json()
    return reply.status == 200 and isinstance(doc, dict) and "version" in doc


def _nested_message(doc: Any) -> str | None:
    err = doc.get("error") if isinstance(doc, dict) else None
    if not isinstance(err, dict):
        return None
    msg = err.get("message")
    if msg is None or isinstance(msg, str):
        return msg
    return str(msg)


def _flat_message(doc: Any) -> str | None:
    msg = doc.get("message") if isinstance(doc, dict) else None
    return msg if isinstance(msg, str) else None


NESTED = ErrorShape(
    name="nested",
    text='{"error": {"message", "type", "param", "code"}} (vLLM >= 0.10.1, OpenAI)',
    order=20,
    matches=lambda doc: isinstance(doc, dict) and isinstance(doc.get("error"), dict),
    message=_nested_message,
    unwrap=True,
)
FLAT = ErrorShape(
    name="flat",
    text='{"object": "error", "message", "type", "code"} (vLLM < 0.10.1)',
    order=30,
    matches=lambda doc: (
        isinstance(doc, dict) and (doc.get("object") == "error" or ("message" in doc and "type" in doc))
    ),
    message=_flat_message,
)


def expected_error_shape(version: str | None) -> str | None:
    """The error shape this vLLM version gives; None when the version is unknown."""
    parsed = version_tuple(version)
    if parsed is None:
        return None
    return FLAT.name if parsed < FLAT_UNTIL else NESTED.name


PROFILE = register_backend(
    BackendProfile(
        kind=KIND,
        title="vLLM",
        resolve=openai_like(
            KIND, health="/health", listing=("/v1",), chat=("/v1",), version=json_version("/version")
        ),
        identify=answers_version,
        detect_order=30,
        version=json_version("/version"),
        version_source="/version",
        ready_text="/health answered 200",
        error_shapes=(NESTED, FLAT),
        expected_error_shape=expected_error_shape,
        image_limit_patterns=(
            re.compile(r"At most (\d+) image\(s\) may be provided in one (?:prompt|request)"),
        ),
        image_limit_option="--limit-mm-per-prompt '{{\"image\": {n}}}'",
    )
)
