"""Load model: continuous batching as a pool of `capacity` sequence slots with FIFO queueing.

A request holds one slot for its service time: prefill (base + per_image * images) then decode
(per_token * tokens), all scaled by `time_scale`. Throughput therefore grows with client concurrency up
to `capacity / service_time` and latency grows past it. `time_scale == 0` serves instantly (benchmarks of
the client itself).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from vlmparity.sim.config import LoadConfig


def prefill_seconds(cfg: LoadConfig, n_images: int) -> float:
    """Time to first token for a request with `n_images` images."""
    return (cfg.base_latency + cfg.per_image * n_images) * cfg.time_scale


def decode_seconds(cfg: LoadConfig, tokens: int) -> float:
    """Time to generate `tokens` output tokens."""
    return cfg.per_token * tokens * cfg.time_scale


def service_seconds(cfg: LoadConfig, n_images: int, tokens: int) -> float:
    """Total time a request occupies a slot."""
    return prefill_seconds(cfg, n_images) + decode_seconds(cfg, tokens)


@dataclass
class LoadStats:
    """Counters of the load model (what tests assert on), and the slot time used (for benchmarks)."""

    running: int = 0
    waiting: int = 0
    max_running: int = 0
    max_waiting: int = 0
    served: int = 0
    # Seconds of slot occupancy summed over requests: over (capacity x a period) it is the utilisation
    # in that period, i.e. how well the client kept the server busy (a clock: never asserted on).
    busy_s: float = 0.0


class LoadModel:
    """Slots for concurrent sequences; `async with load.slot():` waits in FIFO order for a free one."""

    def __init__(self, cfg: LoadConfig) -> None:
        self.cfg = cfg
        self.stats = LoadStats()
        self._sem = asyncio.Semaphore(cfg.capacity)  # asyncio wakes waiters in FIFO order

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        stats = self.stats
        if self.cfg.zero_latency:
            stats.served += 1
            yield
            return
        if self._sem.locked():  # all slots busy (or others already queued): this request queues
            stats.waiting += 1
            stats.max_waiting = max(stats.max_waiting, stats.waiting)
            try:
                await self._sem.acquire()
            finally:
                stats.waiting -= 1
        else:
            await self._sem.acquire()
        stats.running += 1
        stats.max_running = max(stats.max_running, stats.running)
        held = time.perf_counter()
        try:
            yield
        finally:
            stats.busy_s += time.perf_counter() - held
            stats.running -= 1
            stats.served += 1
            self._sem.release()

    async def prefill(self, n_images: int) -> None:
        """Sleep for the prefill time (no-op in zero-latency mode)."""
        delay = prefill_seconds(self.cfg, n_images)
        if delay > 0:
            await asyncio.sleep(delay)

    async def decode(self, tokens: int) -> None:
        """Sleep for the decode time of `tokens` tokens."""
        delay = decode_seconds(self.cfg, tokens)
        if delay > 0:
            await asyncio.sleep(delay)
