"""Typed settings of a run (pydantic): endpoints, generation, sampling plan, run options.

Pure data and parsing: nothing here reads files, the environment or the network (the CLI does, and
passes what it found in). Secrets live in `SecretStr` fields that never serialise.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import pydantic.dataclasses
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from vlmparity import masking
from vlmparity.backends import AUTO, BackendKind, EndpointSpec, backend_kinds
from vlmparity.errors import ConfigError
from vlmparity.tasks.base import GenerationParams, task_names

MultiImagePolicy = Literal["error", "skip", "merge"]
ImageFormat = Literal["png", "jpeg"]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_MAX_INT = 2**63 - 1
_TASK_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EndpointConfig(EndpointSpec):
    """One endpoint of a run: the endpoint model (`backends.EndpointSpec`) as a run configures it, with a name
    (used for output folders and comparisons) and its URL as given (what the store keeps; the client's spec
    is made from it when the run resolves the endpoint: `spec()`)."""

    name: str
    api_key: SecretStr | None = Field(default=None, exclude=True, repr=False)

    @field_validator("kind", mode="before")
    @classmethod
    def _check_kind(cls, v: object) -> object:
        if isinstance(v, str) and v != AUTO and v not in backend_kinds():
            raise ValueError(f"unknown kind {v!r} (choose one of {', '.join(kind_choices())})")
        return v

    @field_validator("name")
    @classmethod
    def _check_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"endpoint name {v!r} must be letters, digits, '.', '_' or '-' (at most 64)")
        return v

    @field_validator("url")
    @classmethod
    def _check_url(cls, v: str) -> str:
        masking.remember_url(v)  # its password or token is never printed nor written
        try:
            parts = urlsplit(v)
            parts.port  # noqa: B018 -- raises ValueError for a port out of range or not a number
        except ValueError as exc:
            raise ValueError(f"endpoint URL {mask_url(v)!r} is not a valid URL ({exc})") from None
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"endpoint URL {mask_url(v)!r} must look like http://HOST:PORT[/v1]")
        return v.rstrip("/")

    def spec(self) -> EndpointSpec:
        """The client's spec of this endpoint (its URL normalised as the client reads one)."""
        return EndpointSpec(**dict(self))

    def public(self) -> dict[str, Any]:
        """What may be written to disk: no API key, URL credentials masked."""
        return {
            "name": self.name,
            "url": mask_url(self.url),
            "model": self.model,
            "kind": self.kind.value,
            "api_key": "***" if self.api_key is not None else None,
        }


@pydantic.dataclasses.dataclass(frozen=True, config=ConfigDict(extra="forbid"))
class GenerationConfig(GenerationParams):
    """The run's generation parameters: `tasks.base.GenerationParams` (its fields and defaults), validated.

    `logprobs` None: decided per run (on when every endpoint returns log-probabilities and the run does not
    stream, or as the store already holds it); True/False: --logprobs / --no-logprobs."""

    @model_validator(mode="after")
    def _logprobs_not_streamed(self) -> GenerationConfig:
        if self.stream and self.logprobs:
            raise ValueError(
                "--logprobs cannot be combined with --stream: OVMS returns no log-probabilities when streaming"
            )
        return self

    def public(self) -> dict[str, Any]:
        """The parameters by name, in field order (as written to run.json and the store)."""
        return dataclasses.asdict(self)


class SamplingPlan(_Model):
    """Which samples: all, lmms-eval's `--limit` (first N / a fraction), or a seeded stratified sample."""

    limit: float | None = None
    sample: int | None = None
    seed: int = 0

    @model_validator(mode="after")
    def _one_mode(self) -> SamplingPlan:
        if self.limit is not None and self.sample is not None:
            raise ValueError("--limit and --sample cannot be combined: choose first-N or a stratified sample")
        if self.limit is not None and not (math.isfinite(self.limit) and self.limit > 0):
            # 0 would run nothing and print empty tables (like --sample 0, refused)
            raise ValueError("--limit must be a number > 0 (a count, or a fraction below 1)")
        if self.sample is not None and self.sample <= 0:
            raise ValueError("--sample must be > 0")
        # the plan is stored as JSON, whose integers (SQLite's too) stop at 64 bits
        if self.sample is not None and self.sample > _MAX_INT:
            raise ValueError(f"--sample must be at most {_MAX_INT}")
        if not -_MAX_INT <= self.seed <= _MAX_INT:
            raise ValueError(f"--seed must be between {-_MAX_INT} and {_MAX_INT}")
        return self

    @property
    def mode(self) -> str:
        if self.sample is not None:
            return "sample"
        return "all" if self.limit is None else "limit"


