"""Dispatcher against small aiohttp servers that reproduce the wire shapes of research/servers.md.

Servers count what they receive (requests per sample, arrival order, concurrency), so tests assert on
what reached the server and on the controller's recorded limits — never on elapsed time.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from typing import Any

import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr

from vlmparity.client import (
    AdaptiveController,
    BackendKind,
    BreakerPolicy,
    Dispatcher,
    Outcome,
    ResolvedEndpoint,
    Result,
    RetryPolicy,
)
from vlmparity.errors import EndpointError

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)
SECRET = "sk-test-SECRET-4242"


def _answer(content: Any, finish: str = "stop") -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers
    )


FAKE: web.RequestKey[FakeServer] = web.RequestKey("fake", "FakeServer")  # lets a behaviour see its server

Behaviour = Callable[[str, int, web.Request], Awaitable[web.StreamResponse]]


class FakeServer:
    """A chat endpoint whose answer depends on (sample id, how many times that sample was seen)."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.calls: Counter[str] = Counter()
        self.order: list[str] = []
        self.bodies: list[bytes] = []
        self.auth: list[str | None] = []
        self.events: list[tuple[float, str]] = []  # (server loop time, what happened)
        self.in_flight = 0
        self.max_in_flight = 0
        self.total = 0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.total += 1
        self.bodies.append(raw)
        self.auth.append(request.headers.get("Authorization"))
        sample = orjson.loads(raw)["messages"][0]["content"]
        self.calls[sample] += 1
        self.order.append(sample)
        self.events.append((asyncio.get_running_loop().time(), f"arrive {sample}"))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        request[FAKE] = self
        try:
            return await self.behaviour(sample, self.calls[sample], request)
        finally:
            self.in_flight -= 1


@asynccontextmanager
async def serve(fake: FakeServer) -> AsyncIterator[tuple[str, web.AppRunner]]:
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", fake.handle)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", runner
    finally:
        await runner.cleanup()


def endpoint(root: str, *, model: str = "m", api_key: str | None = None) -> ResolvedEndpoint:
    return ResolvedEndpoint(
        name="fake",
        kind=BackendKind("vllm"),
        url=root,
        root_url=root,
        api_base=root + "/v1",
        chat_url=root + "/v1/chat/completions",
        model=model,
        api_key=SecretStr(api_key) if api_key else None,
    )


