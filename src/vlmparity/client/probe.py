"""Find out what is behind an endpoint URL and wait until it is ready: `resolve_endpoint(spec)`.

Detection (kind `auto`): OVMS answers `/v2/health/ready` (200 or 503) — vLLM and SGLang do not; vLLM and
SGLang answer `/version`; SGLang also answers `/get_model_info`; anything else is a generic
OpenAI-compatible server. Readiness: vLLM/SGLang `/health` == 200 (404 there never changes by waiting:
the `/v1/models` listing stands in, else the probe fails at once); OVMS `/v2/health/ready` == 200, then
the model `AVAILABLE` in `/v1/config` (else `/v2/models/{model}/ready` == 200); generic: the `/models` listing answers. Served names come from
`/v1/models` (vLLM, SGLang, generic), `/v3/models` (OVMS >= 2025.3) or `/v1/config` (every OVMS).
The chat URL is the user's path if it answers, else the backend's own (`/v3` for OVMS: every release
serves it; `/v1` only from 2026.3). Every failure is an `EndpointError` with one clear line.
"""

from __future__ import annotations

import asyncio
import logging
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from vlmparity.client.classify import (
    describe_exception,
    looks_like_html,
    message_from_html,
    server_message,
    wire_int,
)
from vlmparity.client.endpoint import BackendKind, EndpointSpec, ResolvedEndpoint, split_url
from vlmparity.client.transport import read_capped
from vlmparity.errors import EndpointError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0
MAX_MODEL_LEN = 2**40  # a max_model_len above this is not a length: absent
MAX_VERSION_CHARS = 64  # a server version longer than this is cut (it is shown and stored)
MAX_MODEL_NAME_CHARS = 1024  # a listed model id longer than this cannot be sent back: not listed
PROBE_MAX_BYTES = 64 * 1024 * 1024  # a probe reply (health, model list, version) larger than this is refused
# The least time a probe request gets even when the readiness budget is (nearly) spent, so that the last
# poll reports what the server said rather than our own impatience.
MIN_PROBE_TIMEOUT_S = 1.0