class RunOptions(_Model):
    """How to run: where to write, how hard to push the endpoints, what to do about failures."""

    output_path: Path
    concurrency: int | Literal["auto"] = "auto"
    timeout: float = 600.0  # per attempt, seconds (the openai SDK's default, which lmms-eval inherits)
    max_retries: int = 5  # attempts after the first, transient failures only; N of lmms-eval's failure text
    image_format: ImageFormat = "png"
    # zlib level of the PNG images: lossless at every level (the same pixels); lower is faster to
    # encode and decode and gives bigger bodies; 6 gives lmms-eval's exact bytes (Pillow's default).
    png_level: int = 1
    multi_image: MultiImagePolicy = "error"
    max_images: int | None = None
    rerun_errors: bool = False
    log_samples: bool = False
    ready_timeout: float = 60.0
    score_seed: int = 0  # lmms-eval seeds MMMU's random fallback with 0
    # How openai-python renders an HTTP error in the lmms-eval policy's failure text (tasks/failure_text.py):
    # "message" (openai-python >= 3.51) or "body" (older releases: the whole parsed body).
    openai_error_style: Literal["message", "body"] = "message"
    # Resume an endpoint whose server identity (kind, version, served model, URL) differs from the stored one.
    allow_identity_change: bool = False

    @field_validator("concurrency")
    @classmethod
    def _check_concurrency(cls, v: int | str) -> int | str:
        if isinstance(v, int) and not 1 <= v <= _MAX_INT:
            raise ValueError(f"--concurrency must be between 1 and {_MAX_INT}, or 'auto'")
        return v

    @field_validator("png_level")
    @classmethod
    def _check_png_level(cls, v: int) -> int:
        if not 0 <= v <= 9:
            raise ValueError("--png-level must be between 0 and 9")
        return v

    @field_validator("max_images")
    @classmethod
    def _check_max_images(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("--max-images must be >= 1")
        return v

    @field_validator("timeout")
    @classmethod
    def _check_timeout(cls, v: float) -> float:
        # 0 or less would fail every request at once (each recorded as a timeout) rather than the command
        if not (math.isfinite(v) and v > 0):
            raise ValueError("--timeout must be a number of seconds > 0")
        return v

    @field_validator("ready_timeout")
    @classmethod
    def _check_ready_timeout(cls, v: float) -> float:
        if not (math.isfinite(v) and v >= 0):
            raise ValueError("--ready-timeout must be a number of seconds >= 0")
        return v

    @field_validator("max_retries")
    @classmethod
    def _check_max_retries(cls, v: int) -> int:
        if v < 0:
            raise ValueError("--max-retries must be >= 0")
        return v


class RunConfig(_Model):
    """Everything one `vlmparity run` needs."""

    endpoints: tuple[EndpointConfig, ...]
    tasks: tuple[str, ...]
    data: Mapping[str, str] = Field(default_factory=dict)  # task -> source (hub id or local folder)
    generation: GenerationConfig = GenerationConfig()
    plan: SamplingPlan = SamplingPlan()
    options: RunOptions

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        if not self.endpoints:
            raise ValueError("no endpoint: pass --endpoint NAME=URL (or set OPENAI_API_BASE)")
        names = [e.name for e in self.endpoints]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"endpoint name(s) used twice: {', '.join(dupes)}")
        if not self.tasks:
            raise ValueError("no task: pass --tasks mme,mmmu_val")
        unknown = sorted(set(self.data) - set(self.tasks))
        if unknown:
            raise ValueError(f"--data given for task(s) not in --tasks: {', '.join(unknown)}")
        return self

    def public(self) -> dict[str, Any]:
        """The configuration as written to run.json and the store (secrets masked)."""
        return {
            "endpoints": [e.public() for e in self.endpoints],
            "tasks": list(self.tasks),
            "data": dict(self.data),
            "generation": self.generation.public(),
            "plan": self.plan.model_dump() | {"mode": self.plan.mode},
            "options": self.options.model_dump(mode="json"),
        }


# ----- parsing helpers (pure) ---------------------------------------------------------------------------


def mask_url(url: str) -> str:
    """The URL with its credentials masked (user info, secret-named query parameters): `masking.mask_url`."""
    return masking.mask_url(url)


