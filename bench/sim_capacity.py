"""Does the simulator's load model behave like continuous batching?

Starts a sim with capacity C and service time L, drives it with a simple async client at concurrency
1, C/2, C and 2C, and prints the measured throughput next to the configured capacity C/L. Expected: the
throughput grows linearly up to C/L (ratio ~1 at concurrency C) and stays there at 2C while latency doubles.

    python bench/sim_capacity.py [--capacity 8] [--latency 0.25] [--seconds 4] [--personality vllm]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Any

import httpx

from vlmparity.sim import SimServer

MODEL = "llava-hf/llava-1.5-7b-hf"


def body(i: int) -> dict[str, Any]:
    question = f"Request {i}: is this a test? Answer yes or no."
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 8,
        "temperature": 0,
    }


async def drive(base_url: str, concurrency: int, seconds: float) -> tuple[int, float, list[float]]:
    """Keep `concurrency` requests in flight for `seconds`; returns (done, elapsed, latencies)."""
    latencies: list[float] = []
    counter = iter(range(10**9))
    deadline = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:

        async def worker() -> None:
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                response = await client.post(base_url + "/chat/completions", json=body(next(counter)))
                response.raise_for_status()
                latencies.append(time.perf_counter() - sent)

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return len(latencies), elapsed, latencies


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.25, help="service time L in seconds")
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each concurrency level")
    parser.add_argument("--personality", choices=["vllm", "ovms"], default="vllm")
    args = parser.parse_args()
    capacity, latency = args.capacity, args.latency
    load = {
        "capacity": capacity,
        "base_latency": latency,
        "per_image": 0.0,
        "per_token": 0.0,
        "time_scale": 1.0,
    }
    levels = sorted({1, max(1, capacity // 2), capacity, 2 * capacity})
    ceiling = capacity / latency
    print(
        f"sim {args.personality}: capacity C={capacity}, service time L={latency:.3f}s -> C/L = {ceiling:.1f} req/s"
    )
    print(
        f"{'concurrency':>11} {'requests':>9} {'req/s':>8} {'expected':>9} {'ratio to C/L':>13} {'p50 latency':>12}"
    )
    with SimServer(personality=args.personality, load=load) as sim:
        for level in levels:
            done, elapsed, latencies = asyncio.run(drive(sim.base_url, level, args.seconds))
            rate = done / elapsed
            expected = min(level, capacity) / latency
            p50 = statistics.median(latencies)
            print(
                f"{level:>11} {done:>9} {rate:>8.1f} {expected:>9.1f} {rate / ceiling:>13.2f} {p50:>11.3f}s"
            )
        stats = sim.load_stats
    print(
        f"load model: max running {stats.max_running} (capacity {capacity}), max queued {stats.max_waiting}"
    )


if __name__ == "__main__":
    main()
