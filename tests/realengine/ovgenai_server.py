"""OpenVINO GenAI behind an OVMS-like front end: a test server, not OpenVINO Model Server.

OVMS serves vision-language models through OpenVINO GenAI's ContinuousBatchingPipeline. OVMS itself cannot be
installed here, but OpenVINO GenAI can (PyPI), so this server puts the same engine behind OVMS's wire behaviour
as written in ../shared/research/servers.md Part 1, for the cross-engine tests against a real vLLM:

- routes: POST /v3/chat/completions, /v3/v1/chat/completions and the /v1 alias of OVMS >= 2026.3; GET /v3/models,
  /v3/v1/models, /v1/models (and /<base>/models/NAME), /v2/health/live, /v2/health/ready, /v2/models/NAME/ready,
  /v1/config, /v2 (server metadata); POST /v3/completions answers the VLM servable's 400;
- errors: OVMS's flat `{"error": "<string>"}`: 412 for a body that is not JSON / not an object / has no model,
  404 for an unknown model (or a Content-Type without application/json: OVMS then routes by URI), 400 with
  the MediaPipe-wrapped message for request errors (bad parameter, bad image, restricted image tag, engine
  exceptions);
- images: an image_url whose url contains `base64,` is base64-decoded from there on (MIME type ignored); other
  URLs get OVMS 2026's "allowed_media_domains" refusal, anything else its "local filesystem is disabled"
  refusal; decoded to 8-bit RGB; no per-request image limit (OVMS has none on CPU);
- the prompt: text parts of a message joined with one space, OVMS's `<ov_genai_image_N>\\n` tags (N counted
  across the request) put in front of that message's text, then the model's chat template from the exported
  tokenizer (add_generation_prompt); the pipeline resolves each tag to the image's tokens;
- sampling: generation_config.json of the model folder as the base, then the request: max_tokens /
  max_completion_tokens, temperature (0 = greedy), top_p, top_k, seed, stop; OVMS's range checks and texts;
- logprobs: a boolean; one log-probability per generated token (OpenVINO GenAI's own); refused when streaming;
- responses: OVMS's unary body (no `id`, no `system_fingerprint`), usage, finish_reason stop/length; SSE
  streaming with a first role chunk, `stream_options.include_usage`, `data: [DONE]`.

usage.prompt_tokens: OVMS counts the templated text with the tags as plain text (`--prompt-tokens ovms`); with
`--prompt-tokens engine` (what CI uses) it is the number of tokens the pipeline is fed: BOS (the exported
tokenizer adds it) + the text tokens + each image's tokens, so that it can be compared with vLLM's count.

One ContinuousBatchingPipeline serves every request; a single thread calls `step()` while any request is
unfinished; HTTP threads add requests and wait for their handles. `--precision f32` sets
INFERENCE_PRECISION_HINT=f32 and KV_CACHE_PRECISION=f32 on every model of the pipeline; `--precision default`
leaves OpenVINO's own choice (bf16 inference and a u8 KV cache on a CPU with BF16).

Run with the OpenVINO venv's python (.ci/real_ovgenai.sh): it imports neither vlmparity nor anything outside
the standard library at module level, so that its request handling can also be tested with a fake engine.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

NODE = "LLMExecutor"  # the node name in graphs written by OVMS's export_model.py
IMAGE_TAG = "<ov_genai_image_"
CHAT_PATHS = ("/v3/chat/completions", "/v3/v1/chat/completions", "/v1/chat/completions")
COMPLETION_PATHS = ("/v3/completions", "/v3/v1/completions", "/v1/completions")
MODEL_BASES = ("/v3/models", "/v3/v1/models", "/v1/models")
SERVER_NAME = "OpenVINO GenAI behind an OVMS-like front end (vlmparity test server, not OVMS)"


class RequestError(Exception):
    """A request OVMS refuses: HTTP status and the message (wrapped like a MediaPipe error for 400)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def wrapped(message: str) -> str:
    """OVMS's text for an error raised inside the LLM calculator."""
    return (
        "Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \n"
        f'Calculator::Process() for node "{NODE}" failed: {message}'
    )


