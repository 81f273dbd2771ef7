"""What is particular to one kind of serving engine (`BackendProfile`), and the registry of kinds.

A profile says, for one kind (vLLM, OVMS, ...): how a server of that kind is recognised (`identify`, tried in
`detect_order`), how it is resolved once recognised (`resolve`: readiness, model listing, chat path, version),
the shapes of its error bodies (`error_shapes`: how each is recognised, named and its message read), how it
words an image-limit refusal (`image_limit_patterns`) and what doctor and compare advise about it. The client's
prober (`vlmparity.client.probe.Prober`) hands each hook a `ProbeSession`: the public probing primitives
(requests relative to the server root, the OpenAI `/models` listing, choosing the model, finding the chat path).

The registry holds one profile per kind: `register_backend(profile)` / `unregister_backend(kind)` (the modules of this package register
vLLM, OVMS, SGLang and the generic OpenAI-compatible server at import; a test or a plug-in may register more),
`get_backend(kind)`, `backend_kinds()` (in registration order), `backend_profiles()`, `fallback_backend()`
(the kind of a server no profile recognises) and `error_shapes()`. `AUTO` is not a kind: it asks for detection.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from vlmparity.errors import ConfigError

AUTO = "auto"  # not a kind: "detect it"
MAX_VERSION_CHARS = 64  # a server version longer than this is cut (it is shown and stored)


class NotReady(Exception):
    """Something that may fix itself by waiting (refused connection, 503, model still loading)."""

    def __init__(self, reason: str, *, connection: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.connection = connection


class ProbeReply(Protocol):
    """One reply to a probe request: where from, its status, headers and body."""

    @property
    def url(self) -> str: ...

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def body(self) -> bytes: ...

    @property
    def html(self) -> bool: ...

    def json(self) -> Any: ...


class ProbeSession(Protocol):
    """The probing primitives a profile's hooks use (implemented by `vlmparity.client.probe.Prober`).

    Paths are relative to the server root (`root`, which keeps a reverse-proxy prefix); `api_path` is the API
    base the user's URL named (`/v1`, `/v3`) or None. `step` names the checklist step in progress (`doctor`
    reports where a probe stopped): reachable, ready, models, model, chat. `notes` collects what the probe
    decided and why; `missing_health` is a health path that answered 404."""

    root: str
    api_path: str | None
    step: str
    notes: list[str]
    missing_health: str | None

    async def request(self, method: str, path: str, content: bytes | None = None) -> ProbeReply: ...

    async def get(self, path: str) -> ProbeReply: ...

    def refuse_auth(self, reply: ProbeReply) -> None: ...

    def refuse_html(self, reply: ProbeReply) -> None: ...

    async def models_openai(self, path: str) -> tuple[list[str], int | None] | None: ...

    def choose_model(self, served: list[str]) -> str: ...

    async def chat_path(self, candidates: list[str]) -> str: ...

    async def model_and_base(
        self, bases: list[str], chat_bases: list[str]
    ) -> tuple[str, list[str], int | None, str]: ...


@dataclass(frozen=True)
class Resolution:
    """What a profile's `resolve` found: the model, the served names, the API base of the chat path, the
    server's version and context length; `path_noted` when the profile already noted why the user's API path
    was not used."""

    model: str
    served: tuple[str, ...]
    base: str
    version: str | None = None
    max_model_len: int | None = None
    path_noted: bool = False


@dataclass(frozen=True)
class ErrorShape:
    """One error-body shape: its name (`doctor --json`'s `error_shape`), how doctor describes it, whether a
    body has it (`matches`, for naming) and the server's message in it (`message`, None when the body does
    not carry it). Shapes are tried in `order` (lowest first) over every registered kind; `unwrap`: the
    message may be wrapped by the server (every profile's `unwrap_message` is applied)."""

    name: str
    text: str
    order: int
    matches: Callable[[Any], bool]
    message: Callable[[Any], str | None]
    unwrap: bool = False


Identifier = Callable[[ProbeSession], Awaitable[bool]]
Resolver = Callable[[ProbeSession], Awaitable[Resolution]]
VersionReader = Callable[[ProbeSession], Awaitable[str | None]]
PathsProbe = Callable[[ProbeSession, str], Awaitable[dict[str, bool]]]


@dataclass(frozen=True)
class BackendProfile:
    """Everything kind-specific about one serving engine (see the module docstring).

    - `kind`: the name users give (`--kind`), stored in each run; `title`: how doctor names it.
    - `resolve`: readiness, served models, chat path and version once the kind is known.
    - `identify` / `detect_order`: recognition under `--kind auto` (lowest order first); a profile without
      `identify` is never detected; `fallback`: the kind of a server no profile recognises (one at most).
    - `version`: read the server's version (doctor asks even when resolving failed); `version_source`: the
      path doctor names beside the version (vLLM's `/version`), None to show the version alone.
    - `ready_text`: doctor's "ready" line; `unrecognised`: doctor's warning (detail, fix) for the fallback.
    - `error_shapes`, `unwrap_message`: error bodies (see `ErrorShape`); `expected_error_shape(version)`: the
      shape a server of this version must give (doctor warns on another), None when it cannot say.
    - `image_limit_patterns`: image-limit refusals; a pattern's group 1 is the limit, a pattern without a
      group means no image at all (0). `image_limit_option`: the server option that raises it, formatted with
      `n` (vLLM's `--limit-mm-per-prompt`), None when there is none to name.
    - `api_paths(session, chat_url)` / `paths_report(paths, api_base)`: which API bases a server serves
      (OVMS: /v1 only from 2026.3), and (release, doctor's backend detail) from them.
    """

    kind: str
    title: str
    resolve: Resolver
    identify: Identifier | None = None
    detect_order: int = 100
    fallback: bool = False
    version: VersionReader | None = None
    version_source: str | None = None
    ready_text: str = "the model listing answers"
    unrecognised: tuple[str, str] | None = None
    error_shapes: tuple[ErrorShape, ...] = ()
    unwrap_message: Callable[[str], str] | None = None
    expected_error_shape: Callable[[str | None], str | None] | None = None
    image_limit_patterns: tuple[re.Pattern[str], ...] = ()
    image_limit_option: str | None = None
    api_paths: PathsProbe | None = None
    paths_report: Callable[[dict[str, bool], str], tuple[str, str]] | None = None

    def raise_image_limit(self, n: int) -> str | None:
        """The server option that accepts `n` images per request, or None."""
        return self.image_limit_option.format(n=n) if self.image_limit_option else None


_REGISTRY: dict[str, BackendProfile] = {}


def register_backend(profile: BackendProfile) -> BackendProfile:
    """Add a kind (the same profile twice is a no-op; another profile under a taken name is refused)."""
    name = profile.kind
    if not name or name == AUTO or name != name.strip().lower() or not name.isidentifier():
        raise ValueError(f"backend kind {name!r} must be a lower-case identifier other than {AUTO!r}")
    known = _REGISTRY.get(name)
    if known is not None and known is not profile:
        raise ValueError(f"backend kind {name!r} is already registered")
    if profile.fallback and any(p.fallback and p is not profile for p in _REGISTRY.values()):
        raise ValueError(f"backend kind {name!r}: another kind is already the fallback")
    _REGISTRY[name] = profile
    return profile


def unregister_backend(kind: str) -> None:
    """Remove a kind added with `register_backend` (a test's or an unloaded plug-in's); unknown: no-op."""
    _REGISTRY.pop(kind, None)


def get_backend(kind: str) -> BackendProfile:
    """The profile of `kind`; a `ConfigError` naming the known kinds when there is none."""
    profile = _REGISTRY.get(str(kind))
    if profile is None:
        raise ConfigError(f"unknown backend kind {kind!r}", hint=f"use one of {', '.join(backend_kinds())}")
    return profile


def backend_kinds() -> tuple[str, ...]:
    """The registered kinds, in registration order (vllm, ovms, sglang, openai, then any added)."""
    return tuple(_REGISTRY)


def kinds_text() -> str:
    """The registered kinds as help texts list them: `vllm, ovms, sglang or openai`."""
    names = backend_kinds()
    return " or ".join(filter(None, [", ".join(names[:-1]), *names[-1:]]))


def backend_profiles() -> tuple[BackendProfile, ...]:
    """The registered profiles, in registration order."""
    return tuple(_REGISTRY.values())


def detection_order() -> tuple[BackendProfile, ...]:
    """The profiles `--kind auto` tries, lowest `detect_order` first (registration order breaks ties)."""
    return tuple(sorted((p for p in _REGISTRY.values() if p.identify), key=lambda p: p.detect_order))


def fallback_backend() -> BackendProfile:
    """The kind of a server no profile recognises (the generic OpenAI-compatible server)."""
    found = next((p for p in _REGISTRY.values() if p.fallback), None)
    if found is None:
        raise ConfigError("no fallback backend kind is registered")
    return found


def error_shapes() -> tuple[ErrorShape, ...]:
    """Every registered error shape, in the order they are tried."""
    return tuple(sorted((s for p in _REGISTRY.values() for s in p.error_shapes), key=lambda s: s.order))


def version_text(value: Any) -> str | None:
    """A server's version as shown and stored: a string or number, one line, at most MAX_VERSION_CHARS."""
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    text = " ".join(str(value).split())
    if not text:
        return None
    return text if len(text) <= MAX_VERSION_CHARS else text[: MAX_VERSION_CHARS - 1] + "…"


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    """'0.10.1rc2' -> (0, 10, 1); None when `text` does not start with a number."""
    match = re.match(r"v?(\d{1,9}(?:\.\d{1,9}){0,7})(?!\d)", (text or "").strip())
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def json_version(path: str, *, require_ok: bool = False) -> VersionReader:
    """A version reader: the `version` field of the JSON object at `path` (of a 200 reply if `require_ok`)."""

    async def read(session: ProbeSession) -> str | None:
        reply = await session.request("GET", path)
        doc = reply.json()
        if require_ok and reply.status != 200:
            return None
        return version_text(doc.get("version")) if isinstance(doc, dict) else None

    return read


async def health_or_missing(session: ProbeSession, path: str) -> bool:
    """True when `path` answers 200; False when it does not exist (404/405, which waiting never changes:
    `session.missing_health` is set); anything else is not ready yet."""
    reply = await session.get(path)
    if reply.status == 200:
        return True
    session.refuse_auth(reply)
    session.refuse_html(reply)
    if reply.status in (404, 405):
        session.missing_health = path
        return False
    raise NotReady(f"{reply.url} answered {reply.status}")


def openai_like(
    kind: str,
    *,
    health: str | None,
    listing: tuple[str, ...],
    chat: tuple[str, ...],
    user_path_listed: bool = False,
    version: VersionReader | None = None,
) -> Resolver:
    """The resolution of an OpenAI-compatible server: readiness from `health` (200; a 404 there means the
    listing stands for readiness, noted), the served models from the first `/models` listing under `listing`
    (and under the user's API path first when `user_path_listed`), the chat path under the user's API path,
    then `chat`; the version from `version`."""

    async def resolve(session: ProbeSession) -> Resolution:
        has_health = await health_or_missing(session, health) if health else True
        user = [session.api_path] if session.api_path else []
        bases = (user if user_path_listed else []) + list(listing)
        model, served, max_len, base = await session.model_and_base(bases, user + list(chat))
        if not has_health:
            session.notes.append(
                f"{session.root}{health} answered 404, so this may not be {kind} "
                f"(--kind auto detects the server); readiness was taken from {listing[0]}/models"
            )
        found = await version(session) if version else None
        return Resolution(model, tuple(served), base, found, max_len)

    return resolve
