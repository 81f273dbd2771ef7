"""SGLang: vLLM's paths (`/v1`, `/health`, `/version`) plus `/get_model_info`, which tells it from vLLM;
its version is in `/get_server_info`. Its errors are the flat and nested shapes vLLM declares."""

from __future__ import annotations

from vlmparity.backends.base import BackendProfile, ProbeSession, json_version, openai_like, register_backend
from vlmparity.backends.vllm import answers_version

KIND = "sglang"


async def _identify(session: ProbeSession) -> bool:
    if not await answers_version(session):
        return False
    info = await session.get("/get_model_info")
    return info.status == 200 and info.json() is not None


PROFILE = register_backend(
    BackendProfile(
        kind=KIND,
        title="SGLang",
        resolve=openai_like(
            KIND, health="/health", listing=("/v1",), chat=("/v1",), version=json_version("/get_server_info")
        ),
        identify=_identify,
        detect_order=20,
        version=json_version("/get_server_info"),
        ready_text="/health answered 200",
    )
)
