"""What a run tells its caller while it sends: the progress sink protocol (the CLI draws it with rich)."""

from __future__ import annotations

from typing import Protocol


class ProgressSink(Protocol):
    """Receives progress; the CLI draws it (rich), a library caller may pass nothing."""

    def begin(self, endpoint: str, total: int) -> None:
        """An endpoint has `total` samples to send in this pass."""

    def update(
        self,
        endpoint: str,
        *,
        done: int,
        errors: int,
        in_flight: int,
        concurrency: int,
        connection_failures: int = 0,
    ) -> None:
        """Counters of one endpoint (called a few times per second). `errors`: stored failures;
        `connection_failures`: attempts that could not reach the server (a dead server's requests are
        left unsent for a resume, so they never become stored failures)."""

    def end(self, endpoint: str) -> None:
        """An endpoint finished its pass."""

    def message(self, text: str) -> None:
        """A line worth telling the user (e.g. an image limit learned)."""


class NullProgress:
    """A progress sink that shows nothing."""

    def begin(self, endpoint: str, total: int) -> None:
        return None

    def update(
        self,
        endpoint: str,
        *,
        done: int,
        errors: int,
        in_flight: int,
        concurrency: int,
        connection_failures: int = 0,
    ) -> None:
        return None

    def end(self, endpoint: str) -> None:
        return None

    def message(self, text: str) -> None:
        return None
