"""Classify one HTTP exchange with an OpenAI-compatible chat endpoint into an outcome.

`classify(status, headers, body, exc)` is a pure function: it takes what came back (or the exception
raised instead) and returns a `Classification` — the outcome class (`ok | http_error | timeout |
connection | empty | length | unsupported`), whether retrying can help (`transient`), the server's own
message extracted from any error shape (vLLM nested and flat, OVMS flat string with or without the
MediaPipe prefix, FastAPI `detail`, HTML pages, plain text), `Retry-After`, the image limit of a
"too many images" 400, and for answers the text, finish reason and token usage.
"""

from __future__ import annotations

import email.utils
import html
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx
import orjson

MESSAGE_MAX_CHARS = 500


class Outcome(StrEnum):
    """How one sample ended on one endpoint (values are what the store and `Answer.outcome` hold)."""

    OK = "ok"
    HTTP_ERROR = "http_error"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    EMPTY = "empty"
    LENGTH = "length"
    UNSUPPORTED = "unsupported"


# Statuses that say "try again later" rather than "this request is wrong".
_TRANSIENT_4XX = frozenset({408, 429})

# vLLM: current "... in one prompt." (+ a --limit-mm-per-prompt hint) and V0-era "... in one request.".
_IMAGE_LIMIT_RE = re.compile(r"At most (\d+) image\(s\) may be provided in one (?:prompt|request)")
# OVMS text-only (LM) servable given an image: no image at all is accepted.
_TEXT_ONLY_RE = re.compile(r"supports only text input, but image_url has been provided")
# OVMS wraps calculator errors: 'Mediapipe execution failed. MP status - INVALID_ARGUMENT:
# CalculatorGraph::Run() failed: \nCalculator::Process() for node "X" failed: <message>'.
_MEDIAPIPE_TAIL_RE = re.compile(r'Calculator::Process\(\) for node "[^"]*" failed: ?(.*)\Z', re.S)
_TITLE_RE = re.compile(rb"<title[^>]*>(.*?)</title>", re.I | re.S)
_TAG_RE = re.compile(r"<[^>]+>")
_SCRIPT_RE = re.compile(r"<(script|style)[^>]*>.*?</\1>", re.I | re.S)


@dataclass(frozen=True, slots=True)
class Classification:
    """What one attempt amounts to; `text` is kept for `length` (it is still an answer)."""

    outcome: Outcome
    transient: bool = False
    status: int | None = None
    server_message: str | None = None
    retry_after_s: float | None = None
    image_limit: int | None = None
    text: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    response: dict[str, Any] | None = None  # the parsed JSON body (answers and JSON errors)

    @property
    def is_answer(self) -> bool:
        """True for outcomes that carry the model's answer (ok, empty, length)."""
        return self.outcome in (Outcome.OK, Outcome.EMPTY, Outcome.LENGTH)


def is_transient_status(status: int) -> bool:
    """5xx, 408 and 429 are worth retrying; other 4xx are the request's fault and will fail again."""
    return status >= 500 or status in _TRANSIENT_4XX


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/invalid."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if seconds != seconds:  # NaN
        return None
    return max(0.0, seconds)


def image_limit_from_message(message: str | None) -> int | None:
    """N from vLLM's "At most N image(s) may be provided in one prompt/request."; 0 for text-only OVMS."""
    if not message:
        return None
    match = _IMAGE_LIMIT_RE.search(message)
    if match:
        return int(match.group(1))
    if _TEXT_ONLY_RE.search(message):
        return 0
    return None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX_CHARS else text[: MESSAGE_MAX_CHARS - 1] + "…"


def _ovms_tail(message: str) -> str:
    """Drop OVMS's MediaPipe wrapper and keep the calculator's own message."""
    match = _MEDIAPIPE_TAIL_RE.search(message)
    return match.group(1) if match and match.group(1).strip() else message