# ----- request parsing (OVMS's checks; research/servers.md §1.4-1.5) ---------------------------------------------


@dataclass
class Parsed:
    model: str
    prompt_history: list[dict[str, str]]
    images: list[bytes]
    stream: bool = False
    include_usage: bool = False
    logprobs: bool = False
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)


def _uint(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RequestError(wrapped(f"{key} is not an unsigned integer"))
    if value > 4294967295:
        raise RequestError(wrapped(f"{key} value can't be greater than 4294967295"))
    return value


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(wrapped(f"{key} is not a valid number"))
    return float(value)


def image_bytes(url: str) -> bytes:
    """OVMS's loadImage order: `base64,` anywhere, else a remote URL (refused), else a local path (refused)."""
    marker = url.find("base64,")
    if marker >= 0:
        try:
            return base64.b64decode(url[marker + len("base64,") :], validate=True)
        except (binascii.Error, ValueError):
            raise RequestError(wrapped("Invalid base64 string in request")) from None
    if url.startswith(("http://", "https://", "ftp://", "sftp://")):
        raise RequestError(wrapped("Given url does not match any allowed domain from allowed_media_domains"))
    raise RequestError(wrapped("Loading images from local filesystem is disabled."))


def parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise RequestError("The file is not valid json - Cannot parse JSON body", 412) from None
    if not isinstance(body, dict):
        raise RequestError("The file is not valid json - JSON body must be an object", 412)
    if not isinstance(body.get("model"), str):
        raise RequestError("The file is not valid json - model field is missing in JSON body", 412)
    return body


def parse_chat(body: dict[str, Any]) -> Parsed:
    """The checks of OVMS's chat-completions handler, in its order, with its messages."""
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestError(wrapped("Stream is not bool"))
    messages = body.get("messages")
    if not isinstance(messages, list):
        raise RequestError(
            wrapped("Messages missing in request" if messages is None else "Messages are not an array")
        )
    if not messages:
        raise RequestError(wrapped("Messages array cannot be empty"))
    history: list[dict[str, str]] = []
    images: list[bytes] = []
    tags_per_message: list[str] = []
    for message in messages:
        if not isinstance(message, dict):
            raise RequestError(wrapped("Message is not a JSON object"))
        role = message.get("role")
        if not isinstance(role, str):
            raise RequestError(wrapped("Invalid message structure - role is missing or is not a string"))
        content = message.get("content")
        texts: list[str] = []
        tags = ""
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            for part in content:
                if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                    raise RequestError(
                        wrapped("Invalid message structure - content array element is not an object")
                    )
                kind = part["type"]
                if kind == "text":
                    if not isinstance(part.get("text"), str):
                        raise RequestError(
                            wrapped("Invalid message structure - text is missing or is not a string")
                        )
                    texts.append(part["text"])
                elif kind == "image_url":
                    image = part.get("image_url")
                    if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                        raise RequestError(
                            wrapped("Invalid message structure - image_url is missing or invalid")
                        )
                    images.append(image_bytes(image["url"]))
                    tags += f"{IMAGE_TAG}{len(images) - 1}>\n"
                else:
                    raise RequestError(wrapped("Unsupported content type"))
        elif content is not None:
            raise RequestError(wrapped("Invalid message structure - content should be string or array"))
        text = " ".join(texts)
        if IMAGE_TAG in text:
            raise RequestError(wrapped("Message contains restricted <ov_genai_image> tag"))
        history.append({"role": role, "content": text})
        tags_per_message.append(tags)
    for entry, tags in zip(history, tags_per_message, strict=True):
        entry["content"] = tags + entry["content"]

    parsed = Parsed(model=body["model"], prompt_history=history, images=images, stream=stream)
    logprobs = body.get("logprobs", False)
    if logprobs is not None and not isinstance(logprobs, bool):
        raise RequestError(wrapped("logprobs accepts values true or false"))
    parsed.logprobs = bool(logprobs)
    if parsed.logprobs and stream:
        raise RequestError(wrapped("logprobs are not supported in streaming mode."))
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise RequestError(wrapped("stream_options provided, but stream not set to true"))
        if not isinstance(options, dict):
            raise RequestError(wrapped("stream_options is not an object"))
        usage = options.get("include_usage", False)
        if not isinstance(usage, bool):
            raise RequestError(wrapped("stream_options.include_usage is not a boolean"))
        parsed.include_usage = usage

    for key in ("max_tokens", "max_completion_tokens"):  # the latter is parsed after and wins
        value = _uint(body, key)
        if value is not None:
            parsed.max_tokens = value
    if parsed.max_tokens == 0:
        raise RequestError(wrapped("max_tokens value should be greater than 0"))
    parsed.temperature = _number(body, "temperature")
    if parsed.temperature is not None and not 0.0 <= parsed.temperature <= 2.0:
        raise RequestError(wrapped("temperature out of range(0.0, 2.0)"))
    parsed.top_p = _number(body, "top_p")
    if parsed.top_p is not None and not 0.0 <= parsed.top_p <= 1.0:
        raise RequestError(wrapped("top_p out of range(0.0, 1.0)"))
    top_k = body.get("top_k")
    if top_k is not None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or (top_k != -1 and top_k <= 0):
            raise RequestError(wrapped("top_k must be -1 (all tokens) or a positive integer"))
        parsed.top_k = top_k
    parsed.seed = _uint(body, "seed")
    stop = body.get("stop")
    if isinstance(stop, str):
        parsed.stop = [stop]
    elif isinstance(stop, list):
        if not all(isinstance(s, str) for s in stop):
            raise RequestError(wrapped("stop array contains non string element"))
        parsed.stop = list(stop)
    elif stop is not None:
        raise RequestError(wrapped("stop is not a string or array of strings"))
    return parsed


# ----- the engine: one ContinuousBatchingPipeline, one step() thread ----------------------------------------------


@dataclass
class Generation:
    ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" | "length"
    prompt_tokens: int


class Engine:
    """OpenVINO GenAI's ContinuousBatchingPipeline driven by one `step()` thread."""

    def __init__(self, model_dir: str, precision: str, cache_gb: int, prompt_tokens: str) -> None:
        import numpy as np
        import openvino as ov
        import openvino_genai as ov_genai
        from PIL import Image

        self._np, self._ov, self._genai, self._image = np, ov, ov_genai, Image
        self.model_dir = model_dir
        self.prompt_tokens_mode = prompt_tokens
        properties: dict[str, Any] = {}
        if precision == "f32":
            properties = {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
        scheduler = ov_genai.SchedulerConfig()
        scheduler.cache_size = cache_gb
        self.pipe = ov_genai.ContinuousBatchingPipeline(model_dir, scheduler, "CPU", properties)
        self.tokenizer = self.pipe.get_tokenizer()
        gen_config = os.path.join(model_dir, "generation_config.json")
        self._base_config = gen_config if os.path.exists(gen_config) else None
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        self.image_tokens = int(config.get("image_seq_length") or 0)
        self.versions = {"openvino": ov.__version__, "openvino_genai": ov_genai.__version__}
        core = ov.Core()
        self.cpu_precisions = list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))
        self.inference_precision = str(core.get_property("CPU", "INFERENCE_PRECISION_HINT"))
        self.precision = precision
        self._add_lock = threading.Lock()
        self._work = threading.Condition()
        self._next_id = 0
        self._stopping = False
        self.step_error: str | None = None
        self._thread = threading.Thread(target=self._loop, name="step", daemon=True)
        self._thread.start()

    # the step() thread
    def _loop(self) -> None:
        while True:
            with self._work:
                while not self._stopping and not self.pipe.has_non_finished_requests():
                    self._work.wait(timeout=0.5)
                if self._stopping:
                    return
            try:
                self.pipe.step()
            except Exception as exc:  # the pipeline failed: every waiting request gets it
                self.step_error = f"{type(exc).__name__}: {exc}"
            with self._work:
                self._work.notify_all()

    def stop(self) -> None:
        with self._work:
            self._stopping = True
            self._work.notify_all()

    def decode_image(self, data: bytes) -> Any:
        try:
            with self._image.open(io.BytesIO(data)) as img:
                rgb = img.convert("RGB")
        except Exception:
            raise RequestError(wrapped("Image parsing failed")) from None
        array = self._np.asarray(rgb, dtype=self._np.uint8)[None]  # [1, H, W, 3], like stb_image's u8 NHWC
        return self._ov.Tensor(array)

    def prompt(self, history: list[dict[str, str]]) -> str:
        return str(self.tokenizer.apply_chat_template(history, add_generation_prompt=True))

    def count_prompt_tokens(self, prompt: str, n_images: int) -> int:
        if self.prompt_tokens_mode == "ovms":  # OVMS: encode(prompt, add_special_tokens=False), tags as text
            return int(self.tokenizer.encode(prompt, add_special_tokens=False).input_ids.get_size())
        # what the pipeline is fed: the text around the tags, each tag as the image's tokens, plus BOS
        total = int(self.tokenizer.encode("", add_special_tokens=True).input_ids.get_size())
        rest = prompt
        for i in range(n_images):
            before, tag, rest = rest.partition(f"{IMAGE_TAG}{i}>")
            if before:
                total += int(self.tokenizer.encode(before, add_special_tokens=False).input_ids.get_size())
            if tag:
                total += self.image_tokens
        if rest:
            total += int(self.tokenizer.encode(rest, add_special_tokens=False).input_ids.get_size())
        return total

    def config(self, parsed: Parsed) -> Any:
        genai = self._genai
        cfg = genai.GenerationConfig(self._base_config) if self._base_config else genai.GenerationConfig()
        if parsed.max_tokens is not None:
            cfg.max_new_tokens = parsed.max_tokens
        temperature = 1.0 if parsed.temperature is None else parsed.temperature
        cfg.temperature = temperature
        cfg.apply_chat_template = False  # the prompt is templated already (as OVMS does before add_request)
        cfg.do_sample = temperature > 0
        if parsed.top_p is not None:
            cfg.top_p = parsed.top_p
        if parsed.top_k is not None and parsed.top_k > 0:
            cfg.top_k = parsed.top_k
        elif parsed.top_k is None and cfg.do_sample:
            cfg.top_k = 40  # OVMS >= 2026.2 when sampling without top_k
        if parsed.seed is not None:
            cfg.rng_seed = parsed.seed
        elif cfg.do_sample:
            cfg.rng_seed = int.from_bytes(os.urandom(4), "little")
        if parsed.stop:
            cfg.stop_strings = set(parsed.stop)
            cfg.include_stop_str_in_output = parsed.stream
        if parsed.logprobs:
            cfg.logprobs = 1
        return cfg

    def submit(self, parsed: Parsed) -> tuple[Any, int]:
        tensors = [self.decode_image(b) for b in parsed.images]
        prompt = self.prompt(parsed.prompt_history)
        n_prompt = self.count_prompt_tokens(prompt, len(tensors))
        cfg = self.config(parsed)
        with self._add_lock:
            request_id = self._next_id
            self._next_id += 1
            try:
                handle = self.pipe.add_request(request_id, prompt, tensors, cfg)
            except Exception as exc:
                raise RequestError(
                    wrapped(str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc))
                ) from None
        with self._work:
            self._work.notify_all()
        return handle, n_prompt

    def _finished(self, handle: Any) -> bool:
        return bool(handle.get_status() != self._genai.GenerationStatus.RUNNING)

    def wait(self, handle: Any) -> None:
        with self._work:
            while not self._finished(handle):
                if self.step_error:
                    raise RequestError(wrapped(self.step_error))
                self._work.wait(timeout=1.0)

    def result(self, handle: Any, n_prompt: int) -> Generation:
        status = handle.get_status()
        if status != self._genai.GenerationStatus.FINISHED:
            raise RequestError(wrapped(f"generation ended with status {status}"))
        (out,) = handle.read_all()[:1]
        reason = "length" if out.finish_reason == self._genai.GenerationFinishReason.LENGTH else "stop"
        return Generation(list(out.generated_ids), list(out.generated_log_probs), reason, n_prompt)

    def stream(self, handle: Any) -> Any:
        """Yields (new token ids, finish reason "stop" | "length" | None) as steps produce them."""
        finish = self._genai.GenerationFinishReason
        while True:
            with self._work:
                while not handle.can_read() and not self._finished(handle):
                    if self.step_error:
                        raise RequestError(wrapped(self.step_error))
                    self._work.wait(timeout=1.0)
            if handle.can_read():
                for out in handle.read().values():
                    reason = {finish.LENGTH: "length", finish.STOP: "stop"}.get(out.finish_reason)
                    yield list(out.generated_ids), reason
                continue
            if self._finished(handle):
                return

    def decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True)) if ids else ""

    def token_text(self, token_id: int) -> str:
        return str(self.tokenizer.decode([token_id], skip_special_tokens=False))


