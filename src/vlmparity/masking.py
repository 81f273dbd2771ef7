"""The one place secrets are masked: URLs, server messages, answers, anything printed or written.

A leaf module (it imports nothing of vlmparity), so every layer can use it.

- `mask_url(url)`: user info (`user:password@` → `user:***@`, a user-only token `token@` → `***@`) and
  the values of query (and fragment) parameters named like a secret (`SECRET_PARAM`: key, token, secret,
  password, auth, signature, credential, session, case-insensitive, anywhere in the name) become `***`.
  Never raises, whatever the string.
- `mask_urls(text)`: `mask_url` applied to every `scheme://…` inside a text.
- `scrub_message(text, secrets)`: for server messages and error lines: URLs masked, `Bearer`/`Basic`
  credentials and `key=value`-style secrets masked, and every known secret value replaced by `***`.
- `scrub_answer(text, secrets)`: for model answers (they are scored): only known secret values of at least
  `MIN_ANSWER_SECRET_CHARS` characters are replaced, so ordinary words are never touched.
- `remember(*values)` / `remember_url(url)`: the process-wide set of known secrets (API keys, URL
  passwords and tokens), used by the scrubbers on top of the `secrets` they are given; values shorter than
  `MIN_SECRET_CHARS` cannot be told apart from ordinary text and are not scrubbed from free text (they are
  still masked inside URLs and command lines).

The request to the server still uses the real credentials: masking applies only to what is shown or kept.
"""

from __future__ import annotations

import re
import threading
import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "***"
MIN_SECRET_CHARS = 6  # shorter ones ("test", "EMPTY") are ordinary words: not searched for in text
MIN_ANSWER_SECRET_CHARS = 8  # answers are scored: only unmistakable secrets are replaced there

SECRET_PARAM = re.compile(r"key|token|secret|passw|pwd|auth|signature|^sig$|credential|session", re.I)
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s\"'<>`]+")
_SCHEME_NETLOC = re.compile(r"\A([A-Za-z][A-Za-z0-9+.-]*:)?//([^/?#]*)(.*)\Z", re.S)
_AUTH_SCHEME = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=:-]{4,})")
# `api_key=…`, `"token": "…"`, `password: …` inside a message (not in answers: there it may be prose).
_KEY_VALUE = re.compile(
    r"(?i)\b([\w-]*(?:key|token|secret|password|passwd|pwd|credentials?))\b(\"?'?\s*[:=]\s*\"?'?)"
    r"([^\s\"'&,;}{)(\]\[]{4,})"
)

_known: set[str] = set()
_lock = threading.Lock()


def remember(*values: str | None) -> None:
    """Add secret values (API keys, passwords) that must never be printed or written."""
    with _lock:
        for value in values:
            if value:
                _known.add(value)
                unquoted = urllib.parse.unquote(value)
                if unquoted != value:
                    _known.add(unquoted)


def remember_url(url: str | None) -> None:
    """Remember the secrets inside a URL (its password, user-only token, secret query values)."""
    if url:
        remember(*url_secrets(url))


def known() -> tuple[str, ...]:
    """Every remembered secret."""
    with _lock:
        return tuple(_known)


def forget_all() -> None:
    """Drop every remembered secret (tests)."""
    with _lock:
        _known.clear()


def _split(url: str) -> tuple[str, str, str, str, str, str] | None:
    """(prefix, userinfo, hostport, path, query, fragment) of `scheme://…`, or None when not such a URL."""
    match = _SCHEME_NETLOC.match(url)
    if match is None:
        return None
    prefix = (match.group(1) or "") + "//"
    netloc, rest = match.group(2), match.group(3)
    userinfo, at, hostport = netloc.rpartition("@")
    if not at:
        userinfo, hostport = "", netloc
    rest, _, fragment = rest.partition("#")
    path, _, query = rest.partition("?")
    has_q = "?" in rest
    has_f = "#" in match.group(3)
    return (
        prefix,
        userinfo + ("@" if at else ""),
        hostport,
        path,
        ("?" + query) if has_q else "",
        ("#" + fragment) if has_f else "",
    )


