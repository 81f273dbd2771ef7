"""Settings of the simulator (one pydantic model) and the loader for its JSON/YAML file.

Besides accuracy, load and faults, a few knobs make the simulator behave like a less well-behaved server
(every default is the well-behaved one):

- `answers.nondeterminism` (0..1, default 0): probability that a temperature-0 request is answered from a
  fresh random draw instead of the deterministic one, like an engine whose numerics depend on the batch.
- `answers.honour_seed` (default true): false ignores the request's `seed` at temperature > 0 (answers are
  drawn from fresh entropy as if no seed was given).
- `usage` (default true): false leaves `usage` out of unary responses and never sends the usage chunk of a
  stream, even when `stream_options.include_usage` asks for it.
- `stream_done` (default true): false ends streams without the closing `data: [DONE]` line.
- `tokens.*`: per-token log-probabilities and the knobs of numeric closeness (noise, BOS offset, a
  server-side max-tokens cap, no logprobs at all); see `sim/tokens.py`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vlmparity.errors import ConfigError

Personality = Literal["vllm", "ovms"]

FAULT_KINDS: tuple[str, ...] = (
    "http_500",
    "http_503",
    "http_429",
    "reset",
    "hang",
    "truncated",
    "non_json",
    "html",
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class StyleWeights(_Strict):
    """Relative weights of the answer styles (normalised; see `answers.py` for how they combine with accuracy)."""

    terse: float = Field(default=0.7, ge=0)
    verbose: float = Field(default=0.2, ge=0)
    unparseable: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _some_parseable(self) -> StyleWeights:
        if self.terse + self.verbose <= 0:
            raise ValueError("at least one of terse/verbose must have a positive weight")
        return self

    def normalised(self) -> tuple[float, float, float]:
        total = self.terse + self.verbose + self.unparseable
        return self.terse / total, self.verbose / total, self.unparseable / total


class AnswerConfig(_Strict):
    """How the simulated model answers: accuracy per group, engine divergence, styles, sampling noise."""

    model_seed: int = 0  # the simulated model: which questions it gets right
    engine_seed: int = 0  # the simulated engine: which answers diverge from the model's reference
    accuracy: float = Field(default=0.8, ge=0, le=1)
    accuracy_by_group: dict[str, float] = Field(default_factory=dict)  # MME category / MMMU subject
    divergence: float = Field(default=0.0, ge=0, le=1)  # share of samples where this engine flips correctness
    styles: StyleWeights = Field(default_factory=lambda: StyleWeights())
    temperature_noise: float = Field(default=0.5, ge=0)  # at T>0: P(answer redrawn) = min(1, T * noise)
    nondeterminism: float = Field(default=0.0, ge=0, le=1)  # at T=0: P(answer redrawn from fresh entropy)
    honour_seed: bool = True  # False: at T>0 a request's `seed` is ignored (fresh entropy instead)

    @model_validator(mode="after")
    def _groups_in_range(self) -> AnswerConfig:
        for group, acc in self.accuracy_by_group.items():
            if not 0 <= acc <= 1:
                raise ValueError(f"accuracy_by_group[{group!r}] must be between 0 and 1, got {acc}")
        return self

    def accuracy_for(self, group: str) -> float:
        """The configured accuracy of one MME category or MMMU subject."""
        return self.accuracy_by_group.get(group, self.accuracy)


class LoadConfig(_Strict):
    """Continuous-batching load model: service time = (base + per_image*images + per_token*tokens) * time_scale."""

    capacity: int = Field(default=8, ge=1)  # concurrent sequences served at once; more requests queue (FIFO)
    base_latency: float = Field(default=0.02, ge=0)
    per_image: float = Field(default=0.01, ge=0)
    per_token: float = Field(default=0.002, ge=0)
    time_scale: float = Field(default=1.0, ge=0)  # 0 = zero-latency mode (no sleeping, no queueing)

    @property
    def zero_latency(self) -> bool:
        return self.time_scale == 0


class FaultConfig(_Strict):
    """Probabilities of injected faults per chat request, drawn reproducibly from `fault_seed`."""

    fault_seed: int = 0
    p_500: float = Field(default=0.0, ge=0, le=1)
    p_503: float = Field(default=0.0, ge=0, le=1)
    p_429: float = Field(default=0.0, ge=0, le=1)
    p_reset: float = Field(default=0.0, ge=0, le=1)  # connection reset before any response byte
    p_hang: float = Field(
        default=0.0, ge=0, le=1
    )  # no answer for `hang_seconds` (longer than the client's timeout)
    p_truncated: float = Field(default=0.0, ge=0, le=1)  # connection closed in the middle of the body
    p_non_json: float = Field(default=0.0, ge=0, le=1)  # 200 with a body that is not JSON
    p_html: float = Field(default=0.0, ge=0, le=1)  # 502 text/html error page, as a proxy would send
    retry_after: int = Field(default=1, ge=0)  # seconds, sent with 429 (and 503) as Retry-After
    hang_seconds: float = Field(default=30.0, ge=0)

    @model_validator(mode="after")
    def _total(self) -> FaultConfig:
        if sum(self.probabilities().values()) > 1 + 1e-9:
            raise ValueError("fault probabilities add up to more than 1")
        return self

    def probabilities(self) -> dict[str, float]:
        """Probability of each fault kind, in the fixed order of `FAULT_KINDS`."""
        return {
            "http_500": self.p_500,
            "http_503": self.p_503,
            "http_429": self.p_429,
            "reset": self.p_reset,
            "hang": self.p_hang,
            "truncated": self.p_truncated,
            "non_json": self.p_non_json,
            "html": self.p_html,
        }


class TokenConfig(_Strict):
    """Per-token log-probabilities and the numeric differences between engines (see `sim/tokens.py`)."""

    logprobs: bool = True  # answer `logprobs: true` with one log-probability per token
    numeric_noise: float = Field(default=0.0, ge=0, le=10)  # σ of the perturbation of every logit gap
    noise_seed: int = 0
    bos_offset: int = Field(default=0, ge=-8, le=8)  # added to usage.prompt_tokens
    max_tokens_cap: int | None = Field(default=None, ge=1)  # server-side limit on generated tokens


class SimConfig(_Strict):
    """Everything the simulator does; every field has a default so `SimConfig()` is a working vLLM sim."""

    personality: Personality = "vllm"
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)  # 0 = any free port (read it back from `SimServer.url`)
    model: str = "llava-hf/llava-1.5-7b-hf"  # the served model name
    data: list[Path] = Field(default_factory=list)  # local parquet folders/files (MME test, MMMU validation)
    startup_delay: float = Field(default=0.0, ge=0)  # seconds during which the server is up but not ready
    tokens_per_image: int = Field(default=576, ge=0)  # llava-1.5: 24x24 patches
    max_model_len: int = Field(default=4096, ge=1)
    # vLLM personality
    vllm_version: str = "0.11.0"
    vllm_error_format: Literal["auto", "nested", "flat"] = "auto"  # auto: flat before 0.10.1
    image_limit: int | None = Field(default=1, ge=0)  # vLLM --limit-mm-per-prompt image=N; None = unlimited
    # A deterministic fraction of the requests with 2 or more images (chosen by a hash of the prompt text)
    # refused with vLLM's "At most 1 image(s)" 400, whatever `image_limit` says: replicas behind a load
    # balancer with different limits. The same request is always refused (a retry does not help).
    multi_image_reject: float = Field(default=0.0, ge=0.0, le=1.0)
    # OVMS personality
    ovms_version: str = "2025.4"
    ovms_node_name: str = "LLMExecutor"  # the graph node named in MediaPipe-wrapped errors
    # response shape (both engines send these; False imitates servers that do not)
    usage: bool = True  # `usage` in unary responses and the usage chunk of streams that ask for it
    stream_done: bool = True  # the closing `data: [DONE]` line of a stream
    answers: AnswerConfig = Field(default_factory=lambda: AnswerConfig())
    load: LoadConfig = Field(default_factory=lambda: LoadConfig())
    faults: FaultConfig = Field(default_factory=lambda: FaultConfig())
    tokens: TokenConfig = Field(default_factory=lambda: TokenConfig())
    log_file: Path | None = None  # append one JSON line per request

    @model_validator(mode="after")
    def _versions(self) -> SimConfig:
        parse_version(self.vllm_version)
        parse_version(self.ovms_version)
        return self

    def vllm_flat_errors(self) -> bool:
        """True when errors use vLLM's pre-0.10.1 flat shape."""
        if self.vllm_error_format != "auto":
            return self.vllm_error_format == "flat"
        return parse_version(self.vllm_version) < (0, 10, 1)


