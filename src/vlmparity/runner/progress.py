"""What a run tells its caller while it sends: the progress sink protocol (the CLI draws it with rich)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Counters:
    """One endpoint's counters at a moment of its pass. `errors`: stored failures; `connection_failures`:
    attempts that could not reach the server (a dead server's requests are left unsent for a resume, so
    they never become stored failures)."""

    done: int
    errors: int
    in_flight: int
    concurrency: int
    connection_failures: int = 0


class ProgressSink(Protocol):
    """Receives progress; the CLI draws it (rich), a library caller may pass nothing."""

    def begin(self, endpoint: str, total: int) -> None:
        """An endpoint has `total` samples to send in this pass."""

    def update(self, endpoint: str, counters: Counters) -> None:
        """Counters of one endpoint (called a few times per second)."""

    def end(self, endpoint: str) -> None:
        """An endpoint finished its pass."""

    def message(self, text: str) -> None:
        """A line worth telling the user (e.g. an image limit learned)."""


class NullProgress:
    """A progress sink that shows nothing."""

    def begin(self, endpoint: str, total: int) -> None:
        return None

    def update(self, endpoint: str, counters: Counters) -> None:
        return None

    def end(self, endpoint: str) -> None:
        return None

    def message(self, text: str) -> None:
        return None
