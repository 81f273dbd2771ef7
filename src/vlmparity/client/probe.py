"""Find out what is behind an endpoint URL and wait until it is ready: `resolve_endpoint(spec)`.

The kinds of server are the backend profiles of `vlmparity.backends`: under `--kind auto` each registered
profile's `identify` hook is tried in its `detect_order` (OVMS answers `/v2/health/ready` with 200 or 503;
SGLang answers `/version` and `/get_model_info`; vLLM `/version`), and a server none recognises is the
fallback kind (a generic OpenAI-compatible server). The profile's `resolve` hook then waits for readiness,
finds the served models, the chat path and the version (research/servers.md has each server's paths). The
chat URL is the user's path if it answers, else the backend's own. Every failure is an `EndpointError` with
one clear line; what may fix itself by waiting raises `NotReady`, which `resolve_endpoint` polls on.

`Prober` is the public probing session the profiles' hooks (and `doctor`) use: requests relative to the
server root, the OpenAI `/models` listing, choosing the model, finding the chat path; its `step`, `profile`,
`served` and `model` say how far a probe got.
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

from vlmparity.backends import (
    BackendProfile,
    NotReady,
    ProbeReply,
    detection_order,
    fallback_backend,
    get_backend,
)
from vlmparity.client.classify import (
    describe_exception,
    looks_like_html,
    message_from_html,
    server_message,
    wire_int,
)
from vlmparity.client.endpoint import (
    BackendKind,
    EndpointSpec,
    ResolvedEndpoint,
    effective_api_key,
    split_url,
)
from vlmparity.client.transport import read_capped
from vlmparity.errors import EndpointError

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 10.0
MAX_MODEL_LEN = 2**40  # a max_model_len above this is not a length: absent
MAX_MODEL_NAME_CHARS = 1024  # a listed model id longer than this cannot be sent back: not listed
PROBE_MAX_BYTES = 64 * 1024 * 1024  # a probe reply (health, model list, version) larger than this is refused
# The least time a probe request gets even when the readiness budget is (nearly) spent, so that the last
# poll reports what the server said rather than our own impatience.
MIN_PROBE_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class Reply:
    """One reply to a probe request: where from, its status, headers and body."""

    url: str
    status: int
    headers: httpx.Headers
    body: bytes

    @property
    def html(self) -> bool:
        """True when the body is an HTML page."""
        return looks_like_html(self.headers, self.body)

    def json(self) -> Any:
        """Parsed JSON, or None when the body is not JSON."""
        if not self.body.strip() or self.html:
            return None
        try:
            return orjson.loads(self.body)
        except orjson.JSONDecodeError:
            return None


def request_headers(spec: EndpointSpec) -> dict[str, str]:
    """Probe request headers: JSON content type and the spec's bearer key (else `OPENAI_API_KEY`) if any."""
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = effective_api_key(spec)
    if key is not None:
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    return headers


