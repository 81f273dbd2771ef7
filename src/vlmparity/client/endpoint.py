"""What the user says about an endpoint (`EndpointSpec`) and what probing found (`ResolvedEndpoint`).

`EndpointSpec(name, url, model, api_key, kind)` (defined in `vlmparity.backends.endpoint`, the one model of
an endpoint; `config.EndpointConfig` is the run's validated view of it) takes the base URL as the user gives
it (`http://host:port`, `.../v1`, `.../v3`, even `.../v1/chat/completions`). The API key is a pydantic
`SecretStr`: it never appears in repr, str, JSON dumps or logs. `spec_from_env()` builds a spec from
`OPENAI_API_BASE` / `OPENAI_API_KEY` as lmms-eval does, `effective_api_key(spec)` falls back on
`OPENAI_API_KEY`. `split_url` separates the server root from an explicit API base path.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from dataclasses import dataclass, field

from pydantic import SecretStr

from vlmparity import masking
from vlmparity.backends import AUTO
from vlmparity.backends import BackendKind as BackendKind  # the client's face of the endpoint model
from vlmparity.backends import EndpointSpec as EndpointSpec
from vlmparity.errors import ConfigError

API_KEY_ENV = "OPENAI_API_KEY"
API_BASE_ENV = "OPENAI_API_BASE"


def effective_api_key(spec: EndpointSpec) -> SecretStr | None:
    """The spec's key, else `OPENAI_API_KEY` from the environment (as lmms-eval does)."""
    if spec.api_key is not None and spec.api_key.get_secret_value():
        return spec.api_key
    env = os.environ.get(API_KEY_ENV)
    masking.remember(env)
    return SecretStr(env) if env else None


def spec_from_env(*, name: str | None = None, model: str | None = None, kind: str = AUTO) -> EndpointSpec:
    """A spec from `OPENAI_API_BASE` (+ `OPENAI_API_KEY`), for a single endpoint as lmms-eval reads it."""
    base = os.environ.get(API_BASE_ENV)
    if not base:
        raise ConfigError(
            "no endpoint given", hint=f"pass --endpoint URL or set {API_BASE_ENV}=http://host:port/v1"
        )
    key = os.environ.get(API_KEY_ENV)
    checked = BackendKind(kind)
    try:
        return EndpointSpec(
            url=base, name=name, model=model, api_key=SecretStr(key) if key else None, kind=checked
        )
    except ValueError as err:
        raise ConfigError(
            f"{API_BASE_ENV} is not a URL: {masking.mask_url(base)!r}", hint="use http://host:port/v1"
        ) from err


# OVMS also routes /v3/v1/...: the API base is then /v3.
_API_SUFFIX_RE = re.compile(r"(/v[13])(?:/v1)?(/chat/completions|/completions|/models)?$")


def split_url(url: str) -> tuple[str, str | None]:
    """(root, api_path): `http://h:8000/v3/chat/completions` → (`http://h:8000`, `/v3`).

    `api_path` is None when the URL names no API version; a path prefix before it (a reverse proxy
    mount) stays in the root.
    """
    url = url.rstrip("/")
    parsed = urllib.parse.urlsplit(url)
    path = parsed.path
    match = _API_SUFFIX_RE.search(path)
    if match:
        root_path = path[: match.start()]
        api_path: str | None = match.group(1)
    else:
        if path.endswith("/chat/completions"):
            path = path[: -len("/chat/completions")]
        root_path, api_path = path, None
    root = urllib.parse.urlunsplit((parsed.scheme, parsed.netloc, root_path, "", "")).rstrip("/")
    return root, api_path


@dataclass(frozen=True)
class ResolvedEndpoint:
    """A probed, ready endpoint: detected backend, chat URL and the model to send."""

    name: str
    kind: BackendKind
    url: str  # as the user gave it
    root_url: str  # scheme://host:port[/prefix]
    api_base: str  # e.g. http://host:8000/v3
    chat_url: str
    model: str
    served_models: tuple[str, ...] = ()
    server_version: str | None = None
    max_model_len: int | None = None
    notes: tuple[str, ...] = ()  # what the probe decided and why (e.g. "/v1 needs OVMS >= 2026.3")
    api_key: SecretStr | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kind, BackendKind):  # a plain name: checked against the registry
            object.__setattr__(self, "kind", BackendKind(self.kind))

    def headers(self) -> dict[str, str]:
        """Request headers: JSON content type (OVMS routes on it) and the bearer key if any."""
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self.api_key is not None:
            headers["Authorization"] = f"Bearer {self.api_key.get_secret_value()}"
        return headers

    def secrets(self) -> tuple[str, ...]:
        """What must never be shown of this endpoint: its key and the secrets in its URL."""
        key = self.api_key.get_secret_value() if self.api_key is not None else None
        return tuple(s for s in (key, *masking.url_secrets(self.url)) if s)

    def describe(self) -> str:
        """One line for logs and reports (never the key, URL credentials masked)."""
        version = f" {self.server_version}" if self.server_version else ""
        return f"{self.name}: {self.kind.value}{version} at {masking.mask_url(self.chat_url)}, model {self.model!r}"
