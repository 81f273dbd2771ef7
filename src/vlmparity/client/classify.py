"""Classify one HTTP exchange with an OpenAI-compatible chat endpoint into an outcome.

`classify(status, headers, body, exc)` is a pure function: it takes what came back (or the exception
raised instead) and returns a `Classification` — the outcome class (`ok | http_error | timeout |
connection | empty | length | unsupported | malformed`), whether retrying can help (`transient`), the server's own
message extracted from any error shape a registered backend profile declares (`vlmparity.backends`: vLLM
nested and flat, OVMS flat string with or without the MediaPipe prefix, FastAPI `detail`), HTML pages or
plain text, `Retry-After`, the image limit of a "too many images" refusal (each profile's wording), and for
answers the text, finish reason and token usage.

Every number read from a reply is range-checked where it is parsed (`wire_int`, `parse_retry_after`,
`image_limit_from_message`, `valid_status`): a value out of range (negative, above its documented bound,
NaN, infinite, not an integer) counts as absent, and the raw text is kept in `server_message` ("ignored
…") for the report. A 200 reply that is not a usable chat.completion (not JSON, HTML, no choices, a
`message` that is not an object, a `content` that is neither a string, null nor a list of parts) is
`malformed`: transient, retried, and recorded as a failure, never as an answer. `content: null` is a
valid empty answer (lmms-eval turns it into "").
"""

from __future__ import annotations

import dataclasses
import email.utils
import html
import math
import re
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import httpx
import orjson

from vlmparity.backends import backend_profiles, error_shapes
from vlmparity.client.logprobs import extract_trace
from vlmparity.tokentrace import TokenTrace

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
    MALFORMED = "malformed"


# Bounds of the numbers read from a server; outside them a value counts as absent.
MAX_TOKEN_COUNT = 10**9  # usage.*_tokens (the longest contexts are ~10^7 tokens)
MAX_IMAGE_LIMIT = 10**6  # "At most N image(s)"
MAX_RETRY_AFTER_HEADER_S = 10**9  # a Retry-After beyond this (~32 years) is nonsense, not a long wait
MAX_REPLY_BYTES = 256 * 1024 * 1024  # a reply body (after content decoding) larger than this is refused
MAX_FINISH_REASON_CHARS = 64
_MAX_DIGITS = 18  # more digits than this cannot be in any bound above (and int() stays cheap)


# Statuses that say "try again later" rather than "this request is wrong".
_TRANSIENT_4XX = frozenset({408, 429})

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
    ignored: tuple[str, ...] = ()  # out-of-range values read from the reply, raw (also in server_message)
    error_body: str | None = None  # a non-200 response's body as received (for lmms-eval's failure text)
    trace: TokenTrace | None = None  # per-token log-probabilities, when the answer carries them

    @property
    def is_answer(self) -> bool:
        """True for outcomes that carry the model's answer (ok, empty, length)."""
        return self.outcome in (Outcome.OK, Outcome.EMPTY, Outcome.LENGTH)


def is_transient_status(status: int) -> bool:
    """5xx, 408 and 429 are worth retrying; other 4xx are the request's fault and will fail again."""
    return status >= 500 or status in _TRANSIENT_4XX


