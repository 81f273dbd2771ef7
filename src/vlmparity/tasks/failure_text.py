"""The text lmms-eval 0.7.3 scores for a request that failed, rebuilt from what the store keeps.

lmms-eval's OpenAI-compatible models catch the exception of the last of `max_retries` attempts and answer
`[LMMS_EVAL_REQUEST_FAILED after {max_retries} retries] {preview}`, where `preview` is the exception's
`str()` with every newline replaced by a space, cut to 200 characters. That text is then post-processed
and parsed like any model answer (../shared/research/lmms-eval.md §4.5).

The exception is openai-python's. Its text for an HTTP error (checked in openai-python 3.51 and 3.63,
`_base_client._make_status_error_from_response`): `Error code: {status}`, followed by ` - {message}` when the
body is JSON whose designated message field is a non-empty string: `body["error"]["message"]` when
`body["error"]` is an object, else `body["message"]` when the body has no `"error"` key. So vLLM's
`{"error": {"message": "At most 1 image(s) ..."}}` gives `Error code: 400 - At most 1 image(s) ...`, and
OVMS's `{"error": "<string>"}` gives just `Error code: 400`. Older openai-python (2.x up to at least
3.22) appended the whole parsed body instead (` - {body}`, a Python dict's text, or the raw text when it was
not JSON): `OPENAI_STYLE_BODY` reproduces that. A timeout is `Request timed out.`; a connection failure
`Connection error.`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

FAILED_PREFIX = "[LMMS_EVAL_REQUEST_FAILED"
PREVIEW_CHARS = 200
DEFAULT_MAX_RETRIES = 5  # lmms-eval's `max_retries` model argument

OPENAI_STYLE_MESSAGE = "message"  # openai-python >= 3.51 (current)
OPENAI_STYLE_BODY = "body"  # openai-python 1.x, 2.x, 3.x up to at least 3.22
OPENAI_STYLES = (OPENAI_STYLE_MESSAGE, OPENAI_STYLE_BODY)

TIMEOUT_TEXT = "Request timed out."
CONNECTION_TEXT = "Connection error."


def _designated_message(doc: Any) -> str | None:
    if not isinstance(doc, Mapping):
        return None
    err = doc.get("error", doc)
    if not isinstance(err, Mapping):
        return None
    msg = err.get("message")
    return msg if isinstance(msg, str) and msg else None


def openai_exception_text(
    outcome: str,
    status: int | None,
    error_body: str | None,
    server_message: str | None = None,
    *,
    style: str = OPENAI_STYLE_MESSAGE,
) -> str:
    """`str()` of the exception openai-python raises for a stored failure."""
    if outcome == "timeout":
        return TIMEOUT_TEXT
    if outcome == "connection":
        return CONNECTION_TEXT
    if status is None:
        # Nothing came back over HTTP (a store from before schema 2 that recorded a request as not sent):
        # the closest is the reason we kept.
        return server_message or outcome
    head = f"Error code: {status}"
    text = (error_body or "").strip()
    if not text:
        return head
    try:
        doc = json.loads(text)
    except ValueError:
        return text if style == OPENAI_STYLE_BODY else head
    if style == OPENAI_STYLE_BODY:
        return f"{head} - {doc}"
    msg = _designated_message(doc)
    return f"{head} - {msg}" if msg is not None else head


def lmms_eval_failure_text(
    outcome: str,
    status: int | None,
    error_body: str | None,
    server_message: str | None = None,
    *,
    max_retries: int = DEFAULT_MAX_RETRIES,
    style: str = OPENAI_STYLE_MESSAGE,
) -> str:
    """The response text lmms-eval 0.7.3 records (and scores) for a request that failed."""
    exc = openai_exception_text(outcome, status, error_body, server_message, style=style)
    preview = exc.replace("\n", " ")[:PREVIEW_CHARS]
    return f"{FAILED_PREFIX} after {max_retries} retries] {preview}"
