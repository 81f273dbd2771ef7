"""The simulator's HTTP server (aiohttp): an async API and a thread-backed one for tests and the CLI.

    with SimServer(SimConfig(personality="ovms", data=[mme_dir])) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="x")
        ...
        sim.log            # what the server received, one LogEntry per request
        sim.fault_counts   # injected faults by kind

`AsyncSimServer` is the same server for code already inside an event loop (`async with`).
Response shape knobs (`SimConfig`): `usage=False` leaves `usage` out of unary responses and drops the
usage chunk of streams; `stream_done=False` ends streams without `data: [DONE]`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import struct
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from vlmparity.canonical import request_hash
from vlmparity.sim.answers import choose_answer, count_tokens, truncate
from vlmparity.sim.config import SimConfig
from vlmparity.sim.dataset import DatasetIndex, build_index, recognise
from vlmparity.sim.faults import FaultSchedule
from vlmparity.sim.images import SHARED_PRINTS, ImageError, ImagePrint, PrintCache, fingerprint_url
from vlmparity.sim.load import LoadModel, LoadStats
from vlmparity.sim.personality import Personality, SimError, json_response, make_personality, usage_dict
from vlmparity.sim.reqlog import LogEntry, RequestLog
from vlmparity.sim.request import ChatRequest, parse_chat
from vlmparity.sim.tokens import generate

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# aiohttp >= 3.12 wants typed request keys; older versions take plain strings.
ENTRY: Any = web.RequestKey("sim_entry", LogEntry) if hasattr(web, "RequestKey") else "sim_entry"
SHUTDOWN_TIMEOUT = 0.25  # seconds given to in-flight handlers (e.g. injected hangs) when stopping


def logprobs_content(words: list[str], logprobs: list[float]) -> dict[str, Any]:
    """OpenAI's `choices[0].logprobs` for the words (a leading space on every token but the first)."""
    content = []
    for i, (word, lp) in enumerate(zip(words, logprobs, strict=True)):
        token = word if i == 0 else " " + word
        content.append({"token": token, "logprob": lp, "bytes": list(token.encode()), "top_logprobs": []})
    return {"content": content}


def merge_config(config: SimConfig | None, overrides: Mapping[str, Any]) -> SimConfig:
    """`config` (default: SimConfig()) with top-level fields replaced by `overrides` (validated)."""
    base = (config or SimConfig()).model_dump()
    for key, value in overrides.items():
        base[key] = value.model_dump() if hasattr(value, "model_dump") else value
    return SimConfig.model_validate(base)


def _abort(request: web.Request, *, reset: bool = True) -> None:
    """Drop the connection: a TCP reset (SO_LINGER 0) as a crashed peer would, or (reset=False) a plain
    close after the bytes already written, so the client sees a body shorter than announced."""
    transport = request.transport
    if transport is None:
        return
    if not reset:
        transport.close()
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


class _Aborted(Exception):
    """The handler dropped the connection on purpose; nothing more is sent."""


