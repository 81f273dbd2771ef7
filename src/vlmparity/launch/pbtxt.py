"""A small protobuf text-format reader, enough to check an OVMS `graph.pbtxt` before OVMS reads it.

It parses structure only (no schema): each message becomes a dict from field name to the list of its values;
a value is a nested dict, a string (quotes removed), or the bare word (number, enum, true/false).
Extension names such as `[type.googleapis.com / mediapipe.LLMCalculatorOptions]` keep their brackets, spaces
removed.
"""

from __future__ import annotations

import re
from typing import Any

Message = dict[str, list[Any]]

_TOKEN = re.compile(
    r"""(?P<skip>\s+|\#[^\n]*)
      | (?P<ext>\[[^\]]*\])
      | (?P<str>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
      | (?P<punct>[{}<>:,;])
      | (?P<word>[A-Za-z0-9_.+\-]+)""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "'": "'", "\\": "\\"}


class PbtxtError(ValueError):
    """The text is not valid protobuf text format."""


def _tokens(text: str) -> list[tuple[str, str, int]]:
    out: list[tuple[str, str, int]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if not match:
            line = text.count("\n", 0, pos) + 1
            raise PbtxtError(f"line {line}: unexpected character {text[pos]!r}")
        kind = match.lastgroup or ""
        if kind != "skip":
            out.append((kind, match.group(), text.count("\n", 0, pos) + 1))
        pos = match.end()
    return out


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def parse(text: str) -> Message:
    """Parse protobuf text format into nested dicts; raises PbtxtError with a line number."""
    tokens = _tokens(text)
    pos = 0

    def message(closing: str | None) -> Message:
        nonlocal pos
        fields: Message = {}
        while True:
            if pos >= len(tokens):
                if closing is None:
                    return fields
                raise PbtxtError(f"missing {closing!r} at the end of the file")
            kind, value, line = tokens[pos]
            if kind == "punct" and value == closing:
                pos += 1
                return fields
            if kind not in ("word", "ext"):
                raise PbtxtError(f"line {line}: expected a field name, found {value!r}")
            name = re.sub(r"\s+", "", value)
            pos += 1
            has_colon = pos < len(tokens) and tokens[pos][1] == ":"
            if has_colon:
                pos += 1
            if pos >= len(tokens):
                raise PbtxtError(f"line {line}: field {name!r} has no value")
            kind, value, line = tokens[pos]
            if kind == "punct" and value in "{<":
                pos += 1
                item: Any = message("}" if value == "{" else ">")
            elif not has_colon:
                raise PbtxtError(f"line {line}: expected ':' after {name!r}")
            elif kind == "str":
                pos += 1
                item = _unquote(value)
                while pos < len(tokens) and tokens[pos][0] == "str":  # adjacent strings concatenate
                    item += _unquote(tokens[pos][1])
                    pos += 1
            elif kind == "word":
                pos += 1
                item = value
            else:
                raise PbtxtError(f"line {line}: field {name!r} has no value (found {value!r})")
            fields.setdefault(name, []).append(item)
            if pos < len(tokens) and tokens[pos][0] == "punct" and tokens[pos][1] in ",;":
                pos += 1

    return message(None)
