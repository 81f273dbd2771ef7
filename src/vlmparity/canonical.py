"""The canonical request hash: the one definition both the evaluation path and the simulator use.

A leaf module (it imports nothing of vlmparity) so that the simulator, which must stay independent of the
evaluation path, and `tasks.base`, which builds the requests, hash a body the same way without importing
each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = ["canonical_json", "request_hash"]


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes (sorted keys, no spaces) used for hashing."""
    return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)


def request_hash(body: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `body` without its `model` field."""
    return hashlib.sha256(canonical_json({k: v for k, v in body.items() if k != "model"})).hexdigest()
