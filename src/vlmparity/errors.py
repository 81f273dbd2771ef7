"""Errors a user can cause: each ends as one clear line on stderr and a non-zero exit."""

from __future__ import annotations


class VlmparityError(Exception):
    """A problem the user can fix. `str(err)` is the one line shown; `hint` says what to do."""

    exit_code: int = 3  # data, endpoint or infrastructure problem (see README "Exit codes")

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def one_line(self) -> str:
        text = self.message.strip().replace("\n", " ")
        if self.hint:
            text = f"{text} ({self.hint.strip()})"
        return text


class DataError(VlmparityError):
    """A dataset that cannot be read or does not have the expected schema."""


class ConfigError(VlmparityError):
    """A malformed configuration file or option."""

    exit_code = 4


class EndpointError(VlmparityError):
    """An endpoint that cannot be evaluated: dead port, wrong path, wrong model, not OpenAI-compatible."""
