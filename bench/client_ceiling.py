"""How fast can the client push large chat requests? (vlmparity.client ceiling benchmark)

Starts a zero-latency aiohttp server in a subprocess (it reads each body fully and answers a fixed small
chat.completion), then sends ~1.7 MB bodies (one base64 image, like an MME request) through
`vlmparity.client.Dispatcher` at fixed concurrency 1, 8 and 32, and prints requests per second and the
client process's CPU milliseconds per request (server CPU is not counted).

    python bench/client_ceiling.py [--requests 200] [--body-mb 1.7] [--levels 1,8,32] [--bytes]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import random
import socket
import subprocess
import sys
import time
from typing import Any

ANSWER = (
    b'{"id":"x","object":"chat.completion","created":0,"model":"m","choices":[{"index":0,'
    b'"message":{"role":"assistant","content":"Yes"},"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":600,"completion_tokens":1,"total_tokens":601}}'
)


def serve(port: int) -> None:
    """The zero-latency server (runs in the subprocess)."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        return web.Response(body=ANSWER, content_type="application/json")

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_bodies(n_distinct: int, body_mb: float) -> list[dict[str, Any]]:
    rng = random.Random(0)
    raw_len = int(body_mb * 1_000_000 * 3 / 4)
    bodies = []
    for i in range(n_distinct):
        data = base64.b64encode(rng.randbytes(raw_len)).decode("ascii")
        bodies.append(
            {
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {"type": "image_url", "image_url": {"url": "data:image/png;base64," + data}},
                            {"type": "text", "text": f"Is this image {i}? Please answer yes or no."},
                        ],
                    }
                ],
                "max_tokens": 16,
                "temperature": 0.0,
                "top_p": 1.0,
                "seed": 1234,
            }
        )
    return bodies


async def measure(
    port: int, bodies: list[Any], concurrency: int, n: int
) -> tuple[float, float, dict[str, int]]:
    from vlmparity.client import BackendKind, Dispatcher, ResolvedEndpoint

    root = f"http://127.0.0.1:{port}"
    endpoint = ResolvedEndpoint(
        name="bench",
        kind=BackendKind("openai"),
        url=root,
        root_url=root,
        api_base=root + "/v1",
        chat_url=root + "/v1/chat/completions",
        model="m",
    )
    dispatcher = Dispatcher(endpoint, concurrency=concurrency)
    items = [(f"s{i}", bodies[i % len(bodies)]) for i in range(n)]

    async def on_result(result: Any) -> None:
        return None

    cpu0, wall0 = time.process_time(), time.perf_counter()
    stats = await dispatcher.run(items, on_result)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return n / wall, cpu * 1000 / n, stats.by_outcome


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--body-mb", type=float, default=1.7)
    parser.add_argument("--levels", default="1,8,32")
    parser.add_argument("--bytes", action="store_true", help="pass pre-serialised JSON bytes bodies")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    import orjson

    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        bodies: list[Any] = make_bodies(8, args.body_mb)
        if args.bytes:
            bodies = [orjson.dumps(b) for b in bodies]
        size = len(orjson.dumps(bodies[0])) if not args.bytes else len(bodies[0])
        print(f"body {size / 1e6:.2f} MB, {args.requests} requests per level, cpus={os.cpu_count()}")
        print(f"{'concurrency':>11} {'req/s':>8} {'client CPU ms/req':>18}  outcomes")
        asyncio.run(measure(port, bodies, 1, 10))  # warm up imports and connections
        for level in (int(x) for x in args.levels.split(",")):
            rate, cpu_ms, outcomes = asyncio.run(measure(port, bodies, level, args.requests))
            print(f"{level:>11} {rate:>8.1f} {cpu_ms:>18.2f}  {outcomes}")
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