def body(sample: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": sample}], "max_tokens": 16, "temperature": 0.0, **extra}


async def collect(dispatcher: Dispatcher, items: Any) -> list[Result]:
    results: list[Result] = []

    async def on_result(result: Result) -> None:
        results.append(result)

    await dispatcher.run(items, on_result)
    return results


# -- retries ---------------------------------------------------------------------------------------------


async def _mixed(sample: str, n: int, request: web.Request) -> web.StreamResponse:
    if sample == "flaky":  # two 503s, then an answer
        if n <= 2:
            return _json({"error": {"message": "busy", "type": "ServiceUnavailable", "code": 503}}, 503)
        return _json(_answer("Yes"))
    if sample == "bad":
        return _json(
            {"error": {"message": "bad field", "type": "BadRequestError", "param": None, "code": 400}}, 400
        )
    if sample == "ovms412":
        return _json({"error": "The file is not valid json - Cannot parse JSON body"}, 412)
    if sample == "down":
        return _json({"error": "Mediapipe is not loaded yet"}, 500)
    if sample == "limit":
        msg = "At most 1 image(s) may be provided in one prompt. Set `--limit-mm-per-prompt` to increase this limit."
        return _json(
            {"error": {"message": msg, "type": "BadRequestError", "param": "image", "code": 400}}, 400
        )
    if sample == "garbage":  # a truncated 200, then a good answer
        if n == 1:
            return web.Response(body=orjson.dumps(_answer("Yes"))[:-7], content_type="application/json")
        return _json(_answer("Yes"))
    if sample == "proxy":  # an HTML 502 from a proxy, then a good answer
        if n == 1:
            return web.Response(
                body=b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>",
                status=502,
                content_type="text/html",
            )
        return _json(_answer("No"))
    if sample == "empty":
        return _json(_answer(""))
    if sample == "length":
        return _json(_answer("The answer is", finish="length"))
    return _json(_answer("Yes"))


def test_retries_transient_failures_only() -> None:
    samples = ["flaky", "bad", "ovms412", "down", "limit", "garbage", "proxy", "empty", "length", "plain"]

    async def main() -> tuple[FakeServer, list[Result]]:
        fake = FakeServer(_mixed)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root), concurrency=4, retry=FAST_RETRY, seed=1)
            results = await collect(dispatcher, [(s, body(s)) for s in samples])
        return fake, results

    fake, results = asyncio.run(main())
    # What the server saw: transient failures retried (bounded by max_attempts=3), permanent ones sent once.
    assert dict(fake.calls) == {
        "flaky": 3,
        "bad": 1,
        "ovms412": 1,
        "down": 3,
        "limit": 1,
        "garbage": 2,
        "proxy": 2,
        "empty": 1,
        "length": 1,
        "plain": 1,
    }
    by_id = {r.sample_id: r for r in results}
    assert len(results) == len(samples)
    assert (by_id["flaky"].outcome, by_id["flaky"].attempts, by_id["flaky"].text) == (Outcome.OK, 3, "Yes")
    assert (by_id["bad"].outcome, by_id["bad"].status, by_id["bad"].transient) == (
        Outcome.HTTP_ERROR,
        400,
        False,
    )
    assert by_id["bad"].server_message == "bad field"
    assert by_id["ovms412"].server_message == "The file is not valid json - Cannot parse JSON body"
    down = by_id["down"]
    assert (down.outcome, down.status, down.transient, down.attempts) == (Outcome.HTTP_ERROR, 500, True, 3)
    assert down.server_message == "Mediapipe is not loaded yet"
    assert (by_id["limit"].outcome, by_id["limit"].image_limit) == (Outcome.UNSUPPORTED, 1)
    assert (by_id["garbage"].outcome, by_id["garbage"].attempts) == (Outcome.OK, 2)
    assert (by_id["proxy"].outcome, by_id["proxy"].text) == (Outcome.OK, "No")
    assert by_id["empty"].outcome is Outcome.EMPTY
    assert (by_id["length"].outcome, by_id["length"].text) == (Outcome.LENGTH, "The answer is")
    assert (by_id["plain"].prompt_tokens, by_id["plain"].completion_tokens) == (7, 1)


# -- bodies, model, key --------------------------------------------------------------------------------


def test_model_added_key_sent_and_never_logged(caplog: pytest.LogCaptureFixture) -> None:
    async def ok(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        return _json(_answer("Yes"))

    async def gen() -> AsyncIterator[tuple[str, Any]]:
        yield "a", body("a")
        yield "b", orjson.dumps(body("b"))  # pre-serialised bytes are accepted too

    async def main() -> tuple[FakeServer, list[Result], Dispatcher]:
        fake = FakeServer(ok)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(
                endpoint(root, model="llava-hf/llava-1.5-7b-hf", api_key=SECRET), concurrency=2
            )
            results = await collect(dispatcher, gen())
        return fake, results, dispatcher

    with caplog.at_level(logging.DEBUG):
        fake, results, dispatcher = asyncio.run(main())
    sent = sorted((orjson.loads(raw) for raw in fake.bodies), key=lambda doc: doc["messages"][0]["content"])
    assert [doc["model"] for doc in sent] == ["llava-hf/llava-1.5-7b-hf"] * 2
    assert sent == [{"model": "llava-hf/llava-1.5-7b-hf", **body(s)} for s in "ab"]
    assert all(raw.startswith(b'{"model":') for raw in fake.bodies)
    assert fake.auth == [f"Bearer {SECRET}"] * 2
    assert SECRET not in caplog.text
    assert SECRET not in repr(dispatcher.endpoint) and SECRET not in str(dispatcher.endpoint)
    assert all(SECRET not in repr(r) for r in results)


# -- Retry-After ----------------------------------------------------------------------------------------


def test_retry_after_pauses_every_send() -> None:
    async def first_429(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        fake = request[FAKE]
        if fake.total == 1:
            fake.events.append((asyncio.get_running_loop().time(), "429"))
            return _json({"error": "rate limited"}, 429, headers={"Retry-After": "1"})
        return _json(_answer("Yes"))

    async def main() -> tuple[FakeServer, list[Result], Dispatcher]:
        fake = FakeServer(first_429)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root), concurrency=1, retry=FAST_RETRY)
            results = await collect(dispatcher, [(f"s{i}", body(f"s{i}")) for i in range(4)])
        return fake, results, dispatcher

    fake, results, dispatcher = asyncio.run(main())
    t429 = next(t for t, what in fake.events if what == "429")
    # No request reached the server during (most of) the 1 s Retry-After window.
    during = [what for t, what in fake.events if what.startswith("arrive") and t429 < t < t429 + 0.8]
    assert during == []
    assert dispatcher.stats.pauses == 1
    assert dispatcher.pause_reasons == ["HTTP 429 Retry-After 1 s"]
    assert sorted(r.outcome for r in results) == [Outcome.OK] * 4
    assert fake.calls["s0"] == 2


