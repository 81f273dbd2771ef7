"""Reading a chat-completions body the way the engines do (the checks the simulator emulates)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from vlmparity.sim.config import SimConfig, parse_version
from vlmparity.sim.personality import SimError


@dataclass
class ChatRequest:
    """The parts of a chat request the simulator acts on."""

    texts: list[str] = field(default_factory=list)
    image_urls: list[str] = field(default_factory=list)
    max_tokens: int | None = None
    temperature: float = 1.0  # both engines sample at T=1 when the client omits temperature
    seed: int | None = None
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _image_url(part: dict[str, Any], ovms: bool) -> str:
    value = part.get("image_url")
    if isinstance(value, dict) and isinstance(value.get("url"), str):
        return str(value["url"])
    if isinstance(value, str) and not ovms:  # vLLM also accepts the simple string form
        return value
    raise SimError("invalid_request", "image_url must be an object with a string field url")


def _content(req: ChatRequest, content: Any, ovms: bool, restrict_tag: bool) -> None:
    if content is None:
        return
    if isinstance(content, str):
        req.texts.append(content)
        return
    if not isinstance(content, list):
        raise SimError("invalid_request", "message content must be a string or an array of parts")
    for part in content:
        if not isinstance(part, dict):
            raise SimError("invalid_request", "message content parts must be objects")
        kind = part.get("type")
        if kind == "text":
            if not isinstance(part.get("text"), str):
                raise SimError("invalid_request", "text part must have a string field text")
            req.texts.append(part["text"])
        elif kind == "image_url":
            req.image_urls.append(_image_url(part, ovms))
        elif ovms:
            raise SimError("invalid_request", "Unsupported content type")
        else:
            raise SimError("invalid_request", f"Unknown part type: {kind}")
    if restrict_tag and any("<ov_genai_image_" in t for t in req.texts):
        raise SimError("invalid_request", "Message contains restricted <ov_genai_image> tag")


def _max_tokens(body: dict[str, Any], ovms: bool) -> int | None:
    value: int | None = None
    for key in ("max_tokens", "max_completion_tokens"):  # the second overrides the first on both engines
        raw = body.get(key)
        if raw is None:
            continue
        if not _is_int(raw) or raw < 0:
            raise SimError("invalid_request", f"{key} is not an unsigned integer")
        if raw == 0:
            raise SimError(
                "invalid_request",
                f"{key} value should be greater than 0" if ovms else f"{key} must be at least 1, got 0.",
            )
        value = int(raw)
    return value


def parse_chat(body: dict[str, Any], config: SimConfig) -> ChatRequest:
    """Validate a chat body like the configured engine; raises SimError with its wording."""
    ovms = config.personality == "ovms"
    restrict_tag = ovms and parse_version(config.ovms_version) >= (2026, 0)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise SimError(
            "invalid_request", "Messages missing in request" if ovms else "messages: Field required"
        )
    req = ChatRequest()
    for message in messages:
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise SimError("invalid_request", "every message must be an object with a string role")
        _content(req, message.get("content"), ovms, restrict_tag)
    req.max_tokens = _max_tokens(body, ovms)
    temperature = body.get("temperature")
    if temperature is not None:
        if not _number(temperature):
            raise SimError("invalid_request", "temperature is not a valid number")
        if ovms and not 0.0 <= temperature <= 2.0:
            raise SimError("invalid_request", "temperature out of range(0.0, 2.0)")
        if not ovms and temperature < 0:
            raise SimError("invalid_request", f"temperature must be non-negative, got {temperature}.")
        req.temperature = float(temperature)
    seed = body.get("seed")
    if seed is not None:
        if not _is_int(seed) or (ovms and seed < 0):
            raise SimError(
                "invalid_request", "seed is not an unsigned integer" if ovms else "seed must be an integer"
            )
        req.seed = int(seed)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise SimError("invalid_request", "stream field is not a boolean")
    req.stream = stream
    logprobs = body.get("logprobs", False)
    if logprobs is not None and not isinstance(logprobs, bool):
        raise SimError("invalid_request", "logprobs accepts values true or false")
    req.logprobs = bool(logprobs)
    if ovms and req.logprobs and stream:
        raise SimError("invalid_request", "logprobs are not supported in streaming mode.")
    options = body.get("stream_options")
    if options is not None:
        if not stream and not ovms:
            raise SimError("invalid_request", "Stream options can only be defined when `stream=True`.")
        if isinstance(options, dict):
            # vLLM's StreamOptions defaults include_usage to true once stream_options is given
            req.include_usage = bool(options.get("include_usage", not ovms))
    return req