def default_endpoint_name(url: str) -> str:
    """A name for an endpoint given without one: its host and port."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a malformed URL: the endpoint's own validation names the problem
        return "endpoint"
    name = f"{parts.hostname or 'endpoint'}_{port}" if port else (parts.hostname or "endpoint")
    return re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64]


def kind_choices() -> tuple[str, ...]:
    """What `--kind` accepts: `auto`, then every registered backend kind."""
    return (AUTO, *backend_kinds())


def parse_endpoints(
    specs: Sequence[str],
    *,
    models: Sequence[str] = (),
    kinds: Sequence[str] = (),
    api_key: str | None = None,
    default_base: str | None = None,
) -> tuple[EndpointConfig, ...]:
    """Parse `--endpoint [NAME=]URL`, `--model [NAME=]MODEL` and `--kind [NAME=]KIND` options.

    A `--model`/`--kind` without `NAME=` applies to every endpoint; `default_base` (OPENAI_API_BASE) is
    used when no endpoint is given.
    """
    pairs: list[tuple[str, str]] = []
    given = list(specs) or ([default_base] if default_base else [])
    for spec in given:
        name, sep, url = spec.partition("=")
        if not sep or "://" in name:  # "http://h:1/v1" or "http://h/?a=b": no name given
            name, url = default_endpoint_name(spec), spec
        pairs.append((name.strip(), url.strip()))
    names = [n for n, _ in pairs]
    model_for = _assignments(models, names, "--model")
    kind_for = _assignments(kinds, names, "--kind")
    for name, kind in kind_for.items():
        if kind not in kind_choices():
            raise ConfigError(
                f"unknown --kind {kind!r} for {name!r}", hint=f"choose one of {', '.join(kind_choices())}"
            )
    out = []
    for name, url in pairs:
        try:
            out.append(
                EndpointConfig(
                    name=name,
                    url=url,
                    model=model_for.get(name),
                    kind=BackendKind(kind_for.get(name, AUTO)),
                    api_key=SecretStr(api_key) if api_key else None,
                )
            )
        except ValueError as exc:
            raise ConfigError(_first_error(exc), hint="--endpoint NAME=http://HOST:PORT/v1") from None
    return tuple(out)


def _assignments(values: Iterable[str], names: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    shared: str | None = None
    for value in values:
        key, sep, rest = value.partition("=")
        if not sep:
            shared = value
        elif key not in names:
            raise ConfigError(
                f"{option} {value!r} names no endpoint", hint=f"endpoints are: {', '.join(names)}"
            )
        elif not rest:
            raise ConfigError(f"{option} {value!r} gives no value")
        else:
            out[key] = rest
    if shared is not None:  # a bare value applies to every endpoint without its own
        for name in names:
            out.setdefault(name, shared)
    return out


def parse_task_data(values: Sequence[str], tasks: Sequence[str]) -> dict[str, str]:
    """Parse `--data TASK=SOURCE` (or a bare SOURCE when there is exactly one task)."""
    out: dict[str, str] = {}
    for value in values:
        key, sep, rest = value.partition("=")
        if sep and key in tasks:
            out[key] = rest
        elif sep and key in task_names():  # not a source with "=" in it: data for a task not asked for
            raise ConfigError(
                f"--data {value!r} is for task {key!r}, which is not in --tasks",
                hint=f"add {key} to --tasks or drop that --data",
            )
        elif sep and _TASK_KEY.match(key):
            # `mmmu=DIR`: a task key nobody knows (a path or hub id has "/" or "." before any "=")
            raise ConfigError(
                f"--data {value!r}: unknown task {key!r}",
                hint=f"known tasks: {', '.join(task_names())} (--data TASK=SOURCE)",
            )
        elif len(tasks) == 1:
            out[tasks[0]] = value
        else:
            raise ConfigError(
                f"--data {value!r} names no task", hint=f"use TASK=SOURCE with TASK in {list(tasks)}"
            )
    return out


_SECRET_OPTIONS = ("--api-key", "--api_key", "--token")


def mask_argv(argv: Sequence[str], secrets: Iterable[str] = ()) -> list[str]:
    """The command line with API keys, URL passwords and any known secret value replaced by ***."""
    secrets = [s for s in secrets if s]
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        opt, sep, _ = arg.partition("=")
        if opt in _SECRET_OPTIONS:
            if sep:
                out.append(f"{opt}=***")
            else:
                out.append(arg)
                hide_next = True
            continue
        masked = masking.mask_urls(arg)
        for secret in secrets:
            masked = masked.replace(secret, "***")
        out.append(masked)
    return out


def _first_error(exc: ValueError) -> str:
    errors = getattr(exc, "errors", None)
    if callable(errors):
        try:
            first = errors()[0]
            msg = str(first.get("msg", exc)).removeprefix("Value error, ")
            # pydantic's own messages ("Input should be 'error', 'skip' or 'merge'") do not say which
            # option they are about; ours do (they start with the option or the thing named)
            fields = [p for p in first.get("loc", ()) if isinstance(p, str)]
            if fields and not first.get("type", "").startswith("value_error"):
                return f"--{fields[-1].replace('_', '-')}: {msg}"
            return msg
        except (IndexError, TypeError):
            pass
    return str(exc)


def validation_message(exc: ValueError) -> str:
    """One line from a pydantic validation error (for ConfigError)."""
    return _first_error(exc)
