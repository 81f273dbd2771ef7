"""Any other OpenAI-compatible server (the fallback kind): the `/models` listing under the user's API path,
`/v1` or `/v3` stands for readiness; no version; FastAPI's `{"detail": ...}` errors."""

from __future__ import annotations

from typing import Any

from vlmparity.backends.base import BackendProfile, ErrorShape, openai_like, register_backend

KIND = "openai"


def _detail_message(doc: Any) -> str | None:
    detail = doc.get("detail") if isinstance(doc, dict) else None
    if isinstance(detail, str):
        return detail
    if not isinstance(detail, list) or not detail:
        return None
    parts = []
    for item in detail:
        if isinstance(item, dict) and "msg" in item:
            loc = ".".join(str(x) for x in item.get("loc", ()))
            parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
        else:
            parts.append(str(item))
    return "; ".join(parts)


DETAIL = ErrorShape(
    name="detail",
    text='{"detail": ...} (FastAPI default)',
    order=40,
    matches=lambda doc: isinstance(doc, dict) and "detail" in doc,
    message=_detail_message,
)

PROFILE = register_backend(
    BackendProfile(
        kind=KIND,
        title="a generic OpenAI-compatible server",
        resolve=openai_like(
            KIND, health=None, listing=("/v1", "/v3"), chat=("/v1", "/v3"), user_path_listed=True
        ),
        fallback=True,
        unrecognised=(
            "neither vLLM nor OVMS was recognised",
            "pass --kind vllm|ovms if it is one of them; the checks below still apply",
        ),
        error_shapes=(DETAIL,),
    )
)
