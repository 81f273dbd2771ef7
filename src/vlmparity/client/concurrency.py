"""How many requests to keep in flight against one endpoint, and when to hold off.

`AdaptiveController` is an AIMD controller driven by what each attempt returned (no clock). It starts
at 16 in flight by default (a serving engine batches continuously; every round trip spent below its
capacity is lost: bench/throughput.py measured 0.93 of C/L starting from 4, 0.96 from 16). In slow start
it grows +1 per answer (doubling per round trip) until an answer shows the first queueing (1.5x and 50 ms
above the fastest seen); then +1 per window of `limit` answers while latency stays near the lowest seen
and nothing signals overload. It shrinks by 10 % when even the fastest recent answer shows queueing
(2x the floor and 0.25 s more), and halves on overload signals (429, 502/503/504, timeouts, resets), at
most once per window of answers, so one burst of 429s counts as one signal. `FixedController` keeps a
constant limit. `Gate` admits attempts up to the controller's limit and holds every send while a pause
(Retry-After, circuit breaker) is active.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass
from typing import Protocol

from vlmparity.client.classify import Classification, Outcome

OVERLOAD_STATUSES = frozenset({429, 502, 503, 504})
DEFAULT_INITIAL = 16  # requests in flight before the first answer (adaptive mode)


@dataclass(frozen=True, slots=True)
class LimitChange:
    """One change of the concurrency limit: after `answers` answers, to `limit`, because of `reason`."""

    answers: int
    limit: int
    reason: str


def is_overload(cls: Classification) -> bool:
    """Signals that the server (or a proxy) is saturated: back off."""
    if cls.outcome is Outcome.TIMEOUT:
        return True
    if cls.outcome is Outcome.HTTP_ERROR and cls.status in OVERLOAD_STATUSES:
        return True
    return cls.outcome is Outcome.CONNECTION and bool(cls.server_message and "reset" in cls.server_message)


class Controller(Protocol):
    """What the dispatcher needs from a concurrency controller."""

    @property
    def limit(self) -> int: ...

    @property
    def history(self) -> list[LimitChange]: ...

    def on_attempt(self, cls: Classification, latency_s: float, in_flight: int) -> None: ...


class FixedController:
    """A constant limit (the user asked for `--concurrency N`)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("concurrency must be at least 1")
        self._limit = limit
        self._history = [LimitChange(0, limit, "fixed")]

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def history(self) -> list[LimitChange]:
        return list(self._history)

    def on_attempt(self, cls: Classification, latency_s: float, in_flight: int) -> None:
        return None