def parse_version(text: str) -> tuple[int, ...]:
    """'2025.4' -> (2025, 4); '0.10.1rc2' -> (0, 10, 1)."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        digits = ""
        for ch in piece:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        parts.append(int(digits))
    if not parts:
        raise ValueError(f"not a version number: {text!r}")
    return tuple(parts)


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "(top level)"
    more = f" (and {err.error_count() - 1} more problems)" if err.error_count() > 1 else ""
    return f"{where}: {first['msg']}{more}"


def config_from_dict(data: Any, *, source: str = "sim config") -> SimConfig:
    """Validate a mapping into a `SimConfig`, raising `ConfigError` with one line on failure."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source} must be a mapping of settings, got {type(data).__name__}")
    try:
        return SimConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(
            f"{source} is invalid: {_describe(err)}", hint="see `vlmparity sim --help` for the fields"
        ) from None


def load_config(path: str | Path) -> SimConfig:
    """Read a JSON or YAML sim config file."""
    file = Path(path)
    if not file.is_file():
        raise ConfigError(f"sim config file {str(file)!r} does not exist")
    text = file.read_text(encoding="utf-8", errors="replace")
    try:
        data = json.loads(text) if file.suffix.lower() == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        reason = " ".join(str(err).split())
        raise ConfigError(
            f"sim config file {str(file)!r} is not valid {'JSON' if file.suffix.lower() == '.json' else 'YAML'}: {reason}"
        ) from None
    if data is None:
        data = {}
    return config_from_dict(data, source=f"sim config file {str(file)!r}")
