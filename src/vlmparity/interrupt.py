"""Ctrl-C and SIGTERM: a run ends within seconds, keeps every answer it received and says why.

`handling()` installs one handler for SIGINT and SIGTERM for the duration of a command that works for a
while (`run`, `compare --endpoint`). The first signal:

- during asynchronous work started with `run_async` (probing, sending), cancels that work: every await
  unwinds, requests in flight are abandoned, the answers already received are committed, and
  `run_async` raises `Interrupted`;
- anywhere else (loading data, scoring, writing files) raises `Interrupted` at once.

A second signal while the first is being handled raises `Interrupted` at once, wherever the program is:
the user's way out if cleaning up takes too long. `Interrupted` is a `KeyboardInterrupt`, so code that
already cleans up after Ctrl-C does so after SIGTERM too; its exit code is 128 + the signal number
(130 for SIGINT, 143 for SIGTERM), as shells report a process a signal ended.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

T = TypeVar("T")

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """The invocation was interrupted by a signal (SIGINT: Ctrl-C, SIGTERM: `kill`, a job scheduler)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)

    @property
    def name(self) -> str:
        return signal_name(self.signum)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def exit_code_of(exc: BaseException) -> int:
    """The exit code of an interruption (a plain KeyboardInterrupt is Ctrl-C: 130)."""
    return exc.exit_code if isinstance(exc, Interrupted) else 128 + signal.SIGINT


def signal_of(exc: BaseException) -> str:
    """The signal's name of an interruption ("SIGINT" for a plain KeyboardInterrupt)."""
    return exc.name if isinstance(exc, Interrupted) else "SIGINT"


class _State:
    depth = 0
    received: int | None = None
    cancel: Callable[[], None] | None = None
    previous: dict[int, Any] = {}  # noqa: RUF012 -- process-wide by nature


def _handler(signum: int, frame: object) -> None:
    first = _State.received is None
    if first:
        _State.received = signum
        if _State.cancel is not None:
            _State.cancel()  # the asynchronous work unwinds and run_async raises
            return
    raise Interrupted(_State.received or signum)


@contextmanager
def handling() -> Iterator[None]:
    """Handle SIGINT and SIGTERM as interruptions inside the block (main thread only; reentrant)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    if _State.depth == 0:
        _State.received = None
        _State.previous = {s: signal.signal(s, _handler) for s in SIGNALS}
    _State.depth += 1
    try:
        yield
    finally:
        _State.depth -= 1
        if _State.depth == 0:
            for s, previous in _State.previous.items():
                signal.signal(s, previous)
            _State.previous = {}
            _State.received = None


def received() -> int | None:
    """The signal received inside `handling()`, if any."""
    return _State.received


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(coro)`, except that a signal cancels it and then raises `Interrupted`.

    Cancelling (rather than raising inside the event loop) lets every `finally` and `async with` run:
    connections are closed, answers already received are stored.
    """

    async def main() -> T:
        task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        assert task is not None
        previous = _State.cancel

        def cancel() -> None:
            loop.call_soon_threadsafe(task.cancel)

        _State.cancel = cancel
        try:
            if _State.received is not None:  # a signal arrived just before: do not start
                raise asyncio.CancelledError
            return await coro
        finally:
            _State.cancel = previous

    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        if _State.received is not None:
            raise Interrupted(_State.received) from None
        raise
    finally:
        coro.close()  # never started (a signal before): no "coroutine was never awaited" warning
    if _State.received is not None:  # the work finished while the signal was being delivered
        raise Interrupted(_State.received)
    return result