# -- adaptive concurrency -------------------------------------------------------------------------------


def test_adaptive_concurrency_grows_against_fast_server() -> None:
    async def quick(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.01)
        return _json(_answer("Yes"))

    async def main() -> tuple[FakeServer, Dispatcher, list[Result]]:
        fake = FakeServer(quick)
        async with serve(fake) as (root, _):
            ctl = AdaptiveController(initial=2, maximum=16)
            dispatcher = Dispatcher(endpoint(root), controller=ctl)
            results = await collect(dispatcher, [(f"s{i}", body(f"s{i}")) for i in range(150)])
        return fake, dispatcher, results

    fake, dispatcher, results = asyncio.run(main())
    limits = [change.limit for change in dispatcher.limit_history]
    assert limits[0] == 2
    assert max(limits) == 16
    assert fake.max_in_flight > 2  # the server really saw more than the initial concurrency
    assert len(results) == 150 and all(r.outcome is Outcome.OK for r in results)


def test_default_adaptive_controller_fills_16_slots_before_the_first_answer() -> None:
    # A serving engine batches continuously; starting small costs whole round trips of idle capacity
    # (bench/throughput.py: 0.93 of C/L from 4, 0.96 from 16). The default starts with 16 in flight.
    first_answer: list[int] = []
    all_in = asyncio.Event()

    async def slow(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        # Hold every answer until 16 requests have arrived (or long enough that more would have come):
        # a condition, not a fixed sleep a slow machine could outlast while still opening connections.
        if request[FAKE].total >= 16:
            all_in.set()
        with suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), 10)
        if not first_answer:
            first_answer.append(request[FAKE].total)  # arrivals before anything was answered
        return _json(_answer("Yes"))

    async def main() -> tuple[FakeServer, Dispatcher]:
        fake = FakeServer(slow)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root))
            await collect(dispatcher, [(f"s{i}", body(f"s{i}")) for i in range(40)])
        return fake, dispatcher

    fake, dispatcher = asyncio.run(main())
    assert dispatcher.limit_history[0].limit == 16
    assert first_answer == [16] and fake.max_in_flight >= 16


