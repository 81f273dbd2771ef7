"""What differs between the simulated engines: paths, error bodies and status codes, response shapes.

Wording and codes follow /work/shared/research/servers.md (vLLM: nested `{"error": {...}}` since 0.10.1,
flat before; OVMS: flat `{"error": "<string>"}`, 412 for bad JSON, 404 for unknown graphs, 400 with a
MediaPipe-wrapped message for request errors; no `id` on OVMS unary responses).
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import unquote

import orjson
from aiohttp import web

from vlmparity.sim.config import SimConfig, parse_version


@dataclass(eq=False)
class SimError(Exception):
    """An error the simulated engine answers with; the personality turns `kind` into its own wording."""

    kind: str  # invalid_json | not_object | missing_model | unknown_model | invalid_request | too_many_images
    #            | image | not_ready | prompt_too_long | bad_content_type | unsupported_endpoint | not_found
    detail: str = ""
    param: str | None = None
    image_kind: str = ""  # for kind == "image": bad_base64 | undecodable | remote_url | local_path

    def __str__(self) -> str:
        return f"{self.kind}: {self.detail}"


class Status(Protocol):
    """What route handlers need to know about the running server."""

    config: SimConfig
    started_at: float

    def is_ready(self) -> bool: ...


HTML_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n"
)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body), status=status, content_type="application/json", headers=headers
    )


def usage_dict(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


class Personality:
    """Shared behaviour; subclasses fill in the engine-specific parts."""

    name = ""
    api_prefix = ""

    def __init__(self, config: SimConfig) -> None:
        self.config = config

    def chat_paths(self) -> list[str]:
        raise NotImplementedError

    def error_parts(self, err: SimError) -> tuple[int, str, str]:
        """(HTTP status, message, error type) for an error."""
        raise NotImplementedError

    def error_body(self, status: int, message: str, err_type: str, param: str | None) -> Any:
        raise NotImplementedError

    def error(self, err: SimError) -> web.Response:
        status, message, err_type = self.error_parts(err)
        return json_response(self.error_body(status, message, err_type, err.param), status)

    def fault_response(self, kind: str) -> web.Response:
        """The response of an injected HTTP-level fault (500, 503, 429 or an HTML page)."""
        retry = {"Retry-After": str(self.config.faults.retry_after)}
        if kind == "html":
            return web.Response(text=HTML_PAGE, status=502, content_type="text/html")
        if kind == "http_429":
            body = self.error_body(429, "Too many requests, please retry later", "RateLimitError", None)
            return json_response(body, 429, retry)
        if kind == "http_503":
            body = self.error_body(503, "Service temporarily unavailable", "ServiceUnavailableError", None)
            return json_response(body, 503, retry)
        body = self.error_body(500, "Internal server error", "InternalServerError", None)
        return json_response(body, 500)

    def message_error(self, message: str) -> SimError:
        return SimError("invalid_request", message)

    def completion(self, model: str, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
        raise NotImplementedError

    def chunk(self, stream_id: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        raise NotImplementedError

    def first_delta(self) -> dict[str, Any]:
        raise NotImplementedError

    def usage_chunk(self, stream_id: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
        raise NotImplementedError

    def add_routes(self, app: web.Application, status: Status) -> None:
        raise NotImplementedError

    def not_found(self, path: str) -> web.Response:
        raise NotImplementedError


class VllmPersonality(Personality):
    name = "vllm"
    api_prefix = "/v1"

    def chat_paths(self) -> list[str]:
        return ["/v1/chat/completions"]

    def error_parts(self, err: SimError) -> tuple[int, str, str]:
        bad = "BadRequestError"
        if err.kind == "unknown_model":
            return 404, f"The model `{err.detail}` does not exist.", "NotFoundError"
        if err.kind == "too_many_images":
            return 400, f"At most {err.detail} image(s) may be provided in one prompt.", bad
        if err.kind == "image":
            return 400, f"Failed to load image: {err.detail}", bad
        if err.kind == "not_ready":
            return 503, "The server is starting up: the model is not loaded yet.", "ServiceUnavailableError"
        if err.kind == "prompt_too_long":
            return (
                400,
                f"This model's maximum context length is {self.config.max_model_len} tokens. However, your "
                f"request has {err.detail} input tokens. Please reduce the length of the input messages.",
                bad,
            )
        if err.kind == "invalid_json":
            return 400, f"JSON decode error: {err.detail}", bad
        if err.kind == "not_found":
            return 404, "Not Found", "NotFoundError"
        return 400, err.detail or "Bad request", bad

    def error_body(self, status: int, message: str, err_type: str, param: str | None) -> Any:
        if self.config.vllm_flat_errors():
            return {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
        return {"error": {"message": message, "type": err_type, "param": param, "code": status}}

    def completion(self, model: str, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": text,
                        "refusal": None,
                        "annotations": None,
                        "audio": None,
                        "function_call": None,
                        "tool_calls": [],
                        "reasoning_content": None,
                    },
                    "logprobs": None,
                    "finish_reason": finish,
                    "stop_reason": None,
                }
            ],
            "service_tier": None,
            "system_fingerprint": None,
            "usage": {**usage, "prompt_tokens_details": None},
            "prompt_logprobs": None,
            "kv_transfer_params": None,
        }

    def first_delta(self) -> dict[str, Any]:
        return {"role": "assistant", "content": ""}

    def chunk(self, stream_id: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "id": stream_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": finish,
                    **({"stop_reason": None} if finish else {}),
                }
            ],
        }

    def usage_chunk(self, stream_id: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "id": stream_id,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [],
            "usage": usage,
        }

    def not_found(self, path: str) -> web.Response:
        return json_response({"detail": "Not Found"}, 404)

    def add_routes(self, app: web.Application, status: Status) -> None:
        cfg = self.config

        async def health(_: web.Request) -> web.Response:
            return web.Response(status=200 if status.is_ready() else 503)

        async def version(_: web.Request) -> web.Response:
            return json_response({"version": cfg.vllm_version})

        async def models(_: web.Request) -> web.Response:
            if not status.is_ready():
                return self.error(SimError("not_ready"))
            created = int(status.started_at)
            card = {
                "id": cfg.model,
                "object": "model",
                "created": created,
                "owned_by": "vllm",
                "root": cfg.model,
                "parent": None,
                "max_model_len": cfg.max_model_len,
                "permission": [
                    {
                        "id": f"modelperm-{uuid.uuid5(uuid.NAMESPACE_URL, cfg.model).hex}",
                        "object": "model_permission",
                        "created": created,
                        "allow_create_engine": False,
                        "allow_sampling": True,
                        "allow_logprobs": True,
                        "allow_search_indices": False,
                        "allow_view": True,
                        "allow_fine_tuning": False,
                        "organization": "*",
                        "group": None,
                        "is_blocking": False,
                    }
                ],
            }
            return json_response({"object": "list", "data": [card]})

        app.router.add_get("/health", health)
        app.router.add_get("/version", version)
        app.router.add_get("/v1/models", models)


class OvmsPersonality(Personality):
    name = "ovms"
    api_prefix = "/v3"

    def __init__(self, config: SimConfig) -> None:
        super().__init__(config)
        self.version = parse_version(config.ovms_version)

    def chat_paths(self) -> list[str]:
        paths = ["/v3/chat/completions", "/v3/v1/chat/completions"]
        if self.version >= (2026, 3):
            paths.append("/v1/chat/completions")
        return paths

    def _wrapped(self, message: str) -> str:
        return (
            "Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \n"
            f'Calculator::Process() for node "{self.config.ovms_node_name}" failed: {message}'
        )

    def error_parts(self, err: SimError) -> tuple[int, str, str]:
        if err.kind == "invalid_json":
            return 412, "The file is not valid json - Cannot parse JSON body", ""
        if err.kind == "not_object":
            return 412, "The file is not valid json - JSON body must be an object", ""
        if err.kind == "missing_model":
            return 412, "The file is not valid json - model field is missing in JSON body", ""
        if err.kind in ("unknown_model", "bad_content_type", "not_found"):
            return 404, "Mediapipe graph definition with requested name is not found", ""
        if err.kind == "not_ready":
            return 500, "Mediapipe is not loaded yet", ""
        if err.kind == "image":
            return 400, self._wrapped(self._image_message(err.image_kind)), ""
        if err.kind == "unsupported_endpoint":
            return (
                400,
                self._wrapped(
                    "VLM Servable does not support the /completions endpoint. Use /chat/completions or /responses."
                ),
                "",
            )
        return 400, self._wrapped(err.detail or "Invalid request"), ""

    def _image_message(self, image_kind: str) -> str:
        if image_kind == "bad_base64":
            return "Invalid base64 string in request"
        if image_kind == "remote_url":
            if self.version >= (2026, 0):
                return "Given url does not match any allowed domain from allowed_media_domains"
            return "Image downloading failed"
        if image_kind == "local_path":
            return "Loading images from local filesystem is disabled."
        return "Image parsing failed"

    def error_body(self, status: int, message: str, err_type: str, param: str | None) -> Any:
        return {"error": message}

    def fault_response(self, kind: str) -> web.Response:
        if kind in ("http_500", "http_503", "http_429"):
            code = int(kind[-3:])
            text = {500: "Internal server error", 503: "Service Unavailable", 429: "Too Many Requests"}[code]
            headers = {"Retry-After": str(self.config.faults.retry_after)} if code != 500 else None
            return json_response({"error": text}, code, headers)
        return super().fault_response(kind)

    def completion(self, model: str, text: str, finish: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "choices": [
                {
                    "finish_reason": finish,
                    "index": 0,
                    "logprobs": None,
                    "message": {"content": text, "role": "assistant"},
                }
            ],
            "created": int(time.time()),
            "model": model,
            "object": "chat.completion",
            "usage": usage,
        }

    def first_delta(self) -> dict[str, Any]:
        return {"role": "assistant", "content": None}

    def chunk(self, stream_id: str, model: str, delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
        return {
            "choices": [{"delta": delta, "finish_reason": finish, "index": 0, "logprobs": None}],
            "created": int(time.time()),
            "model": model,
            "object": "chat.completion.chunk",
        }

    def usage_chunk(self, stream_id: str, model: str, usage: dict[str, int]) -> dict[str, Any]:
        return {
            "choices": [],
            "created": int(time.time()),
            "model": model,
            "object": "chat.completion.chunk",
            "usage": usage,
        }

    def not_found(self, path: str) -> web.Response:
        return json_response({"error": "Mediapipe graph definition with requested name is not found"}, 404)

    def add_routes(self, app: web.Application, status: Status) -> None:
        cfg = self.config

        async def live(_: web.Request) -> web.Response:
            return json_response({})

        async def ready(_: web.Request) -> web.Response:
            if status.is_ready():
                return json_response({})
            return json_response({"error": "Server is not ready"}, 503)

        async def model_ready(request: web.Request) -> web.Response:
            if unquote(request.match_info["name"]) != cfg.model:
                return json_response({"error": "Model with requested name is not found"}, 404)
            if not status.is_ready():
                return json_response({"error": "Model with requested version is not loaded yet"}, 404)
            return json_response({})

        async def config_status(_: web.Request) -> web.Response:
            ok = status.is_ready()
            entry = {
                "version": "1",
                "state": "AVAILABLE" if ok else "LOADING",
                "status": {"error_code": "OK", "error_message": "OK"},
            }
            return json_response({cfg.model: {"model_version_status": [entry]}})

        async def models(_: web.Request) -> web.Response:
            card = {"id": cfg.model, "object": "model", "created": int(time.time()), "owned_by": "OVMS"}
            return json_response({"data": [card] if status.is_ready() else [], "object": "list"})

        async def completions(request: web.Request) -> web.Response:
            return self.error(SimError("unsupported_endpoint"))

        app.router.add_get("/v2/health/live", live)
        app.router.add_get("/v2/health/ready", ready)
        # Model names such as "org/model" hold a slash: accept it raw or percent-encoded.
        app.router.add_get("/v2/models/{name:.+}/versions/{version:[0-9]+}/ready", model_ready)
        app.router.add_get("/v2/models/{name:.+}/ready", model_ready)
        app.router.add_get("/v1/config", config_status)
        if self.version >= (2025, 3):
            app.router.add_get("/v3/models", models)
            app.router.add_get("/v3/v1/models", models)
        if self.version >= (2026, 3):
            app.router.add_get("/v1/models", models)
            app.router.add_post("/v1/completions", completions)
        app.router.add_post("/v3/completions", completions)


def make_personality(config: SimConfig) -> Personality:
    """The personality object for a config."""
    return VllmPersonality(config) if config.personality == "vllm" else OvmsPersonality(config)