# ----- HTTP ---------------------------------------------------------------------------------------------------------


class Handler(BaseHTTPRequestHandler):
    server: Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            sys.stderr.write(f"[ovgenai_server] {self.address_string()} {format % args}\n")

    def _send(self, status: int, doc: Any) -> None:
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _error(self, status: int, message: str) -> None:
        self._send(status, {"error": message})

    def _path(self) -> str:
        path = urlsplit(self.path).path
        return path.rstrip("/") or "/"

    def do_GET(self) -> None:
        path, srv = self._path(), self.server
        if path == "/v2/health/live":
            return self._send(200, {})
        if path == "/v2/health/ready":
            return self._send(200, {}) if srv.ready else self._error(503, "Server is not ready")
        if path == "/v2":
            return self._send(
                200, {"name": SERVER_NAME, "version": srv.version, "extensions": ["model_repository"]}
            )
        if path.startswith("/v2/models/") and path.endswith("/ready"):
            name = unquote(path[len("/v2/models/") : -len("/ready")])
            name = name.split("/versions/")[0]
            if name != srv.model_name:
                return self._error(404, "Model with requested name is not found")
            return self._send(200, {})
        if path == "/v1/config":
            state = "AVAILABLE" if srv.ready else "LOADING"
            entry = {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": "OK"}}
            return self._send(200, {srv.model_name: {"model_version_status": [entry]}})
        for base in MODEL_BASES:
            card = {"id": srv.model_name, "object": "model", "created": int(time.time()), "owned_by": "OVMS"}
            if path == base:
                return self._send(200, {"data": [card], "object": "list"})
            if path.startswith(base + "/"):
                if unquote(path[len(base) + 1 :]) == srv.model_name:
                    return self._send(200, card)
                return self._error(500, "Model not found")
        return self._error(404, "Mediapipe graph definition with requested name is not found")

    def do_POST(self) -> None:
        path = self._path()
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if path in COMPLETION_PATHS:
            return self._error(
                400,
                wrapped(
                    "VLM Servable does not support the /completions endpoint. Use /chat/completions or /responses."
                ),
            )
        if path not in CHAT_PATHS or "application/json" not in (self.headers.get("Content-Type") or ""):
            return self._error(404, "Mediapipe graph definition with requested name is not found")
        try:
            body = parse_body(raw)
            if body["model"] != self.server.model_name:
                raise RequestError("Mediapipe graph definition with requested name is not found", 404)
            if not self.server.ready:
                raise RequestError("Mediapipe is not loaded yet", 500)
            parsed = parse_chat(body)
            engine = self.server.engine
            handle, n_prompt = engine.submit(parsed)
            if parsed.stream:
                return self._stream(engine, handle, parsed, n_prompt)
            engine.wait(handle)
            gen = engine.result(handle, n_prompt)
        except RequestError as err:
            return self._error(err.status, err.message)
        self._send(200, self._unary(engine, parsed, gen))

    def _unary(self, engine: Engine, parsed: Parsed, gen: Generation) -> dict[str, Any]:
        logprobs: Any = None
        if parsed.logprobs:
            content = []
            for token_id, lp in zip(gen.ids, gen.logprobs, strict=False):
                text = engine.token_text(token_id)
                content.append(
                    {"token": text, "logprob": lp, "bytes": list(text.encode("utf-8")), "top_logprobs": []}
                )
            logprobs = {"content": content}
        n_out = len(gen.ids)
        return {
            "choices": [
                {
                    "finish_reason": gen.finish_reason,
                    "index": 0,
                    "logprobs": logprobs,
                    "message": {"content": engine.decode(gen.ids), "role": "assistant"},
                }
            ],
            "created": int(time.time()),
            "model": parsed.model,
            "object": "chat.completion",
            "usage": {
                "prompt_tokens": gen.prompt_tokens,
                "completion_tokens": n_out,
                "total_tokens": gen.prompt_tokens + n_out,
            },
        }

    def _chunk(self, doc: dict[str, Any]) -> None:
        data = b"data: " + json.dumps(doc, ensure_ascii=False).encode("utf-8") + b"\n\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _stream(self, engine: Engine, handle: Any, parsed: Parsed, n_prompt: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def chunk(delta: dict[str, Any], finish: str | None) -> dict[str, Any]:
            return {
                "choices": [{"delta": delta, "finish_reason": finish, "index": 0, "logprobs": None}],
                "created": int(time.time()),
                "model": parsed.model,
                "object": "chat.completion.chunk",
            }

        self._chunk(chunk({"role": "assistant", "content": None}, None))
        ids: list[int] = []
        sent = ""
        finish: str | None = None
        try:
            for new_ids, reason in engine.stream(handle):
                ids.extend(new_ids)
                text = engine.decode(ids)
                finish = reason or finish
                if text.endswith("\ufffd") and not finish:  # an incomplete UTF-8 sequence: wait for more
                    continue
                if text != sent or finish:
                    self._chunk(chunk({"content": text[len(sent) :]}, finish))
                    sent = text
        except RequestError as err:  # headers already sent: OVMS appends the error to the open stream
            self._chunk({"error": err.message})
        if parsed.include_usage:
            usage = {
                "prompt_tokens": n_prompt,
                "completion_tokens": len(ids),
                "total_tokens": n_prompt + len(ids),
            }
            self._chunk({"choices": [], "created": int(time.time()), "model": parsed.model,
                         "object": "chat.completion.chunk", "usage": usage})  # fmt: skip
        data = b"data: [DONE]\n\n"
        self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        self.wfile.flush()


class Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self, address: tuple[str, int], engine: Any, model_name: str, version: str, verbose: bool
    ) -> None:
        super().__init__(address, Handler)
        self.engine = engine
        self.model_name = model_name
        self.version = version
        self.verbose = verbose
        self.ready = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", required=True, help="an OpenVINO export (optimum-cli export openvino)")
    parser.add_argument("--served-model-name", default="tiny-llava")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--precision", choices=("f32", "default"), default="default")
    parser.add_argument("--prompt-tokens", choices=("ovms", "engine"), default="ovms")
    parser.add_argument("--cache-gb", type=int, default=1, help="KV cache size of the scheduler, GB")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    t0 = time.monotonic()
    engine = Engine(args.model_dir, args.precision, args.cache_gb, args.prompt_tokens)
    version = f"openvino-genai {engine.versions['openvino_genai']}"
    server = Server((args.host, args.port), engine, args.served_model_name, version, args.verbose)
    print(
        f"[ovgenai_server] {SERVER_NAME}: {args.served_model_name} from {args.model_dir}, "
        f"precision {args.precision} (CPU default inference precision {engine.inference_precision}; "
        f"capabilities {' '.join(engine.cpu_precisions)}), prompt tokens counted as {args.prompt_tokens}, "
        f"{version}, openvino {engine.versions['openvino']}; loaded in {time.monotonic() - t0:.1f} s; "
        f"listening on http://{args.host}:{args.port}/v3",
        file=sys.stderr,
        flush=True,
    )

    def shutdown(signum: int, frame: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        engine.stop()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
