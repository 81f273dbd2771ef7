"""OpenVINO Model Server (research/servers.md part 1): recognised by KServe's `/v2/health/ready` (200 or 503);
the OpenAI API under `/v3` on every release and also under `/v1` from 2026.3; `/v3/models` from 2025.3,
`/v1/config` (each servable's version states) on all; the version in the `/v2` server metadata. Errors are
`{"error": "<string>"}`, calculator errors wrapped in MediaPipe's prefix; a text-only servable given an image
says "supports only text input" (no image accepted at all). No per-request image limit to raise."""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

from vlmparity.backends.base import (
    BackendProfile,
    ErrorShape,
    NotReady,
    ProbeSession,
    Resolution,
    json_version,
    register_backend,
)
from vlmparity.errors import EndpointError

KIND = "ovms"
READY_PATH = "/v2/health/ready"

# 'Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \nCalculator::
# Process() for node "X" failed: <message>'.
_MEDIAPIPE_TAIL_RE = re.compile(r'Calculator::Process\(\) for node "[^"]*" failed: ?(.*)\Z', re.S)


def unwrap_mediapipe(message: str) -> str:
    """Drop OVMS's MediaPipe wrapper and keep the calculator's own message."""
    match = _MEDIAPIPE_TAIL_RE.search(message)
    return match.group(1) if match and match.group(1).strip() else message


def _flat_string_message(doc: Any) -> str | None:
    if isinstance(doc, str):  # a bare JSON string
        return doc
    err = doc.get("error") if isinstance(doc, dict) else None
    return err if isinstance(err, str) else None


FLAT_STRING = ErrorShape(
    name="flat-string",
    text='{"error": "<message>"} (OVMS)',
    order=10,
    matches=lambda doc: isinstance(doc, dict) and isinstance(doc.get("error"), str),
    message=_flat_string_message,
    unwrap=True,
)


async def _identify(session: ProbeSession) -> bool:
    ready = await session.get(READY_PATH)
    if ready.status in (200, 503) and not ready.html:
        return True
    session.refuse_auth(ready)  # the first probe of every detection: a wrong key ends it here
    return False


async def _ready(session: ProbeSession) -> None:
    reply = await session.get(READY_PATH)
    if reply.status == 200:
        return
    session.refuse_auth(reply)
    session.refuse_html(reply)
    raise NotReady(f"{reply.url} answered {reply.status} (OVMS is still loading models)")


async def _models(session: ProbeSession) -> list[str]:
    session.step = "models"
    for path in ("/v3/models", "/v1/models"):
        listed = await session.models_openai(path)
        if listed is not None:
            return listed[0]
    # OVMS < 2025.3 has no model listing; /v1/config maps every servable to its version states.
    reply = await session.request("GET", "/v1/config")
    session.refuse_auth(reply)
    doc = reply.json()
    if reply.status != 200 or not isinstance(doc, dict):
        raise EndpointError(
            f"{reply.url} answered {reply.status}: cannot list the served models",
            hint="is this OpenVINO Model Server's REST port (--rest_port)?",
        )
    return [str(name) for name in doc]


async def _model_ready(session: ProbeSession, model: str) -> None:
    """The model's state in /v1/config (every release; names with '/' need no path escaping), else the
    KServe model-ready route."""
    session.step = "ready"
    reply = await session.request("GET", "/v1/config")
    doc = reply.json()
    entry = doc.get(model) if reply.status == 200 and isinstance(doc, dict) else None
    if isinstance(entry, dict) and isinstance(entry.get("model_version_status"), list):
        states = [s.get("state") for s in entry["model_version_status"] if isinstance(s, dict)]
        if "AVAILABLE" in states:
            return
        raise NotReady(f"model {model!r} is {'/'.join(map(str, states)) or 'not loaded'} in {reply.url}")
    reply = await session.request("GET", f"/v2/models/{urllib.parse.quote(model, safe='')}/ready")
    if reply.status != 200:
        raise NotReady(f"{reply.url} answered {reply.status} (model {model!r} is not loaded yet)")


_version = json_version("/v2", require_ok=True)


async def _resolve(session: ProbeSession) -> Resolution:
    await _ready(session)
    served = await _models(session)
    model = session.choose_model(served)
    await _model_ready(session, model)
    candidates = ([session.api_path] if session.api_path else []) + ["/v3", "/v1"]
    base = await session.chat_path(candidates)
    noted = session.api_path == "/v1" and base != "/v1"
    if noted:
        session.notes.append("OVMS serves /v1 only from 2026.3; using /v3")
    return Resolution(model, tuple(served), base, await _version(session), None, path_noted=noted)


async def api_paths(session: ProbeSession, chat_url: str) -> dict[str, bool]:
    """Which API bases exist: /v1 chat (2026.3+), the /v3/models listing (2025.3+) and /v3 chat."""
    found: dict[str, bool] = {"/v3": chat_url.endswith("/v3/chat/completions")}
    for key, method, path, content in (
        ("/v1", "POST", "/v1/chat/completions", b"{}"),
        ("/v3/models", "GET", "/v3/models", None),
        ("/v3", "POST", "/v3/chat/completions", b"{}"),
    ):
        if found.get(key):
            continue
        try:
            reply = await session.request(method, path, content=content)
        except NotReady:
            found[key] = False
            continue
        found[key] = reply.status not in (404, 405) and not reply.html
    return found


def release(v1_chat: bool, v3_models: bool) -> str:
    """The OVMS release range implied by its paths (research/servers.md §1.1)."""
    if v1_chat:
        return "2026.3 or newer"
    if v3_models:
        return "2025.3 to 2026.2"
    return "2025.2 or older"


def paths_report(paths: dict[str, bool], api_base: str) -> tuple[str, str]:
    """(release, doctor's backend detail after the name) from the API paths a server serves."""
    found = release(paths.get("/v1", False), paths.get("/v3/models", False))
    bases = " and ".join(p for p in ("/v3", "/v1") if paths.get(p))
    listing = "with" if paths.get("/v3/models") else "without"
    detail = f"serves {bases or '/v3'} {listing} a /v3/models listing, so release {found}; use {api_base}"
    if not paths.get("/v1"):
        detail += " (/v1 needs OVMS 2026.3 or newer)"
    return found, detail


PROFILE = register_backend(
    BackendProfile(
        kind=KIND,
        title="OpenVINO Model Server",
        resolve=_resolve,
        identify=_identify,
        detect_order=10,
        version=_version,
        ready_text="/v2/health/ready answered 200 and the model is AVAILABLE",
        error_shapes=(FLAT_STRING,),
        unwrap_message=unwrap_mediapipe,
        image_limit_patterns=(re.compile(r"supports only text input, but image_url has been provided"),),
        api_paths=api_paths,
        paths_report=paths_report,
    )
)
