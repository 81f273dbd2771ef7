"""The one model of an endpoint as configured (`EndpointSpec`) and of its kind (`BackendKind`).

The client resolves an `EndpointSpec`; a run's configuration (`config.EndpointConfig`) is a validated view of
the same model (a name required, the URL kept as given for the store). Pure data: the environment is read by
the client (`client.endpoint.spec_from_env`, `effective_api_key`).
"""

from __future__ import annotations

import urllib.parse
from typing import Any

from pydantic import BaseModel, ConfigDict, GetCoreSchemaHandler, SecretStr, field_validator
from pydantic_core import core_schema

from vlmparity import masking
from vlmparity.backends.base import AUTO, backend_kinds


class BackendKind(str):
    """The serving engine behind an endpoint: a kind registered in `vlmparity.backends` (vllm, ovms, sglang,
    openai, or one added with `register_backend`), or `auto` (detect it). A `str`, checked when made:
    `BackendKind("tgi")` raises ValueError while no profile of that kind is registered."""

    __slots__ = ()

    def __new__(cls, name: object) -> BackendKind:
        text = str(name)
        if text != AUTO and text not in backend_kinds():
            raise ValueError(
                f"unknown backend kind {text!r} (use one of {', '.join((AUTO, *backend_kinds()))})"
            )
        return super().__new__(cls, text)

    @property
    def value(self) -> str:
        """The kind's name (as the enum it replaces spelled it)."""
        return str.__str__(self)

    @property
    def auto(self) -> bool:
        """True when the kind is to be detected."""
        return self.value == AUTO

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(), serialization=core_schema.to_string_ser_schema()
        )


class EndpointSpec(BaseModel):
    """One endpoint as configured: base URL, optional model name, optional API key, backend kind."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str | None = None
    url: str
    model: str | None = None
    kind: BackendKind = BackendKind(AUTO)
    api_key: SecretStr | None = None

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        masking.remember_url(value)  # its password or token is never printed nor written
        value = value.strip()
        if "%" in value:  # lmms-eval URL-decodes OPENAI_API_BASE; do the same for any URL
            value = urllib.parse.unquote(value)
        value = value.rstrip("/")
        masking.remember_url(value)
        parsed = urllib.parse.urlsplit(value)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"endpoint URL must look like http://host:port, got {masking.mask_url(value)!r}")
        return value

    @field_validator("api_key")
    @classmethod
    def _remember_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            masking.remember(value.get_secret_value())
        return value

    @property
    def display_name(self) -> str:
        """`name`, else host:port of the URL (never its user info)."""
        return self.name or urllib.parse.urlsplit(self.url).netloc.rpartition("@")[2]
