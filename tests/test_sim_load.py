"""The load model: service-time formula and slot accounting (counters only, never wall-clock)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from test_sim_support import MODEL
from vlmparity.sim import AsyncSimServer, SimServer
from vlmparity.sim.config import LoadConfig
from vlmparity.sim.load import decode_seconds, prefill_seconds, service_seconds


def test_service_time_formula() -> None:
    cfg = LoadConfig(base_latency=0.5, per_image=0.25, per_token=0.01, time_scale=2.0)
    assert prefill_seconds(cfg, 2) == pytest.approx((0.5 + 0.5) * 2)  # 2.0
    assert decode_seconds(cfg, 10) == pytest.approx(0.1 * 2)  # 0.2
    assert service_seconds(cfg, 2, 10) == pytest.approx(2.2)
    assert service_seconds(LoadConfig(time_scale=0), 5, 100) == 0


def body(i: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"Request {i}?"}],
        "max_tokens": 4,
        "temperature": 0,
    }


async def fire(base_url: str, n: int) -> list[int]:
    async with httpx.AsyncClient(timeout=60) as client:
        responses = await asyncio.gather(
            *(client.post(base_url + "/chat/completions", json=body(i)) for i in range(n))
        )
    return [r.status_code for r in responses]


def test_requests_beyond_capacity_queue() -> None:
    load = {"capacity": 2, "base_latency": 0.6, "per_image": 0, "per_token": 0}  # 6 arrive well within 0.6 s
    with SimServer(load=load) as sim:
        statuses = asyncio.run(fire(sim.base_url, 6))
        stats = sim.load_stats
    assert statuses == [200] * 6
    assert stats.max_running == 2  # never more than the capacity at once...
    assert stats.max_waiting >= 1  # ...so the others queued
    assert stats.served == 6 and stats.running == 0 and stats.waiting == 0
    assert stats.busy_s > 0  # slot time is accounted (its size is a clock: benchmarks read it)


def test_within_capacity_nothing_queues() -> None:
    load = {"capacity": 8, "base_latency": 0.05, "per_image": 0, "per_token": 0}
    with SimServer(load=load) as sim:
        assert asyncio.run(fire(sim.base_url, 4)) == [200] * 4
        assert sim.load_stats.max_waiting == 0


def test_async_api_in_a_running_loop() -> None:
    async def main() -> tuple[list[int], int]:
        async with AsyncSimServer(load={"time_scale": 0}, personality="ovms") as sim:
            assert sim.base_url.endswith("/v3")
            statuses = await fire(sim.base_url, 5)
            return statuses, len(sim.log)

    statuses, logged = asyncio.run(main())
    assert statuses == [200] * 5 and logged == 5