class AdaptiveController:
    """AIMD on answers: +1 per answer in slow start, +1/limit after; ×`decrease` on overload."""

    def __init__(
        self,
        *,
        initial: int = 4,
        minimum: int = 1,
        maximum: int = 64,
        decrease: float = 0.5,
        latency_tolerance: float = 2.0,
        latency_slack_s: float = 0.25,
        slow_start_exit: float = 1.5,
        slow_start_slack_s: float = 0.05,
        floor_window: int = 200,
    ) -> None:
        if not 1 <= minimum <= initial <= maximum:
            raise ValueError("need 1 <= minimum <= initial <= maximum")
        self.minimum = minimum
        self.maximum = maximum
        self.decrease = decrease
        self.latency_tolerance = latency_tolerance
        self.latency_slack_s = latency_slack_s
        self.slow_start_exit = slow_start_exit
        self.slow_start_slack_s = slow_start_slack_s
        self._limit = float(initial)
        self._slow_start = True
        self._answers = 0
        self._hold_until = 0  # no further decrease before this many answers (one signal per window)
        self._recent: deque[float] = deque(maxlen=floor_window)
        self._history: list[LimitChange] = [LimitChange(0, initial, "start")]

    @property
    def limit(self) -> int:
        return int(self._limit)

    @property
    def history(self) -> list[LimitChange]:
        return list(self._history)

    @property
    def latency_floor_s(self) -> float | None:
        """Lowest successful latency among the recent answers (the unloaded service time)."""
        return min(self._recent) if self._recent else None

    def _set(self, value: float, reason: str) -> None:
        before = self.limit
        self._limit = min(float(self.maximum), max(float(self.minimum), value))
        if self.limit != before:
            self._history.append(LimitChange(self._answers, self.limit, reason))

    def on_attempt(self, cls: Classification, latency_s: float, in_flight: int) -> None:
        """Update the limit from one finished attempt; `in_flight` counts it as still in flight."""
        self._answers += 1
        if is_overload(cls):
            if self._answers >= self._hold_until:
                self._slow_start = False
                reason = f"HTTP {cls.status}" if cls.outcome is Outcome.HTTP_ERROR else cls.outcome.value
                self._set(self._limit * self.decrease, f"overload: {reason}")
                self._hold_until = self._answers + max(in_flight, self.limit)
            return
        if not cls.is_answer:
            return  # permanent errors and plain failures say nothing about load
        self._recent.append(latency_s)
        floor = min(self._recent)
        threshold = max(floor * self.latency_tolerance, floor + self.latency_slack_s)
        if self._slow_start:
            # One slow answer ends slow start (growth is fast there, so react early).
            congested = latency_s > threshold
        else:
            # Queueing delays every request, even the quickest: compare the fastest of the last `limit`
            # answers, so answers that are slow only because they are long (MMMU's 128 tokens vs a
            # one-token yes/no) do not read as congestion.
            window = itertools.islice(reversed(self._recent), max(self.limit, 4))
            congested = min(window) > threshold
        if congested:
            self._slow_start = False
            if self._answers >= self._hold_until:
                self._set(self._limit * 0.9, "latency above floor")
                self._hold_until = self._answers + self.limit
            return
        if in_flight < self.limit * 0.5:
            return  # the limit is not what is holding throughput back: do not grow blindly
        if self._slow_start:
            # The first sign of queueing (well below the congestion threshold) ends the doubling per round
            # trip: answers lag the limit by a round trip, so doubling until the threshold overshoots it.
            if latency_s > max(floor * self.slow_start_exit, floor + self.slow_start_slack_s):
                self._slow_start = False
                self._history.append(LimitChange(self._answers, self.limit, "slow start ends: queueing"))
                return
            self._set(self._limit + 1.0, "slow start")
        else:
            self._set(self._limit + 1.0 / max(self._limit, 1.0), "additive increase")


class Gate:
    """Admits attempts while fewer than `limit` are in flight and no pause is active.

    Single event loop, no lock needed: the check and the increment in `acquire` run without an await
    between them.
    """

    def __init__(self, controller: Controller) -> None:
        self.controller = controller
        self.in_flight = 0
        self.paused_until = 0.0  # time.monotonic()
        self.pauses = 0
        self.pause_reasons: list[str] = []
        self.cap: int | None = None  # a temporary ceiling below the controller's limit (circuit breaker)
        self._waiters: list[asyncio.Future[None]] = []

    def _now(self) -> float:
        return time.monotonic()  # not the loop's clock: a progress bar may poll from another thread

    @property
    def limit(self) -> int:
        """The effective limit: the controller's, lowered by `cap` when set."""
        limit = self.controller.limit
        return limit if self.cap is None else min(limit, self.cap)

    @property
    def paused(self) -> bool:
        return self.paused_until > self._now()

    async def acquire(self) -> None:
        """Wait for a free slot outside any pause, then take it."""
        while True:
            wait = self.paused_until - self._now()
            if wait > 0:
                await asyncio.sleep(wait)  # pauses only ever extend: re-check after sleeping
                continue
            if self.in_flight < self.limit:
                self.in_flight += 1
                return
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)

    def release(self) -> None:
        """Give a slot back."""
        self.in_flight -= 1
        self.wake()

    def wake(self) -> None:
        """Let every waiter re-check (a slot was freed or the limit changed)."""
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def pause(self, seconds: float, reason: str) -> None:
        """Hold all new sends for `seconds` (extends, never shortens, a running pause)."""
        until = self._now() + max(0.0, seconds)
        if until > self.paused_until:
            self.paused_until = until
            self.pauses += 1
            self.pause_reasons.append(reason)