class Prober:
    """One look at an endpoint (`resolve()`), and the probing primitives the backend profiles' hooks use.

    No waiting here: what may fix itself raises `NotReady` (`resolve_endpoint` polls). After `resolve()`,
    even a failed one, `step` is the checklist step it was in (reachable, ready, models, model, chat),
    `profile` the detected kind (None before detection), `served` the served names seen, `model` the one
    chosen: `doctor` reports from them where a probe stopped.
    """

    def __init__(
        self, spec: EndpointSpec, client: httpx.AsyncClient, headers: dict[str, str] | None = None
    ) -> None:
        self.spec = spec
        self.client = client
        self.headers = request_headers(spec) if headers is None else headers
        self.root, self.api_path = split_url(spec.url)
        self.notes: list[str] = []
        self.missing_listing: list[str] = []  # `/models` paths that answered 404
        self.deadline: float | None = None  # time.monotonic() when the readiness budget ends
        self.missing_health: str | None = None  # a health path that answered 404
        self.step = "reachable"
        self.profile: BackendProfile | None = None
        self.served: list[str] | None = None
        self.model: str | None = None
        self._seen: dict[str, Reply] | None = None  # GET replies shared by the detection hooks

    def timeout(self) -> float:
        """Seconds one request may take: PROBE_TIMEOUT_S, capped by what is left of the readiness budget."""
        if self.deadline is None:
            return PROBE_TIMEOUT_S
        left = self.deadline - time.monotonic()
        return min(PROBE_TIMEOUT_S, max(left, MIN_PROBE_TIMEOUT_S))

    async def request(self, method: str, path: str, content: bytes | None = None) -> Reply:
        """`method` on `path` under the server root; `NotReady` when the server cannot be reached."""
        url = self.root + path
        try:
            async with self.client.stream(
                method, url, headers=self.headers, content=content, timeout=self.timeout()
            ) as response:
                body = await read_capped(response, PROBE_MAX_BYTES)
        except (httpx.HTTPError, OSError) as exc:
            reason = describe_exception(exc)
            raise NotReady(reason, connection=not isinstance(exc, httpx.TimeoutException)) from None
        if isinstance(body, str):
            raise EndpointError(
                f"{url} answered {response.status_code} with a malformed reply: {body}",
                hint="is this the OpenAI-compatible API port of the server?",
            )
        return Reply(url, response.status_code, response.headers, body)

    async def get(self, path: str) -> Reply:
        """GET `path`; during detection one reply per path serves every profile that asks."""
        if self._seen is not None and path in self._seen:
            return self._seen[path]
        reply = await self.request("GET", path)
        if self._seen is not None:
            self._seen[path] = reply
        return reply

    def refuse_html(self, reply: ProbeReply) -> None:
        """An HTML page where JSON was expected: `NotReady` for a proxy's 5xx page, else `EndpointError`."""
        if reply.html:
            title = message_from_html(reply.body)
            if reply.status >= 500:  # a proxy's error page: the server behind it may still come up
                raise NotReady(f"{reply.url} answered {reply.status} ({title})")
            raise EndpointError(
                f"{reply.url} answered an HTML page ({title!r}), not JSON",
                hint="is this the OpenAI-compatible API port of the server?",
            )

    def refuse_auth(self, reply: ProbeReply) -> None:
        """A 401/403 reply is an `EndpointError` naming the key options."""
        if reply.status in (401, 403):
            msg = server_message(reply.headers, reply.body) or f"HTTP {reply.status}"
            raise EndpointError(
                f"{reply.url} refused the request ({reply.status}: {msg})",
                hint="set the endpoint's api_key or OPENAI_API_KEY",
            )

    # -- detection ----------------------------------------------------------------------------------------

    async def detect(self) -> BackendProfile:
        """The spec's kind, or under `auto` the first registered profile that recognises the server (else the
        fallback kind)."""
        self.profile = await self._detect()
        self.step = "ready"
        return self.profile

    async def _detect(self) -> BackendProfile:
        if not self.spec.kind.auto:
            return get_backend(self.spec.kind)
        self._seen = {}
        try:
            for profile in detection_order():
                if profile.identify is not None and await profile.identify(self):
                    return profile
        finally:
            self._seen = None
        return fallback_backend()

    # -- model listing ------------------------------------------------------------------------------------

    async def models_openai(self, path: str) -> tuple[list[str], int | None] | None:
        """(names, max_model_len) from an OpenAI `/models` listing; None when the path does not exist."""
        self.step = "models"
        reply = await self.request("GET", path)
        if reply.status in (404, 405):
            return None
        self.refuse_auth(reply)
        self.refuse_html(reply)
        if reply.status == 503:
            raise NotReady(f"{reply.url} answered 503")
        doc = reply.json()
        if reply.status != 200 or not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
            if reply.status == 200:
                raise EndpointError(
                    f"{reply.url} did not answer a JSON model list "
                    f"({(reply.body[:80] or b'empty body').decode('utf-8', 'replace')!r})",
                    hint="is this an OpenAI-compatible server?",
                )
            msg = server_message(reply.headers, reply.body) or "no message"
            raise NotReady(f"{reply.url} answered {reply.status}: {msg}")
        names = [
            m["id"]
            for m in doc["data"]
            if isinstance(m, dict) and isinstance(m.get("id"), str) and len(m["id"]) <= MAX_MODEL_NAME_CHARS
        ]
        self.served = names
        lens = [m.get("max_model_len") for m in doc["data"] if isinstance(m, dict)]
        max_len = next(
            (v for v in (wire_int(x, lo=1, hi=MAX_MODEL_LEN) for x in lens) if v is not None), None
        )
        return names, max_len

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
            self.refuse_auth(reply)
            self.refuse_html(reply)
            return base, tried
        return None, tried

    async def chat_path(self, candidates: list[str]) -> str:
        """The first API base whose /chat/completions exists; an EndpointError listing the paths if none."""
        self.step = "chat"
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
        if self.missing_health and not self.spec.kind.auto:
            hint = f"without {self.missing_health} it may not be {self.spec.kind}: try --kind auto, or {hint}"
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
        """The spec's model (which must be served, if any are listed), else the only served one."""
        self.served = served
        self.step = "model"
        self.model = self._choose_model(served)
        return self.model

    def _choose_model(self, served: list[str]) -> str:
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
        """Detect the kind, then let its profile find readiness, the model, the chat path and the version."""
        profile = await self.detect()
        found = await profile.resolve(self)
        if self.api_path and found.base != self.api_path and not found.path_noted:
            self.notes.append(f"{self.api_path}/chat/completions not found; using {found.base}")
        return ResolvedEndpoint(
            name=self.spec.display_name,
            kind=BackendKind(profile.kind),
            url=self.spec.url,
            root_url=self.root,
            api_base=self.root + found.base,
            chat_url=self.root + found.base + "/chat/completions",
            model=found.model,
            served_models=found.served,
            server_version=found.version,
            max_model_len=found.max_model_len,
            notes=tuple(self.notes),
            api_key=effective_api_key(self.spec),
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
    headers = request_headers(spec)
    owns = client is None
    http = client or httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, follow_redirects=True)
    start = time.monotonic()
    try:
        while True:
            prober = Prober(spec, http, headers)
            prober.deadline = start + ready_timeout
            try:
                resolved = await prober.resolve()
            except NotReady as err:
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


def _enumerate(items: list[str]) -> str:
    """`a`, `a and b`, `a, b and c`."""
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _not_ready_error(spec: EndpointSpec, err: NotReady, waited: float) -> EndpointError:
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