def wire_int(value: Any, *, lo: int = 0, hi: int) -> int | None:
    """`value` if it is an integer in [lo, hi] (a JSON int, or a string of digits), else None.

    Booleans, floats (even 12.0), NaN, infinities, negative or huge values, and strings of more than
    `_MAX_DIGITS` digits are all "absent"."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > _MAX_DIGITS or not text.isascii() or not text.isdigit():
            return None
        value = int(text)
    if not isinstance(value, int):
        return None
    return value if lo <= value <= hi else None


def raw(value: Any, limit: int = 40) -> str:
    """A short printable form of a value read from a server (for "ignored ..." notes)."""
    text = " ".join((value if isinstance(value, str) else repr(value)).split())
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return repr(text) if isinstance(value, str) else text  # strings quoted, numbers as they came


def valid_status(status: Any) -> int | None:
    """An HTTP status code in 100..599, else None."""
    return wire_int(status, lo=100, hi=599)


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP-date); None if absent/invalid.

    Invalid: not a number nor an HTTP-date, NaN, infinite, negative, or above MAX_RETRY_AFTER_HEADER_S.
    A date in the past means 0. The dispatcher caps what it honours (RetryPolicy)."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 64:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when is None:
            return None
        try:
            seconds = max(0.0, when.timestamp() - (time.time() if now is None else now))
        except (OverflowError, ValueError, OSError):
            return None
    if not math.isfinite(seconds) or seconds < 0 or seconds > MAX_RETRY_AFTER_HEADER_S:
        return None
    return seconds


def _image_limit_match(message: str) -> tuple[bool, int | None]:
    """(a profile's image-limit wording matched, the limit it states or None when out of range)."""
    for profile in backend_profiles():
        for pattern in profile.image_limit_patterns:
            match = pattern.search(message)
            if match:
                if not pattern.groups:  # "no image at all"
                    return True, 0
                return True, wire_int(match.group(1), lo=0, hi=MAX_IMAGE_LIMIT)
    return False, None


def image_limit_from_message(message: str | None) -> int | None:
    """The limit a refusal states in any registered profile's wording (vLLM's "At most N image(s) may be
    provided in one prompt/request."; 0 for a text-only OVMS servable).

    None when absent or out of range (0..MAX_IMAGE_LIMIT): a limit that cannot be true is no limit."""
    return _image_limit_match(message)[1] if message else None


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_MAX_CHARS else text[: MESSAGE_MAX_CHARS - 1] + "…"


def _unwrap(message: str) -> str:
    for profile in backend_profiles():
        if profile.unwrap_message is not None:
            message = profile.unwrap_message(message)
    return message


def message_from_json(doc: Any) -> str | None:
    """The server's message from a JSON error body of any registered shape, or None."""
    for shape in error_shapes():
        message = shape.message(doc)
        if message is not None:
            return _unwrap(message) if shape.unwrap else message
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
    return valid_status(code)


def classify_error_doc(doc: Any, *, status: int | None) -> Classification:
    """An error object (from a non-200 body or a mid-stream `data: {"error": ...}`)."""
    message = message_from_json(doc)
    message = _clip(message) if message is not None else None
    matched, limit = _image_limit_match(message) if message else (False, None)
    if limit is None and matched:
        message = f"{message} (ignored: image limit out of range 0..{MAX_IMAGE_LIMIT})"
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


def malformed(what: str, *, status: int | None = 200) -> Classification:
    """A reply that is not a usable chat.completion: transient (retried), never an answer."""
    return Classification(
        Outcome.MALFORMED, transient=True, status=status, server_message=_clip(f"malformed reply: {what}")
    )


def _content_text(content: Any) -> tuple[str | None, str | None]:
    """(text, problem) of `message.content`: a string, null (None: an empty answer), or a list of parts
    (each an object with a string `type`; `text` parts carry a string `text`, other parts are skipped)."""
    if content is None or isinstance(content, str):
        return content, None
    if isinstance(content, list):
        texts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                return None, f"choices[0].message.content[{i}] is {type(part).__name__}, not a content part"
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    return None, f"choices[0].message.content[{i}] is a text part without a string text"
                texts.append(part["text"])
        return "".join(texts), None
    return None, f"choices[0].message.content is {type(content).__name__}, not a string"


def usage_counts(usage: Any) -> tuple[int | None, int | None, tuple[str, ...]]:
    """(prompt_tokens, completion_tokens, ignored) from a `usage` object, each range-checked."""
    if not isinstance(usage, dict):
        return None, None, ((f"usage {raw(usage)}",) if usage is not None else ())
    counts: list[int | None] = []
    ignored: list[str] = []
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        checked = wire_int(value, hi=MAX_TOKEN_COUNT) if not isinstance(value, str) else None
        if checked is None and value is not None:
            ignored.append(f"usage.{name} {raw(value)}")
        counts.append(checked)
    return counts[0], counts[1], tuple(ignored)


def _with_ignored(message: str | None, ignored: tuple[str, ...]) -> str | None:
    if not ignored:
        return message
    note = f"ignored out-of-range or invalid {', '.join(ignored)}"
    return _clip(f"{message} ({note})" if message else note)


def classify_completion(doc: Any, *, status: int | None = 200) -> Classification:
    """A 200 chat.completion document (unary, or assembled from a stream)."""
    if not isinstance(doc, dict):
        return malformed(f"JSON {type(doc).__name__}, not an object", status=status)
    if "error" in doc and not doc.get("choices"):
        return classify_error_doc(doc, status=status)
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices:
        return malformed("no choices", status=status)
    choice = choices[0]
    if not isinstance(choice, dict):
        return malformed(f"choices[0] is {type(choice).__name__}, not an object", status=status)
    message = choice.get("message", choice.get("delta"))
    if not isinstance(message, dict):
        what = "missing" if message is None else f"{type(message).__name__}, not an object"
        return malformed(f"choices[0].message is {what}", status=status)
    text, problem = _content_text(message.get("content"))
    if problem is not None:
        return malformed(problem, status=status)
    ignored: tuple[str, ...] = ()
    finish = choice.get("finish_reason")
    if finish is not None and (not isinstance(finish, str) or len(finish) > MAX_FINISH_REASON_CHARS):
        ignored += (f"finish_reason {raw(finish)}",)
        finish = None
    prompt_tokens, completion_tokens, bad_usage = usage_counts(doc.get("usage"))
    ignored += bad_usage
    if finish == "length":
        outcome = Outcome.LENGTH
    elif text is None or not text.strip():
        outcome = Outcome.EMPTY
    else:
        outcome = Outcome.OK
    return Classification(
        outcome,
        status=status,
        server_message=_with_ignored(None, ignored),
        text=text,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        response=doc,
        ignored=ignored,
        trace=extract_trace(choice),
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


ERROR_BODY_MAX_CHARS = 65536


def classify(
    status: int | None,
    headers: Mapping[str, str] | None,
    body: bytes | None,
    exc: BaseException | None = None,
) -> Classification:
    """Classify one unary attempt: `exc` if the request failed, else the status, headers and body.

    A non-200 response keeps its body as received (`error_body`, capped): the lmms-eval scoring policy
    rebuilds from it the exception text openai-python would have raised.
    """
    cls = _classify(status, headers, body, exc)
    if exc is None and status is not None and status != 200 and body:
        text = body[: ERROR_BODY_MAX_CHARS * 4].decode("utf-8", "replace")[:ERROR_BODY_MAX_CHARS]
        cls = dataclasses.replace(cls, error_body=text)
    return cls


def _classify(
    status: int | None,
    headers: Mapping[str, str] | None,
    body: bytes | None,
    exc: BaseException | None = None,
) -> Classification:
    if exc is not None:
        return classify_exception(exc)
    if status is None:
        return Classification(Outcome.CONNECTION, transient=True, server_message="no response")
    if valid_status(status) is None:
        return malformed(f"HTTP status {raw(status)} out of range 100..599", status=None)
    body = body or b""
    raw_retry = _header(headers, "retry-after")
    retry_after = parse_retry_after(raw_retry)
    ignored = (f"Retry-After {raw(raw_retry)}",) if raw_retry is not None and retry_after is None else ()
    if status != 200:
        return _with_note(_classify_error(status, headers, body, retry_after), ignored)
    if looks_like_html(headers, body):
        return malformed(f"HTML instead of JSON: {_clip(message_from_html(body))}")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        what = "empty body" if not body.strip() else f"invalid or truncated JSON ({err})"
        return malformed(f"{what} in a 200 response")
    return classify_completion(doc, status=status)


def _with_note(cls: Classification, ignored: tuple[str, ...]) -> Classification:
    if not ignored:
        return cls
    return replace(
        cls, server_message=_with_ignored(cls.server_message, ignored), ignored=cls.ignored + ignored
    )


def _classify_error(
    status: int, headers: Mapping[str, str] | None, body: bytes, retry_after: float | None
) -> Classification:
    """A non-200 reply."""
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
