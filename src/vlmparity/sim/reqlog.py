"""Per-request log of what the simulator received and did (in memory, optionally appended as JSONL)."""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, Any

import orjson

MAX_ENTRIES = 200_000  # newest entries kept in memory (a long CLI session must not grow forever)


@dataclass
class LogEntry:
    """One request as the simulator saw it."""

    time: float  # unix seconds at arrival
    method: str
    path: str
    status: int = 0  # HTTP status sent (0 when the connection was reset or cut)
    outcome: str = "ok"  # ok | error | fault | not_ready
    body_hash: str | None = None  # sha256 of the canonical body without `model` (vlmparity.tasks.base)
    model: str | None = None
    image_count: int = 0
    stream: bool = False
    fault: str | None = None  # injected fault kind
    attempt: int = 0  # how many times this body had been seen before (0 = first arrival)
    error: str | None = None  # the error message sent
    sample_id: str | None = None  # recognised sample (MME "<question_id>::<question>", MMMU id)
    task: str | None = None
    answer: str | None = None
    correct: bool | None = None  # whether the simulator meant the answer to be right
    style: str | None = None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    max_tokens: int | None = None
    probe: bool = False  # vlmparity's start-up logprobs probe (header X-Vlmparity-Probe), not a question

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RequestLog:
    """Thread-safe list of `LogEntry`; with `path`, one JSON line per finished request is appended there."""

    def __init__(self, path: Path | None = None, keep: int = MAX_ENTRIES) -> None:
        self.entries: deque[LogEntry] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._file: IO[bytes] | None = None
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                self._file = path.open("ab")
            except OSError as exc:  # before the server starts: one line, not a dead server thread
                from vlmparity.errors import DataError

                raise DataError(
                    f"cannot write the simulator's request log {path}: {exc.strerror or exc}",
                    hint="choose another --log-file (log_file)",
                ) from exc

    def add(self, entry: LogEntry) -> None:
        """Record a request on arrival (visible in memory at once, filled in as it is handled)."""
        with self._lock:
            self.entries.append(entry)

    def finish(self, entry: LogEntry) -> None:
        """A request is done: append its final state to the JSONL file, if any."""
        with self._lock:
            if self._file is not None:
                self._file.write(orjson.dumps(entry.to_dict()) + b"\n")
                self._file.flush()

    def snapshot(self) -> list[LogEntry]:
        with self._lock:
            return list(self.entries)

    def clear(self) -> None:
        with self._lock:
            self.entries.clear()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file = None