def message_from_json(doc: Any) -> str | None:
    """The server's message from a JSON error body of any known shape, or None."""
    if isinstance(doc, str):
        return _ovms_tail(doc)
    if not isinstance(doc, dict):
        return None
    err = doc.get("error")
    if isinstance(err, str):  # OVMS: {"error": "<string>"}
        return _ovms_tail(err)
    if isinstance(err, dict):  # vLLM >= 0.10.1 / OpenAI: {"error": {"message": ...}}
        msg = err.get("message")
        if isinstance(msg, str):
            return _ovms_tail(msg)
        if msg is not None:
            return str(msg)
    msg = doc.get("message")
    if isinstance(msg, str):  # vLLM < 0.10.1, SGLang: {"object": "error", "message": ...}
        return msg
    detail = doc.get("detail")  # FastAPI (unknown route, validation)
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list) and detail:
        parts = []
        for item in detail:
            if isinstance(item, dict) and "msg" in item:
                loc = ".".join(str(x) for x in item.get("loc", ()))
                parts.append(f"{loc}: {item['msg']}" if loc else str(item["msg"]))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return None


def message_from_html(body: bytes) -> str:
    """The <title>, else the first visible text, of an HTML page (proxy error pages)."""
    match = _TITLE_RE.search(body)
    if match:
        title = html.unescape(match.group(1).decode("utf-8", "replace")).strip()
        if title:
            return title
    text = _SCRIPT_RE.sub(" ", body.decode("utf-8", "replace"))
    text = html.unescape(_TAG_RE.sub(" ", text))
    return " ".join(text.split())[:200] or "HTML page"


def looks_like_html(headers: Mapping[str, str] | None, body: bytes) -> bool:
    """True when the body is an HTML page rather than JSON."""
    ctype = _header(headers, "content-type") or ""
    if "html" in ctype.lower():
        return True
    head = body[:256].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<h1", b"<center"))


def server_message(headers: Mapping[str, str] | None, body: bytes | None) -> str | None:
    """The server's message from any error body: JSON of any shape, HTML, or plain text."""
    if not body or not body.strip():
        return None
    if looks_like_html(headers, body):
        return _clip(message_from_html(body))
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _clip(body.decode("utf-8", "replace"))
    msg = message_from_json(doc)
    return _clip(msg) if msg is not None else _clip(body.decode("utf-8", "replace"))


def _header(headers: Mapping[str, str] | None, name: str) -> str | None:
    if headers is None:
        return None
    value = headers.get(name)
    if value is None and not isinstance(headers, httpx.Headers):
        for key, val in headers.items():
            if key.lower() == name:
                return val
    return value


def _error_code(doc: Any) -> int | None:
    """The HTTP-like code inside an error object (vLLM nested/flat), if any."""
    if not isinstance(doc, dict):
        return None
    err = doc.get("error")
    code = err.get("code") if isinstance(err, dict) else doc.get("code")
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.isdigit():
        return int(code)
    return None


def classify_error_doc(doc: Any, *, status: int | None) -> Classification:
    """An error object (from a non-200 body or a mid-stream `data: {"error": ...}`)."""
    message = message_from_json(doc)
    message = _clip(message) if message is not None else None
    limit = image_limit_from_message(message)
    if limit is not None:
        return Classification(
            Outcome.UNSUPPORTED, status=status, server_message=message, image_limit=limit, response=doc
        )
    code = status if status is not None and status != 200 else _error_code(doc)
    # A mid-stream error without a code cannot be judged: retrying is bounded, so err on retrying.
    transient = True if code is None else is_transient_status(code)
    return Classification(
        Outcome.HTTP_ERROR,
        transient=transient,
        status=status,
        server_message=message,
        response=doc if isinstance(doc, dict) else None,
    )


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def classify_completion(doc: Any, *, status: int | None = 200) -> Classification:
    """A 200 chat.completion document (unary, or assembled from a stream)."""
    if not isinstance(doc, dict):
        return Classification(
            Outcome.HTTP_ERROR,
            transient=True,
            status=status,
            server_message=f"unexpected JSON in response: {type(doc).__name__}, not an object",
        )
    if "error" in doc and not doc.get("choices"):
        return classify_error_doc(doc, status=status)
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        return Classification(
            Outcome.HTTP_ERROR,
            transient=True,
            status=status,
            server_message="response has no choices",
            response=doc,
        )
    choice = choices[0]
    message = choice.get("message") or choice.get("delta") or {}
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, list):  # some servers return content parts
        content = "".join(
            part.get("text", "") for part in content if isinstance(part, dict) and part.get("type") == "text"
        )
    text = content if isinstance(content, str) else None
    finish = choice.get("finish_reason")
    finish = finish if isinstance(finish, str) else None
    raw_usage = doc.get("usage")
    usage: dict[str, Any] = raw_usage if isinstance(raw_usage, dict) else {}
    prompt_tokens = _int_or_none(usage.get("prompt_tokens"))
    completion_tokens = _int_or_none(usage.get("completion_tokens"))
    if finish == "length":
        outcome = Outcome.LENGTH
    elif text is None or not text.strip():
        outcome = Outcome.EMPTY
    else:
        outcome = Outcome.OK
    return Classification(
        outcome,
        status=status,
        text=text,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        response=doc,
    )