class _NotReady(Exception):
    """Something that may fix itself by waiting (refused connection, 503, model still loading)."""

    def __init__(self, reason: str, *, connection: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection = connection


@dataclass(frozen=True)
class _Reply:
    url: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def html(self) -> bool:
        return looks_like_html(self.headers, self.body)

    def json(self) -> Any:
        """Parsed JSON, or None when the body is not JSON."""
        if not self.body.strip() or self.html:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


class _Prober:
    def __init__(self, spec: EndpointSpec, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self.spec = spec
        self.client = client
        self.headers = headers
        self.root, self.api_path = split_url(spec.url)
        self.notes: list[str] = []
        self.missing_listing: list[str] = []  # `/models` paths that answered 404
        self.deadline: float | None = None  # time.monotonic() when the readiness budget ends
        self.missing_health: str | None = None  # the vLLM/SGLang health path, when it answered 404

    def timeout(self) -> float:
        """Seconds one request may take: PROBE_TIMEOUT_S, capped by what is left of the readiness budget."""
        if self.deadline is None:
            return PROBE_TIMEOUT_S
        left = self.deadline - time.monotonic()
        return min(PROBE_TIMEOUT_S, max(left, MIN_PROBE_TIMEOUT_S))

    async def request(self, method: str, path: str, content: bytes | None = None) -> _Reply:
        url = self.root + path
        try:
            async with self.client.stream(
                method, url, headers=self.headers, content=content, timeout=self.timeout()
            ) as response:
                body = await read_capped(response, PROBE_MAX_BYTES)
        except (httpx.HTTPError, OSError) as exc:
            reason = describe_exception(exc)
            raise _NotReady(reason, connection=not isinstance(exc, httpx.TimeoutException)) from None
        if isinstance(body, str):
            raise EndpointError(
                f"{url} answered {response.status_code} with a malformed reply: {body}",
                hint="is this the OpenAI-compatible API port of the server?",
            )
        return _Reply(url, response.status_code, response.headers, body)

    def _refuse_html(self, reply: _Reply) -> None:
        if reply.html:
            title = message_from_html(reply.body)
            if reply.status >= 500:  # a proxy's error page: the server behind it may still come up
                raise _NotReady(f"{reply.url} answered {reply.status} ({title})")
            raise EndpointError(
                f"{reply.url} answered an HTML page ({title!r}), not JSON",
                hint="is this the OpenAI-compatible API port of the server?",
            )

    def _refuse_auth(self, reply: _Reply) -> None:
        if reply.status in (401, 403):
            msg = server_message(reply.headers, reply.body) or f"HTTP {reply.status}"
            raise EndpointError(
                f"{reply.url} refused the request ({reply.status}: {msg})",
                hint="set the endpoint's api_key or OPENAI_API_KEY",
            )

    # -- detection ----------------------------------------------------------------------------------------

    async def detect(self) -> BackendKind:
        if self.spec.kind is not BackendKind.AUTO:
            return self.spec.kind
        ready = await self.request("GET", "/v2/health/ready")
        if ready.status in (200, 503) and not ready.html:
            return BackendKind.OVMS
        self._refuse_auth(ready)
        version = await self.request("GET", "/version")
        doc = version.json()
        if version.status == 200 and isinstance(doc, dict) and "version" in doc:
            info = await self.request("GET", "/get_model_info")
            return BackendKind.SGLANG if info.status == 200 and info.json() is not None else BackendKind.VLLM
        return BackendKind.OPENAI

    # -- per backend ------------------------------------------------------------------------------------

    async def models_openai(self, path: str) -> tuple[list[str], int | None] | None:
        """Names from an OpenAI `/models` listing; None when the path does not exist."""
        reply = await self.request("GET", path)
        if reply.status in (404, 405):
            return None
        self._refuse_auth(reply)
        self._refuse_html(reply)
        if reply.status == 503:
            raise _NotReady(f"{reply.url} answered 503")
        doc = reply.json()
        if reply.status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            if reply.status == 200:
                raise EndpointError(
                    f"{reply.url} did not answer a JSON model list "
                    f"({(reply.body[:80] or b'empty body').decode('utf-8', 'replace')!r})",
                    hint="is this an OpenAI-compatible server?",
                )
            msg = server_message(reply.headers, reply.body) or "no message"
            raise _NotReady(f"{reply.url} answered {reply.status}: {msg}")
        names = [
            m["id"]
            for m in doc["data"]
            if isinstance(m, dict) and isinstance(m.get("id"), str) and len(m["id"]) <= MAX_MODEL_NAME_CHARS
        ]
        lens = [m.get("max_model_len") for m in doc["data"] if isinstance(m, dict)]
        max_len = next(
            (v for v in (wire_int(x, lo=1, hi=MAX_MODEL_LEN) for x in lens) if v is not None), None
        )
        return names, max_len

    async def ready_vllm_like(self) -> bool:
        """True when `/health` says ready; False when there is no `/health` at all (404), which waiting
        never changes: the model listing then stands for readiness."""
        reply = await self.request("GET", "/health")
        if reply.status == 200:
            return True
        self._refuse_auth(reply)
        self._refuse_html(reply)
        if reply.status in (404, 405):
            self.missing_health = "/health"
            return False
        raise _NotReady(f"{reply.url} answered {reply.status}")

    async def version_vllm(self) -> str | None:
        reply = await self.request("GET", "/version")
        doc = reply.json()
        return _version_text(doc.get("version")) if isinstance(doc, dict) else None

    async def version_sglang(self) -> str | None:
        reply = await self.request("GET", "/get_server_info")
        doc = reply.json()
        return _version_text(doc.get("version")) if isinstance(doc, dict) else None

    async def ready_ovms(self) -> None:
        reply = await self.request("GET", "/v2/health/ready")
        if reply.status == 200:
            return
        self._refuse_auth(reply)
        self._refuse_html(reply)
        raise _NotReady(f"{reply.url} answered {reply.status} (OVMS is still loading models)")

    async def models_ovms(self) -> list[str]:
        for path in ("/v3/models", "/v1/models"):
            listed = await self.models_openai(path)
            if listed is not None:
                return listed[0]
        # OVMS < 2025.3 has no model listing; /v1/config maps every servable to its version states.
        reply = await self.request("GET", "/v1/config")
        self._refuse_auth(reply)
        doc = reply.json()
        if reply.status != 200 or not isinstance(doc, dict):
            raise EndpointError(
                f"{reply.url} answered {reply.status}: cannot list the served models",
                hint="is this OpenVINO Model Server's REST port (--rest_port)?",
            )
        return [str(name) for name in doc]

    async def model_ready_ovms(self, model: str) -> None:
        """The model's state in /v1/config (every release; names with '/' need no path escaping), else
        the KServe model-ready route."""
        reply = await self.request("GET", "/v1/config")
        doc = reply.json()
        entry = doc.get(model) if reply.status == 200 and isinstance(doc, dict) else None
        if isinstance(entry, dict) and isinstance(entry.get("model_version_status"), list):
            states = [s.get("state") for s in entry["model_version_status"] if isinstance(s, dict)]
            if "AVAILABLE" in states:
                return
            raise _NotReady(f"model {model!r} is {'/'.join(map(str, states)) or 'not loaded'} in {reply.url}")
        reply = await self.request("GET", f"/v2/models/{urllib.parse.quote(model, safe='')}/ready")
        if reply.status != 200:
            raise _NotReady(f"{reply.url} answered {reply.status} (model {model!r} is not loaded yet)")

    async def version_ovms(self) -> str | None:
        reply = await self.request("GET", "/v2")
        doc = reply.json()
        version = doc.get("version") if reply.status == 200 and isinstance(doc, dict) else None
        return _version_text(version)

    # -- chat path ----------------------------------------------------------------------------------------

    async def _find_chat_base(self, candidates: list[str]) -> tuple[str | None, list[str]]:
        """The first API base whose /chat/completions exists (an empty JSON object must not give 404),
        and the paths tried."""
        tried: list[str] = []
        for base in dict.fromkeys(candidates):
            reply = await self.request("POST", base + "/chat/completions", content=b"{}")
            tried.append(base + "/chat/completions")
            if reply.status in (404, 405):
                continue
            self._refuse_auth(reply)
            self._refuse_html(reply)
            return base, tried
        return None, tried

    async def chat_path(self, candidates: list[str]) -> str:
        """The first API base whose /chat/completions exists; an EndpointError listing the paths if none."""
        base, tried = await self._find_chat_base(candidates)
        if base is not None:
            return base
        raise EndpointError(
            f"no chat completions endpoint at {self.spec.url}: 404 on "
            f"{', '.join(self.root + path for path in tried)}",
            hint=self._base_hint(),
        )

    def _base_hint(self) -> str:
        parts = urllib.parse.urlsplit(self.spec.url)
        origin = f"{parts.scheme}://{parts.netloc}"
        hint = f"give the server's API base URL: {origin}/v1 for vLLM, {origin}/v3 for OVMS"
        if self.missing_health and self.spec.kind is not BackendKind.AUTO:
            hint = f"without {self.missing_health} it may not be {self.spec.kind.value}: try --kind auto, or {hint}"
        return hint

    async def model_and_base(
        self, bases: list[str], chat_bases: list[str]
    ) -> tuple[str, list[str], int | None, str]:
        """(model, served names, max_model_len, chat base) from the first `/models` listing under `bases`;
        without any listing the chat path is found first (is there an OpenAI API here at all?) and the
        model must have been named."""
        for base in dict.fromkeys(bases):
            listed = await self.models_openai(base + "/models")
            if listed is not None:
                self.missing_listing.clear()  # a listing exists: an empty one is another problem
                served, max_len = listed
                return self.choose_model(served), served, max_len, await self.chat_path(chat_bases)
            self.missing_listing.append(base + "/models")
        # No listing anywhere: is there an OpenAI API here at all, before asking for a model name?
        found, tried = await self._find_chat_base(chat_bases)
        if found is None:
            health = [self.missing_health] if self.missing_health else []
            raise EndpointError(
                f"no OpenAI-compatible API at {self.spec.url}: {self.root} answered 404 on "
                f"{_enumerate(health + self.missing_listing + tried)}",
                hint=self._base_hint(),
            )
        model = self.choose_model([])
        return model, [], None, await self.chat_path(chat_bases)

    # -- model ---------------------------------------------------------------------------------------------

    def choose_model(self, served: list[str]) -> str:
        wanted = self.spec.model
        if wanted:
            if served and wanted not in served:
                raise EndpointError(
                    f"model {wanted!r} is not served by {self.spec.url}; served: {', '.join(served)}",
                    hint="use one of the served model names",
                )
            return wanted
        if len(served) == 1:
            return served[0]
        if not served and self.missing_listing:
            raise EndpointError(
                f"{self.spec.url} has no model listing ({self.root} answered 404 on "
                f"{_enumerate(self.missing_listing)}) and no model was given",
                hint="name the model to use",
            )
        if not served:
            raise EndpointError(
                f"{self.spec.url} lists no models and none was given", hint="name the model to use"
            )
        raise EndpointError(
            f"{self.spec.url} serves {len(served)} models ({', '.join(served)}) and none was chosen",
            hint="name the model to use",
        )

    async def resolve(self) -> ResolvedEndpoint:
        kind = await self.detect()
        version: str | None = None
        max_len: int | None = None
        path_noted = False
        if kind is BackendKind.OVMS:
            await self.ready_ovms()
            served = await self.models_ovms()
            model = self.choose_model(served)
            await self.model_ready_ovms(model)
            candidates = [self.api_path] if self.api_path else []
            candidates += ["/v3", "/v1"]
            base = await self.chat_path(candidates)
            if self.api_path == "/v1" and base != "/v1":
                self.notes.append("OVMS serves /v1 only from 2026.3; using /v3")
                path_noted = True
            version = await self.version_ovms()
        elif kind in (BackendKind.VLLM, BackendKind.SGLANG):
            has_health = await self.ready_vllm_like()
            model, served, max_len, base = await self.model_and_base(
                ["/v1"], ([self.api_path] if self.api_path else []) + ["/v1"]
            )
            if not has_health:
                self.notes.append(
                    f"{self.root}/health answered 404, so this may not be {kind.value} "
                    "(--kind auto detects the server); readiness was taken from /v1/models"
                )
            version = await (self.version_vllm() if kind is BackendKind.VLLM else self.version_sglang())
        else:
            bases = ([self.api_path] if self.api_path else []) + ["/v1", "/v3"]
            model, served, max_len, base = await self.model_and_base(bases, bases)
        if self.api_path and base != self.api_path and not path_noted:
            self.notes.append(f"{self.api_path}/chat/completions not found; using {base}")
        return ResolvedEndpoint(
            name=self.spec.display_name,
            kind=kind,
            url=self.spec.url,
            root_url=self.root,
            api_base=self.root + base,
            chat_url=self.root + base + "/chat/completions",
            model=model,
            served_models=tuple(served),
            server_version=version,
            max_model_len=max_len,
            notes=tuple(self.notes),
            api_key=self.spec.effective_api_key(),
        )


async def resolve_endpoint(
    spec: EndpointSpec,
    *,
    ready_timeout: float = 30.0,
    poll_interval: float = 1.0,
    client: httpx.AsyncClient | None = None,
    connect_timeout: float | None = None,
) -> ResolvedEndpoint:
    """Wait up to `ready_timeout` seconds for the endpoint to be ready, detect it, and resolve the model.

    `connect_timeout` bounds the wait for a server that refuses connections (nothing listening yet):
    0 gives up after the first refusal; None waits as long as for readiness.

    Each probe request may take at most what is left of `ready_timeout` (but at least
    MIN_PROBE_TIMEOUT_S), so a server that hangs is given up on when the budget ends."""
    key = spec.effective_api_key()
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    owns = client is None
    http = client or httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, follow_redirects=True)
    start = time.monotonic()
    try:
        while True:
            prober = _Prober(spec, http, headers)
            prober.deadline = start + ready_timeout
            try:
                resolved = await prober.resolve()
            except _NotReady as err:
                waited = time.monotonic() - start
                budget = connect_timeout if err.connection and connect_timeout is not None else ready_timeout
                if waited >= min(budget, ready_timeout):
                    raise _not_ready_error(spec, err, waited) from None
                log.debug("%s not ready yet: %s", spec.display_name, err.reason)
                await asyncio.sleep(min(poll_interval, max(0.0, ready_timeout - waited)))
                continue
            log.info("resolved %s", resolved.describe())
            return resolved
    finally:
        if owns:
            await http.aclose()


def _version_text(value: Any) -> str | None:
    """A server's version as shown and stored: a string or number, one line, at most MAX_VERSION_CHARS."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    return text if len(text) <= MAX_VERSION_CHARS else text[: MAX_VERSION_CHARS - 1] + "…"


def _enumerate(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _not_ready_error(spec: EndpointSpec, err: _NotReady, waited: float) -> EndpointError:
    after = f" (waited {waited:.0f} s)" if waited >= 1 else ""
    if err.connection:
        return EndpointError(
            f"cannot connect to {spec.url}: {err.reason} — is the server running?{after}",
            hint="check the host and port, or raise the ready timeout while the server starts",
        )
    return EndpointError(
        f"{spec.url} not ready after {waited:.0f} s: {err.reason}",
        hint="wait for the model to finish loading or raise the ready timeout",
    )