def _mask_params(part: str) -> str:
    """`?a=1&api_key=X` → `?a=1&api_key=***` (the leading `?`/`#` kept)."""
    if not part:
        return part
    lead, body = part[0], part[1:]
    out = []
    for item in re.split(r"([&;])", body):
        name, eq, value = item.partition("=")
        if eq and value and SECRET_PARAM.search(urllib.parse.unquote_plus(name)):
            out.append(f"{name}={MASK}")
        else:
            out.append(item)
    return lead + "".join(out)


def mask_url(url: str) -> str:
    """The URL with its credentials masked (see the module doc); any other string is returned unchanged."""
    parts = _split(url)
    if parts is None:
        return url
    prefix, userinfo, hostport, path, query, fragment = parts
    if userinfo:
        user, colon, _ = userinfo[:-1].partition(":")
        userinfo = f"{user}:{MASK}@" if colon and user else f"{MASK}@"
    return prefix + userinfo + hostport + path + _mask_params(query) + _mask_params(fragment)


def url_secrets(url: str) -> list[str]:
    """The secret values inside a URL: password, user-only token, values of secret-named parameters."""
    parts = _split(url)
    if parts is None:
        return []
    _, userinfo, _, _, query, fragment = parts
    out: list[str] = []
    if userinfo:
        _user, colon, password = userinfo[:-1].partition(":")
        out.append(password if colon else userinfo[:-1])
    for part in (query, fragment):
        for item in re.split(r"[&;]", part[1:]):
            name, eq, value = item.partition("=")
            if eq and value and SECRET_PARAM.search(urllib.parse.unquote_plus(name)):
                out.append(value)
    return [s for s in out if s]


def _mask_match(match: re.Match[str]) -> str:
    url = match.group(0)
    cut = len(url.rstrip(".,:;!?)]}"))  # punctuation after a URL belongs to the sentence
    return mask_url(url[:cut]) + url[cut:]


def mask_urls(text: str) -> str:
    """Every `scheme://…` URL inside `text` masked."""
    if "://" not in text:
        return text
    return _URL.sub(_mask_match, text)


def _values(secrets: Iterable[str | None], minimum: int) -> list[str]:
    values = {s for s in (*known(), *secrets) if s and len(s) >= minimum}
    return sorted(values, key=len, reverse=True)  # longest first: a secret containing another


def _mask_value(match: re.Match[str]) -> str:
    value = match.group(3)
    cut = len(value.rstrip(".,:;!?"))  # punctuation after the value belongs to the sentence
    return f"{match.group(1)}{match.group(2)}{MASK}{value[cut:]}"


def scrub_message(text: str, secrets: Iterable[str | None] = (), *, patterns: bool = True) -> str:
    """A server message or error line with URLs, auth headers, `key=value` secrets and known secrets masked.

    `patterns=False` masks only URLs and known secrets (documents whose text must stay as it was)."""
    if not text:
        return text
    text = mask_urls(text)
    if patterns:
        text = _AUTH_SCHEME.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _KEY_VALUE.sub(_mask_value, text)
    for value in _values(secrets, MIN_SECRET_CHARS):
        text = text.replace(value, MASK)
    return text


def scrub_answer(text: str, secrets: Iterable[str | None] = ()) -> str:
    """A model answer with only known secrets of `MIN_ANSWER_SECRET_CHARS`+ characters replaced."""
    if not text:
        return text
    for value in _values(secrets, MIN_ANSWER_SECRET_CHARS):
        text = text.replace(value, MASK)
    return text


def scrub_obj(obj: Any, secrets: Iterable[str | None] = (), *, patterns: bool = True) -> Any:
    """`scrub_message` applied to every string inside dicts, lists and tuples (JSON documents)."""
    values = tuple(secrets)
    if isinstance(obj, str):
        return scrub_message(obj, values, patterns=patterns)
    if isinstance(obj, dict):
        return {k: scrub_obj(v, values, patterns=patterns) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [scrub_obj(v, values, patterns=patterns) for v in obj]
    return obj