def describe_exception(exc: BaseException) -> str:
    """A short, key-free description of a transport exception."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        names: dict[type[BaseException], str] = {
            httpx.ConnectTimeout: "connect timeout",
            httpx.ReadTimeout: "read timeout",
            httpx.WriteTimeout: "write timeout",
            httpx.PoolTimeout: "connection pool timeout",
        }
        return names.get(type(exc), "timeout")
    chain = _exception_chain(exc)
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return "connection refused"
    if any(isinstance(e, ConnectionResetError) for e in chain):
        return "connection reset by peer"
    gai = next((e for e in chain if isinstance(e, socket.gaierror)), None)
    if gai is not None:
        return f"cannot resolve host ({gai.strerror or gai})"
    text = str(exc).strip()
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if "reset" in low:
        return "connection reset by peer"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"server closed the connection unexpectedly ({text or 'protocol error'})"
    if isinstance(exc, httpx.ConnectError):
        return f"cannot connect ({text or type(exc).__name__})"
    return text or type(exc).__name__


def _exception_chain(exc: BaseException) -> list[BaseException]:
    """`exc` and its causes (httpx wraps the OS error two or three levels down)."""
    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 10 and current not in chain:
        chain.append(current)
        current = current.__cause__ or current.__context__
    return chain


def classify_exception(exc: BaseException) -> Classification:
    """Timeouts and connection failures; all are transient."""
    outcome = (
        Outcome.TIMEOUT if isinstance(exc, httpx.TimeoutException | TimeoutError) else Outcome.CONNECTION
    )
    return Classification(outcome, transient=True, server_message=describe_exception(exc))


def classify(
    status: int | None,
    headers: Mapping[str, str] | None,
    body: bytes | None,
    exc: BaseException | None = None,
) -> Classification:
    """Classify one unary attempt: `exc` if the request failed, else the status, headers and body."""
    if exc is not None:
        return classify_exception(exc)
    if status is None:
        return Classification(Outcome.CONNECTION, transient=True, server_message="no response")
    body = body or b""
    retry_after = parse_retry_after(_header(headers, "retry-after"))
    if status != 200:
        if looks_like_html(headers, body):
            return Classification(
                Outcome.HTTP_ERROR,
                transient=is_transient_status(status),
                status=status,
                server_message=_clip(message_from_html(body)),
                retry_after_s=retry_after,
            )
        try:
            doc = orjson.loads(body) if body.strip() else None
        except orjson.JSONDecodeError:
            doc = None
        if doc is not None:
            result = classify_error_doc(doc, status=status)
            if result.outcome is Outcome.HTTP_ERROR:
                # The HTTP status decides transience; the body's own code is only a fallback.
                return Classification(
                    Outcome.HTTP_ERROR,
                    transient=is_transient_status(status),
                    status=status,
                    server_message=result.server_message or server_message(headers, body),
                    retry_after_s=retry_after,
                    response=result.response,
                )
            return result
        return Classification(
            Outcome.HTTP_ERROR,
            transient=is_transient_status(status),
            status=status,
            server_message=server_message(headers, body) or f"HTTP {status} with empty body",
            retry_after_s=retry_after,
        )
    if looks_like_html(headers, body):
        return Classification(
            Outcome.HTTP_ERROR,
            transient=True,
            status=status,
            server_message=f"HTML instead of JSON: {_clip(message_from_html(body))}",
        )
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        what = "empty body" if not body.strip() else f"invalid or truncated JSON ({err})"
        return Classification(
            Outcome.HTTP_ERROR, transient=True, status=status, server_message=f"{what} in a 200 response"
        )
    return classify_completion(doc, status=status)