class AsyncSimServer:
    """The simulator inside the current event loop: `await start()`, `await stop()` or `async with`."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.config = merge_config(config, overrides) if overrides else (config or SimConfig())
        self.personality: Personality = make_personality(self.config)
        self.index = DatasetIndex()
        self.prints = SHARED_PRINTS
        self.faults = FaultSchedule(self.config.faults)
        self.load: LoadModel | None = None
        self.request_log = RequestLog()
        self.started_at = 0.0
        self.port = 0
        self._ready_at = float("inf")
        self._runner: web.AppRunner | None = None
        self._inflight: set[asyncio.Task[Any]] = set()

    # ---- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> AsyncSimServer:
        """Load the datasets, bind the port and start serving (readiness after `startup_delay`)."""
        cfg = self.config
        self.index = await asyncio.to_thread(build_index, cfg.data)
        self.load = LoadModel(cfg.load)
        self.request_log = RequestLog(cfg.log_file)
        app = web.Application(client_max_size=1 << 30, middlewares=[self._middleware])
        for path in self.personality.chat_paths():
            app.router.add_post(path, self._chat)
        self.personality.add_routes(app, self)
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        site = web.TCPSite(runner, cfg.host, cfg.port)
        try:
            await site.start()
        except OSError as err:
            await runner.cleanup()
            from vlmparity.errors import EndpointError

            raise EndpointError(
                f"the simulator cannot listen on {cfg.host}:{cfg.port}: {err.strerror or err}",
                hint="choose another --port (0 picks a free one)",
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        self.started_at = time.time()
        self._ready_at = time.monotonic() + cfg.startup_delay
        return self

    async def stop(self) -> None:
        """Stop serving; in-flight requests (e.g. injected hangs) are cut after a short grace period."""
        if self._runner is not None:
            runner, self._runner = self._runner, None
            for site in list(runner.sites):
                await site.stop()
            # aiohttp would wait for handlers still running (an injected hang); cut them now.
            pending = [t for t in self._inflight if not t.done()]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            await runner.cleanup()
        self.request_log.close()

    async def __aenter__(self) -> AsyncSimServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ---- state ------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        """Base URL without API prefix, e.g. http://127.0.0.1:43123."""
        host = self.config.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI base URL: .../v1 for vLLM, .../v3 for OVMS."""
        return self.url + self.personality.api_prefix

    def is_ready(self) -> bool:
        """True once the startup delay has passed (or `mark_ready` was called)."""
        return time.monotonic() >= self._ready_at

    def mark_ready(self, ready: bool = True) -> None:
        """End (or restart) the simulated startup now."""
        self._ready_at = time.monotonic() if ready else float("inf")

    @property
    def log(self) -> list[LogEntry]:
        """Every request received so far (a copy)."""
        return self.request_log.snapshot()

    @property
    def fault_counts(self) -> dict[str, int]:
        """Injected faults by kind."""
        return dict(self.faults.counts)

    @property
    def load_stats(self) -> LoadStats:
        return self.load.stats if self.load else LoadStats()

    # ---- HTTP -------------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        entry = LogEntry(time=time.time(), method=request.method, path=request.path)
        entry.probe = "X-Vlmparity-Probe" in request.headers
        request[ENTRY] = entry
        self.request_log.add(entry)
        task = asyncio.current_task()
        if task is not None:
            self._inflight.add(task)
        response: web.StreamResponse | None = None
        try:
            response = await handler(request)
        except SimError as err:
            entry.outcome = "not_ready" if err.kind == "not_ready" else "error"
            response = self.personality.error(err)
            entry.error = self.personality.error_parts(err)[1]
        except _Aborted:
            response = None
        except web.HTTPNotFound:
            entry.outcome = "error"
            response = self.personality.not_found(request.path)
        except web.HTTPMethodNotAllowed:
            entry.outcome = "error"
            response = json_response({"detail": "Method Not Allowed"}, 405)
        finally:
            if task is not None:
                self._inflight.discard(task)
            if response is None:
                entry.status = 0
            elif not entry.status:
                entry.status = response.status
            self.request_log.finish(entry)
        if response is None:
            # The connection is gone; aiohttp needs a response object but nothing reaches the client.
            return web.Response(status=500)
        return response

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        entry: LogEntry = request[ENTRY]
        cfg = self.config
        ovms = cfg.personality == "ovms"
        raw = await request.read()
        if ovms and "application/json" not in request.headers.get("Content-Type", ""):
            raise SimError("bad_content_type")  # OVMS then routes by URI and finds no such graph
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as err:
            raise SimError("invalid_json", str(err)) from None
        if not isinstance(body, dict):
            raise SimError("not_object" if ovms else "invalid_request", "Input should be a valid dictionary")
        entry.body_hash = request_hash(body)
        model = body.get("model")
        entry.model = model if isinstance(model, str) else None
        entry.stream = body.get("stream") is True
        if not self.is_ready():
            raise SimError("not_ready")
        if model is None and not ovms:
            model = cfg.model  # vLLM serves its (only) model when the field is omitted
        if not isinstance(model, str):
            raise SimError("missing_model") if ovms else SimError("invalid_request", "model must be a string")
        if model != cfg.model:
            raise SimError("unknown_model", model, param="model")

        # vlmparity's start-up probe is never faulted: it would shift every fault drawn for the questions
        fault, attempt = (None, 0) if entry.probe else self.faults.decide(entry.body_hash)
        entry.fault, entry.attempt = fault, attempt
        if fault is not None:
            entry.outcome = "fault"
        if fault in ("http_500", "http_503", "http_429", "html"):
            return self.personality.fault_response(fault)
        if fault == "reset":
            _abort(request)
            raise _Aborted
        if fault == "hang":
            await asyncio.sleep(cfg.faults.hang_seconds)

        chat = parse_chat(body, cfg)
        n_images = len(chat.image_urls)
        entry.image_count = n_images
        entry.temperature, entry.seed, entry.max_tokens = chat.temperature, chat.seed, chat.max_tokens
        if not ovms and cfg.image_limit is not None and n_images > cfg.image_limit:
            raise SimError("too_many_images", str(cfg.image_limit), param="image")
        if (
            not ovms
            and n_images >= 2
            and cfg.multi_image_reject
            and multi_image_rejected(chat.text, cfg.multi_image_reject)
        ):
            raise SimError("too_many_images", "1", param="image")
        prints = await self._fingerprints(chat.image_urls)
        prompt_tokens = sum(count_tokens(t) for t in chat.texts) + cfg.tokens_per_image * n_images
        if not ovms and prompt_tokens >= cfg.max_model_len:
            raise SimError("prompt_too_long", str(prompt_tokens))

        match = recognise(self.index, prints, chat.text) if self.index.samples else None
        answer = choose_answer(
            match.sample if match else None,
            chat.text,
            [p.pixels for p in prints],
            cfg.answers,
            temperature=chat.temperature,
            seed=chat.seed,
        )
        tok = cfg.tokens
        limit = chat.max_tokens
        if tok.max_tokens_cap is not None:
            limit = tok.max_tokens_cap if limit is None else min(limit, tok.max_tokens_cap)
        text, completion_tokens, finish = truncate(answer.text, limit)
        logprobs: list[float] | None = None
        if text.split() and (tok.numeric_noise > 0 or (chat.logprobs and tok.logprobs)):
            words, lps = generate(
                text.split(),
                entry.body_hash or "",
                model_seed=cfg.answers.model_seed,
                noise=tok.numeric_noise,
                noise_seed=tok.noise_seed,
            )
            text = " ".join(words)
            logprobs = lps if chat.logprobs and tok.logprobs else None
        prompt_tokens = max(0, prompt_tokens + tok.bos_offset)
        if answer.sample is not None:
            entry.sample_id, entry.task = answer.sample.id, answer.sample.task
        entry.answer, entry.correct, entry.style, entry.finish_reason = (
            text,
            answer.correct,
            answer.style,
            finish,
        )
        entry.prompt_tokens, entry.completion_tokens = prompt_tokens, completion_tokens
        usage = usage_dict(prompt_tokens, completion_tokens)

        assert self.load is not None
        async with self.load.slot():
            if chat.stream:
                return await self._stream(request, chat, model, text, finish, usage, n_images, fault)
            await self.load.prefill(n_images)
            await self.load.decode(completion_tokens)
        completion = self.personality.completion(model, text, finish, usage)
        if logprobs is not None:
            completion["choices"][0]["logprobs"] = logprobs_content(text.split(), logprobs)
        if not cfg.usage:
            completion.pop("usage", None)
        payload = orjson.dumps(completion)
        if fault == "truncated":
            await self._send_truncated(request, payload)
        if fault == "non_json":
            entry.status = 200
            return web.Response(
                body=b"upstream error: " + payload[: len(payload) // 3], content_type="application/json"
            )
        return web.Response(body=payload, content_type="application/json")

    async def _fingerprints(self, urls: list[str]) -> list[ImagePrint]:
        found: list[ImagePrint | None] = []
        missing: list[int] = []
        for i, url in enumerate(urls):
            cached = self.prints.get(PrintCache.key(url))
            found.append(cached)
            if cached is None:
                missing.append(i)
        if missing:
            try:
                fresh = await asyncio.to_thread(lambda: [fingerprint_url(urls[i]) for i in missing])
            except ImageError as err:
                raise SimError("image", err.detail, param="image_url", image_kind=err.kind) from None
            for i, value in zip(missing, fresh, strict=True):
                self.prints.put(PrintCache.key(urls[i]), value)
                found[i] = value
        return [p for p in found if p is not None]

    async def _send_truncated(self, request: web.Request, payload: bytes) -> None:
        """Headers announce the full body, half of it is sent, then the connection is cut."""
        entry: LogEntry = request[ENTRY]
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(payload)
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        entry.status = 200
        _abort(request, reset=False)
        raise _Aborted

    async def _stream(
        self,
        request: web.Request,
        chat: ChatRequest,
        model: str,
        text: str,
        finish: str,
        usage: dict[str, int],
        n_images: int,
        fault: str | None,
    ) -> web.StreamResponse:
        entry: LogEntry = request[ENTRY]
        persona = self.personality
        assert self.load is not None
        response = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        entry.status = 200
        stream_id = f"chatcmpl-{uuid.uuid4().hex}"

        async def send(obj: Any) -> None:
            await response.write(b"data: " + orjson.dumps(obj) + b"\n\n")

        await self.load.prefill(n_images)
        await send(persona.chunk(stream_id, model, persona.first_delta(), None))
        words = text.split()
        for i, word in enumerate(words):
            if fault == "truncated" and i >= max(1, len(words) // 2):
                _abort(request, reset=False)
                raise _Aborted
            await self.load.decode(1)
            if fault == "non_json" and i == 0:
                await response.write(b"data: {upstream error: the engine crashed\n\n")
            piece = word if i == 0 else " " + word
            last = i == len(words) - 1
            await send(persona.chunk(stream_id, model, {"content": piece}, finish if last else None))
        if not words:
            await send(persona.chunk(stream_id, model, {"content": ""}, finish))
        if fault == "truncated":  # a one-word answer: cut before the end of the stream
            _abort(request, reset=False)
            raise _Aborted
        if chat.include_usage and self.config.usage:
            await send(persona.usage_chunk(stream_id, model, usage))
        if self.config.stream_done:
            await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


class SimServer:
    """The simulator running in a background thread: `with SimServer(config) as sim: sim.url`."""

    def __init__(self, config: SimConfig | None = None, **overrides: Any) -> None:
        self.server = AsyncSimServer(config, **overrides)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    @property
    def config(self) -> SimConfig:
        return self.server.config

    def start(self, timeout: float = 120.0) -> SimServer:
        """Start the server thread and wait until the port is bound (datasets indexed)."""
        if self._thread is not None:
            return self
        started = threading.Event()
        failure: list[BaseException] = []
        loop = asyncio.new_event_loop()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self.server.start())
            except BaseException as err:
                failure.append(err)
                started.set()
                loop.close()
                return
            started.set()
            loop.run_forever()
            loop.run_until_complete(self.server.stop())
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._loop = loop
        self._thread = threading.Thread(target=run, name="vlmparity-sim", daemon=True)
        self._thread.start()
        if not started.wait(timeout):
            raise TimeoutError("the simulator did not start in time")
        if failure:
            self._thread.join()
            self._thread = None
            raise failure[0]
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and join the thread."""
        if self._thread is None or self._loop is None:
            return
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout)
        self._thread = None

    def __enter__(self) -> SimServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def log(self) -> list[LogEntry]:
        return self.server.log

    @property
    def chat_log(self) -> list[LogEntry]:
        """Log entries of chat-completion requests only."""
        return [e for e in self.server.log if e.path.endswith("/chat/completions") and not e.probe]

    @property
    def probe_log(self) -> list[LogEntry]:
        """vlmparity's start-up probe requests (see `client/logprobs.py`)."""
        return [e for e in self.server.log if e.probe]

    @property
    def fault_counts(self) -> dict[str, int]:
        return self.server.fault_counts

    @property
    def load_stats(self) -> LoadStats:
        return self.server.load_stats

    @property
    def index(self) -> DatasetIndex:
        return self.server.index

    def is_ready(self) -> bool:
        return self.server.is_ready()

    def mark_ready(self, ready: bool = True) -> None:
        self.server.mark_ready(ready)

    def clear_log(self) -> None:
        self.server.request_log.clear()


def multi_image_rejected(text: str, fraction: float) -> bool:
    """Whether `multi_image_reject` refuses a multi-image request with this prompt text (sha256 of the text)."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < fraction