def test_adaptive_concurrency_backs_off_on_429() -> None:
    async def rate_limited(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        arrival = request[FAKE].total  # read before sleeping: other requests arrive meanwhile
        await asyncio.sleep(0.005)
        if 40 < arrival <= 60:
            return _json(
                {"error": {"message": "Too many requests", "type": "RateLimitError", "code": 429}}, 429
            )
        return _json(_answer("Yes"))

    fake = FakeServer(rate_limited)

    async def main() -> tuple[Dispatcher, list[Result]]:
        async with serve(fake) as (root, _):
            ctl = AdaptiveController(initial=4, maximum=32)
            retry = RetryPolicy(max_attempts=8, backoff_base_s=0.01, backoff_max_s=0.05)
            dispatcher = Dispatcher(endpoint(root), controller=ctl, retry=retry)
            results = await collect(dispatcher, [(f"s{i}", body(f"s{i}")) for i in range(120)])
        return dispatcher, results

    dispatcher, results = asyncio.run(main())
    history = dispatcher.limit_history
    backoffs = [i for i, change in enumerate(history) if change.reason == "overload: HTTP 429"]
    assert backoffs, history
    first = backoffs[0]
    assert history[first].limit < history[first - 1].limit
    assert all(r.outcome is Outcome.OK for r in results)
    assert sum(r.attempts for r in results) == fake.total == 120 + 20  # each of the 20 429s was retried once


# -- circuit breaker ------------------------------------------------------------------------------------


def test_circuit_breaker_aborts_when_server_dies_and_keeps_results() -> None:
    async def ok(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        return _json(_answer("Yes"))

    async def main() -> tuple[list[Result], BaseException | None, Dispatcher]:
        fake = FakeServer(ok)
        delivered: list[Result] = []
        error: BaseException | None = None
        async with serve(fake) as (root, runner):
            dispatcher = Dispatcher(
                endpoint(root),
                concurrency=1,
                retry=RetryPolicy(max_attempts=50, backoff_base_s=0.01, backoff_max_s=0.02),
                breaker=BreakerPolicy(threshold=3, cooldown_s=0.01, max_cooldown_s=0.05, give_up_s=0.2),
            )

            async def on_result(result: Result) -> None:
                delivered.append(result)
                if len(delivered) == 5:
                    await runner.cleanup()  # the server dies after five answers

            try:
                await dispatcher.run([(f"s{i}", body(f"s{i}")) for i in range(20)], on_result)
            except EndpointError as err:
                error = err
        return delivered, error, dispatcher

    delivered, error, dispatcher = asyncio.run(main())
    assert [r.sample_id for r in delivered] == ["s0", "s1", "s2", "s3", "s4"]
    assert all(r.outcome is Outcome.OK for r in delivered)
    assert isinstance(error, EndpointError)
    assert "consecutive connection failures" in str(error)
    stats = dispatcher.stats
    assert stats.aborted and stats.breaker_open and stats.pauses >= 1
    assert stats.done == 5
    assert stats.sent < 5 + 50  # the dead server got far fewer than one sample's worth of retries


def test_store_failure_stops_the_run_and_surfaces() -> None:
    async def ok(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        return _json(_answer("Yes"))

    calls: list[str] = []

    async def main() -> None:
        fake = FakeServer(ok)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root), concurrency=1)

            def on_result(result: Result) -> None:  # a sync callback is accepted too
                calls.append(result.sample_id)
                if len(calls) == 3:
                    raise RuntimeError("disk full")

            await dispatcher.run([(f"s{i}", body(f"s{i}")) for i in range(10)], on_result)

    with pytest.raises(RuntimeError, match="disk full"):
        asyncio.run(main())
    assert calls == ["s0", "s1", "s2"]


# -- timeouts -------------------------------------------------------------------------------------------


def test_attempt_timeout_is_transient_and_bounded() -> None:
    async def slow(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(1.0)
        return _json(_answer("Yes"))

    async def main() -> tuple[FakeServer, list[Result]]:
        fake = FakeServer(slow)
        async with serve(fake) as (root, _):
            retry = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)
            dispatcher = Dispatcher(endpoint(root), concurrency=1, attempt_timeout_s=0.1, retry=retry)
            results = await collect(dispatcher, [("s0", body("s0"))])
        return fake, results

    fake, results = asyncio.run(main())
    (result,) = results
    assert (result.outcome, result.transient, result.attempts) == (Outcome.TIMEOUT, True, 2)
    assert fake.calls["s0"] == 2


# -- streaming ------------------------------------------------------------------------------------------


async def _sse(request: web.Request, events: list[bytes], gap: float = 0.0) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for event in events:
        await response.write(event)
        if gap:
            await asyncio.sleep(gap)
    await response.write_eof()
    return response


def _chunk(delta: dict[str, Any], finish: str | None = None, usage: dict[str, int] | None = None) -> bytes:
    doc: dict[str, Any] = {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}] if usage is None else [],
    }
    if usage is not None:
        doc["usage"] = usage
    return b"data: " + orjson.dumps(doc) + b"\n\n"


