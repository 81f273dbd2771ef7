"""One answer's generated tokens: log-probabilities, token texts and ids, and their compact stored form.

Shared by the client (which reads them from responses), the store (which keeps them) and `compare`
(which measures closeness); it imports nothing of the package.
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TokenTrace:
    """The generated tokens of one answer: log-probabilities, and token texts / ids when the server gave them."""

    logprobs: tuple[float, ...]
    tokens: tuple[str, ...] | None = None
    token_ids: tuple[int, ...] | None = None

    def __len__(self) -> int:
        return len(self.logprobs)

    def packed_logprobs(self) -> bytes:
        """float32 little-endian bytes (4 bytes a token; |error| < 1e-7 relative, far below any Δ reported)."""
        arr = array("f", self.logprobs)
        if arr.itemsize != 4:  # pragma: no cover - every platform Python runs on has 4-byte floats
            raise RuntimeError("float32 arrays unavailable")
        return arr.tobytes()

    def packed_ids(self) -> bytes | None:
        return None if self.token_ids is None else array("q", self.token_ids).tobytes()


def unpack_logprobs(blob: bytes) -> tuple[float, ...]:
    arr = array("f")
    arr.frombytes(blob)
    return tuple(arr)


def unpack_ids(blob: bytes | None) -> tuple[int, ...] | None:
    if blob is None:
        return None
    arr = array("q")
    arr.frombytes(blob)
    return tuple(arr)
