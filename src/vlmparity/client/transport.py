"""One HTTP attempt against a chat endpoint: send pre-serialised JSON bytes, classify what comes back.

`make_http_client(pool_size)` builds the shared `httpx.AsyncClient` (HTTP/1.1 keep-alive pool sized to the
concurrency). `encode_body(body, model)` serialises a request body once, adding the endpoint's model.
`send_attempt(...)` posts the bytes (unary or `stream: true` SSE) and returns an `Attempt`: the
`Classification` plus latency and time to first token. `StreamAssembler` turns SSE lines into one
chat.completion document (concatenated deltas, finish reason, usage, mid-stream errors, `[DONE]`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from vlmparity.client.classify import (
    MAX_REPLY_BYTES,
    Classification,
    Outcome,
    classify,
    classify_completion,
    classify_error_doc,
    classify_exception,
    malformed,
    raw,
    valid_status,
    wire_int,
)

JSON_HEADERS = {"Content-Type": "application/json", "Accept": "application/json"}


def make_http_client(pool_size: int, *, trust_env: bool = True) -> httpx.AsyncClient:
    """An HTTP/1.1 keep-alive client whose pool holds `pool_size` connections (one per request in flight)."""
    pool_size = max(1, pool_size)
    limits = httpx.Limits(
        max_connections=pool_size, max_keepalive_connections=pool_size, keepalive_expiry=60.0
    )
    # Per-operation timeouts are generous: the dispatcher bounds each attempt as a whole.
    timeout = httpx.Timeout(connect=30.0, read=None, write=None, pool=None)
    return httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=trust_env, follow_redirects=False)


def encode_body(body: Mapping[str, Any] | bytes, model: str | None) -> bytes:
    """JSON bytes of `body` with `"model"` first; `body` may already be JSON bytes of an object without model.

    Pre-serialised bytes are spliced rather than parsed, so multi-megabyte image strings are never
    serialised twice when the same request goes to several endpoints.
    """
    if isinstance(body, bytes | bytearray | memoryview):
        raw = bytes(body).lstrip()
        if not raw.startswith(b"{"):
            raise ValueError("a pre-serialised body must be a JSON object")
        if model is None:
            return raw
        rest = raw[1:].lstrip()
        sep = b"" if rest.startswith(b"}") else b","
        return b'{"model":' + orjson.dumps(model) + sep + rest
    if model is None:
        return orjson.dumps(body)
    if "model" in body:
        body = {k: v for k, v in body.items() if k != "model"}
    return orjson.dumps({"model": model, **body})


STREAM_FLAG_WINDOW = 512  # bytes at each end of a pre-serialised body searched for the stream flag


def wants_stream(body: Mapping[str, Any] | bytes) -> bool:
    """True when the body asks for SSE streaming (`"stream": true`); O(1) whatever the body's size.

    A pre-serialised body is searched only near its ends: the megabytes are the messages' images, and
    the small top-level keys (the flag among them) sit before or after them. Callers that know whether
    they stream say so instead (`Dispatcher(stream=...)`).
    """
    if isinstance(body, bytes | bytearray | memoryview):
        view = memoryview(body)
        ends = (bytes(view[:STREAM_FLAG_WINDOW]), bytes(view[-STREAM_FLAG_WINDOW:]))
        # Inside a JSON string the quotes would be escaped, so text never matches the key.
        return any(b'"stream":true' in end or b'"stream": true' in end for end in ends)
    return body.get("stream") is True


@dataclass
class StreamAssembler:
    """Accumulates an SSE chat-completion stream into one chat.completion document."""

    parts: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    error: Any = None
    done: bool = False
    role: str | None = None
    model: str | None = None
    got_content: bool = False  # a non-empty content delta arrived (what TTFT measures)
    problem: str | None = None  # the first thing that makes the stream malformed
    size: int = 0  # bytes of content received
    _data: list[str] = field(default_factory=list)

    def feed_line(self, line: str) -> bool:
        """Feed one line (without newline); returns True when this line completed an event with content."""
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return False
        if line.startswith("data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(" ") else value)
            return False
        if line.startswith("{"):
            # OVMS appends a plain {"error": ...} to an open stream when generation fails after headers.
            self._data.append(line)
            return self._dispatch()
        return False  # event:, id:, retry: and unknown fields carry nothing we need

    def close(self) -> None:
        """Flush a last event not followed by a blank line."""
        self._dispatch()

    def _dispatch(self) -> bool:
        if not self._data:
            return False
        data = "\n".join(self._data)
        self._data.clear()
        if data.strip() == "[DONE]":
            self.done = True
            return False
        try:
            chunk = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.problem = self.problem or f"invalid JSON in stream event: {data[:120]!r}"
            return False
        if not isinstance(chunk, dict):
            self.problem = self.problem or f"stream event is JSON {type(chunk).__name__}, not an object"
            return False
        if chunk.get("error") is not None:
            self.error = chunk
            return False
        if isinstance(chunk.get("model"), str):
            self.model = chunk["model"]
        if isinstance(chunk.get("usage"), dict):
            self.usage = chunk["usage"]
        new_content = False
        choices = chunk.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], dict):
            choice = choices[0]
            delta = choice.get("delta", choice.get("message", {}))
            if not isinstance(delta, dict):
                self.problem = self.problem or f"choices[0].delta is {type(delta).__name__}, not an object"
                delta = {}
            if isinstance(delta.get("role"), str):
                self.role = delta["role"]
            content = delta.get("content")
            if content is not None and not isinstance(content, str):
                self.problem = self.problem or (
                    f"choices[0].delta.content is {type(content).__name__}, not a string"
                )
            elif content:
                self.size += len(content)
                if self.size > MAX_REPLY_BYTES:
                    self.problem = self.problem or f"streamed answer larger than {MAX_REPLY_BYTES} bytes"
                else:
                    self.parts.append(content)
                    new_content = not self.got_content
                    self.got_content = True
            if isinstance(choice.get("finish_reason"), str):
                self.finish_reason = choice["finish_reason"]
        return new_content

    def document(self) -> dict[str, Any]:
        """The assembled response as a chat.completion object."""
        doc: dict[str, Any] = {
            "object": "chat.completion",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": self.role or "assistant", "content": "".join(self.parts)},
                    "finish_reason": self.finish_reason,
                }
            ],
        }
        if self.model is not None:
            doc["model"] = self.model
        if self.usage is not None:
            doc["usage"] = self.usage
        return doc

    def classify(self) -> Classification:
        """Classify the stream as a whole (errors, malformed events, truncation, then the answer)."""
        if self.error is not None:
            return classify_error_doc(self.error, status=200)
        if self.problem is not None:
            return malformed(self.problem)
        if not self.done and self.finish_reason is None:
            return malformed("stream ended before [DONE] and without a finish_reason")
        return classify_completion(self.document(), status=200)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One attempt: its classification and timings (seconds)."""

    classification: Classification
    latency_s: float
    ttft_s: float | None = None