async def _streams(sample: str, n: int, request: web.Request) -> web.StreamResponse:
    if sample == "vllm":
        return await _sse(
            request,
            [
                _chunk({"role": "assistant", "content": ""}),
                _chunk({"content": "The answer"}),
                _chunk({"content": " is B"}, finish="stop"),
                _chunk({}, usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}),
                b"data: [DONE]\n\n",
            ],
            gap=0.01,
        )
    if sample == "ovms":  # first chunk has content null
        return await _sse(
            request,
            [
                _chunk({"role": "assistant", "content": None}),
                _chunk({"content": "No"}, "stop"),
                b"data: [DONE]\n\n",
            ],
        )
    if sample == "ovms-error-before-first-chunk":
        return _json(
            {
                "error": "Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \n"
                'Calculator::Process() for node "LLMExecutor" failed: Invalid base64 string in request'
            },
            400,
        )
    if sample == "midstream":  # a vLLM error event after 200, once; then a clean stream
        if n == 1:
            err = {
                "error": {"message": "engine died", "type": "InternalServerError", "param": None, "code": 500}
            }
            return await _sse(
                request,
                [_chunk({"content": "Ye"}), b"data: " + orjson.dumps(err) + b"\n\n", b"data: [DONE]\n\n"],
            )
        return await _sse(request, [_chunk({"content": "Yes"}, "stop"), b"data: [DONE]\n\n"])
    raise AssertionError(sample)


@pytest.mark.parametrize("told", [False, True])
def test_streaming_results(told: bool) -> None:
    """Streaming read from each body's flag, or told (`stream=True`): then the bodies are not even looked at."""
    samples = ["vllm", "ovms", "ovms-error-before-first-chunk", "midstream"]

    async def main() -> tuple[FakeServer, list[Result]]:
        fake = FakeServer(_streams)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root), concurrency=2, retry=FAST_RETRY, stream=told or None)
            items: list[tuple[str, Any]] = [
                (s, body(s, stream=True, stream_options={"include_usage": True})) for s in samples
            ]
            if told:  # pre-serialised bodies without the flag (this server streams regardless)
                items = [(s, orjson.dumps(body(s))) for s in samples]
            results = await collect(dispatcher, items)
        return fake, results

    fake, results = asyncio.run(main())
    by_id = {r.sample_id: r for r in results}
    vllm = by_id["vllm"]
    assert (vllm.outcome, vllm.text, vllm.finish_reason) == (Outcome.OK, "The answer is B", "stop")
    assert (vllm.prompt_tokens, vllm.completion_tokens) == (9, 4)
    assert vllm.ttft_s is not None and vllm.latency_s is not None and 0 < vllm.ttft_s <= vllm.latency_s
    assert (by_id["ovms"].outcome, by_id["ovms"].text) == (Outcome.OK, "No")
    err = by_id["ovms-error-before-first-chunk"]
    assert (err.outcome, err.status, err.transient, err.attempts) == (Outcome.HTTP_ERROR, 400, False, 1)
    assert err.server_message == "Invalid base64 string in request"
    mid = by_id["midstream"]
    assert (mid.outcome, mid.text, mid.attempts) == (Outcome.OK, "Yes", 2)
    assert fake.calls["midstream"] == 2


# -- stopping and deadlines -----------------------------------------------------------------------------


def test_request_stop_delivers_every_started_sample() -> None:
    async def ok(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        return _json(_answer("Yes"))

    async def main() -> tuple[list[Result], Any]:
        fake = FakeServer(ok)
        results: list[Result] = []
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root), concurrency=1)

            async def on_result(result: Result) -> None:
                results.append(result)
                if len(results) == 2:
                    dispatcher.request_stop()

            stats = await dispatcher.run([(f"s{i}", body(f"s{i}")) for i in range(50)], on_result)
        return results, stats

    results, stats = asyncio.run(main())
    assert stats.stopped
    assert 2 <= len(results) < 50
    assert stats.started == stats.done == len(results)  # nothing started was dropped


def test_sample_deadline_bounds_retries() -> None:
    async def busy(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        return _json({"error": "Service Unavailable"}, 503)

    async def main() -> tuple[FakeServer, list[Result]]:
        fake = FakeServer(busy)
        async with serve(fake) as (root, _):
            retry = RetryPolicy(max_attempts=1000, backoff_base_s=0.05, backoff_max_s=0.2)
            dispatcher = Dispatcher(endpoint(root), concurrency=1, sample_timeout_s=0.5, retry=retry)
            results = await collect(dispatcher, [("s0", body("s0"))])
        return fake, results

    fake, results = asyncio.run(main())
    (result,) = results
    assert (result.outcome, result.status, result.transient) == (Outcome.HTTP_ERROR, 503, True)
    assert 1 < result.attempts == fake.calls["s0"] < 1000