async def read_capped(response: httpx.Response, limit: int = MAX_REPLY_BYTES) -> bytes | str:
    """The body (content-decoded), or why it was refused: a Content-Length that is not a number in
    0..`limit`, or more than `limit` bytes actually sent."""
    declared = response.headers.get("content-length")
    if (
        declared is not None
        and wire_int(declared, hi=limit) is None
        and not response.headers.get("content-encoding")
    ):
        return f"Content-Length {raw(declared)} out of range 0..{limit}"
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            return f"reply larger than {limit} bytes"
        chunks.append(chunk)
    return b"".join(chunks)


async def _unary(client: httpx.AsyncClient, url: str, payload: bytes, headers: Mapping[str, str]) -> Attempt:
    start = time.perf_counter()
    async with client.stream("POST", url, content=payload, headers=headers) as response:
        body = await read_capped(response)
    latency = time.perf_counter() - start
    if isinstance(body, str):
        return Attempt(malformed(body, status=valid_status(response.status_code)), latency)
    return Attempt(classify(response.status_code, response.headers, body), latency)


async def _streamed(
    client: httpx.AsyncClient, url: str, payload: bytes, headers: Mapping[str, str]
) -> Attempt:
    start = time.perf_counter()
    ttft: float | None = None
    async with client.stream("POST", url, content=payload, headers=headers) as response:
        ctype = response.headers.get("content-type", "")
        if response.status_code != 200 or "event-stream" not in ctype:
            # Errors before the first chunk (and servers that ignore `stream`) answer a plain body.
            body = await read_capped(response)
            if isinstance(body, str):
                return Attempt(
                    malformed(body, status=valid_status(response.status_code)), time.perf_counter() - start
                )
            return Attempt(
                classify(response.status_code, response.headers, body), time.perf_counter() - start
            )
        assembler = StreamAssembler()
        async for line in capped_lines(response, MAX_REPLY_BYTES):
            if line is None:
                return Attempt(
                    malformed(f"stream larger than {MAX_REPLY_BYTES} bytes"), time.perf_counter() - start
                )
            if assembler.feed_line(line) and ttft is None:
                ttft = time.perf_counter() - start
        assembler.close()
    return Attempt(assembler.classify(), time.perf_counter() - start, ttft)


async def capped_lines(response: httpx.Response, limit: int) -> AsyncIterator[str | None]:
    """The lines of a streamed body (LF or CRLF), decoded as UTF-8; a final None when more than `limit`
    bytes arrive (a line is buffered whole, so a server that never sends a newline is bounded too)."""
    pending: list[bytes] = []
    total = 0
    async for chunk in response.aiter_bytes():
        total += len(chunk)
        if total > limit:
            yield None
            return
        while True:
            cut = chunk.find(b"\n")
            if cut < 0:
                if chunk:
                    pending.append(chunk)
                break
            pending.append(chunk[:cut])
            yield b"".join(pending).rstrip(b"\r").decode("utf-8", "replace")
            pending = []
            chunk = chunk[cut + 1 :]
    if pending:
        yield b"".join(pending).rstrip(b"\r").decode("utf-8", "replace")


async def send_attempt(
    client: httpx.AsyncClient,
    url: str,
    payload: bytes,
    *,
    headers: Mapping[str, str],
    stream: bool,
    timeout: float | None,
) -> Attempt:
    """POST `payload` once and classify the result; never raises for network or HTTP failures."""
    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout):
            if stream:
                return await _streamed(client, url, payload, headers)
            return await _unary(client, url, payload, headers)
    except (httpx.HTTPError, OSError, TimeoutError) as exc:
        if isinstance(exc, TimeoutError) and not isinstance(exc, httpx.TimeoutException) and timeout:
            cls = Classification(
                Outcome.TIMEOUT, transient=True, server_message=f"no answer within {timeout:g} s"
            )
        else:
            cls = classify_exception(exc)
        return Attempt(cls, time.perf_counter() - start)
