"""Send many chat requests to one endpoint and hand back each `Result` as it arrives.

Usage::

    dispatcher = Dispatcher(resolved_endpoint)              # adaptive concurrency
    stats = await dispatcher.run(requests, on_result)       # requests: (sample_id, body) pairs

`requests` is a sync or async iterable of `(sample_id, body)`; `body` is the request JSON without
`model` (a dict, or JSON bytes of the object to avoid serialising images again); the dispatcher adds
the endpoint's model and serialises once per sample. `on_result(Result)` (async or sync) is called
once per finished sample, one call at a time, as answers arrive — the run store commits there.
Transient failures (5xx, 408, 429, timeouts, resets, malformed replies, proxy HTML) are retried with
jittered exponential backoff up to `RetryPolicy.max_attempts`; permanent 4xx are not. One policy for every
retryable status: a `Retry-After` on any of them pauses all sends for at most `RetryPolicy.retry_after_cap`
(the smaller of `max_retry_after_s` and the attempt timeout); an invalid one (NaN, infinite, negative,
absurd) is ignored. Server messages and answers are scrubbed of the endpoint's key and URL secrets
(`vlmparity.masking`) before anyone sees them. A circuit breaker stops hammering a dead server and, if it stays dead, raises `EndpointError`
after delivering every result already received. `stats` (a `DispatchStats` snapshot) is safe to poll
from a progress bar, even from another thread. A sync iterable is consumed on the event loop: build
bodies ahead (or use an async iterable that offloads the work) if producing one is slow.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import math
import random
import time
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import httpx

from vlmparity.client.classify import Classification, Outcome
from vlmparity.client.concurrency import (
    DEFAULT_INITIAL,
    AdaptiveController,
    Controller,
    FixedController,
    Gate,
    LimitChange,
)
from vlmparity.client.endpoint import ResolvedEndpoint
from vlmparity.client.transport import encode_body, make_http_client, send_attempt, wants_stream
from vlmparity.errors import EndpointError
from vlmparity.masking import mask_url, scrub_answer, scrub_message
from vlmparity.tokentrace import TokenTrace

log = logging.getLogger(__name__)

# The documented maximum of one Retry-After pause (also bounded by the attempt timeout).
MAX_RETRY_AFTER_S = 120.0

Body = Mapping[str, Any] | bytes
RequestItem = tuple[str, Body]
OnResult = Callable[["Result"], Awaitable[None] | None]


@dataclass(frozen=True, slots=True)
class Result:
    """The final outcome of one sample on one endpoint (after retries): the last attempt's `Classification`
    (scrubbed of the endpoint's secrets) and the dispatch facts. The classification's fields read as the
    result's own (`result.outcome`, `result.text`, ...)."""

    sample_id: str
    endpoint: str
    classification: Classification
    attempts: int = 1
    latency_s: float | None = None  # last attempt
    total_s: float = 0.0  # first send to final answer, backoff included
    ttft_s: float | None = None  # streaming only: time to the first content delta of the last attempt
    started_at: float = 0.0  # unix time of the first send

    @property
    def outcome(self) -> Outcome:
        return self.classification.outcome

    @property
    def text(self) -> str | None:
        return self.classification.text

    @property
    def finish_reason(self) -> str | None:
        return self.classification.finish_reason

    @property
    def status(self) -> int | None:
        return self.classification.status

    @property
    def server_message(self) -> str | None:
        return self.classification.server_message

    @property
    def transient(self) -> bool:
        return self.classification.transient

    @property
    def prompt_tokens(self) -> int | None:
        return self.classification.prompt_tokens

    @property
    def completion_tokens(self) -> int | None:
        return self.classification.completion_tokens

    @property
    def image_limit(self) -> int | None:
        return self.classification.image_limit

    @property
    def response(self) -> dict[str, Any] | None:
        """The raw response JSON (answers and JSON errors); None when the dispatcher keeps none."""
        return self.classification.response

    @property
    def error_body(self) -> str | None:
        """A non-200 response's body as received (capped)."""
        return self.classification.error_body

    @property
    def trace(self) -> TokenTrace | None:
        """Per-token log-probabilities (requests with `logprobs: true`)."""
        return self.classification.trace


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of transient failures with jittered exponential backoff."""

    max_attempts: int = 5
    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    max_retry_after_s: float = MAX_RETRY_AFTER_S  # never wait longer than this for one Retry-After

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Delay before attempt `attempt + 1`: half fixed, half uniform jitter, doubling each time."""
        doubling = 2.0 ** min(max(attempt - 1, 0), 60)  # no float overflow after many attempts
        ceiling = min(self.backoff_max_s, self.backoff_base_s * doubling)
        return ceiling / 2 + rng.uniform(0, ceiling / 2)

    def retry_after_cap(self, attempt_timeout_s: float | None) -> float:
        """The longest Retry-After honoured: `max_retry_after_s`, and never more than one attempt's
        timeout (a server may not stall a run longer than it could take to answer)."""
        cap = self.max_retry_after_s
        if attempt_timeout_s is not None and attempt_timeout_s > 0:
            cap = min(cap, attempt_timeout_s)
        return max(0.0, cap)

    def honoured_retry_after(self, cls: Classification, attempt_timeout_s: float | None) -> float | None:
        """The pause a retryable failure asks for, capped; None when it asks for none (or is permanent)."""
        if not cls.transient or cls.retry_after_s is None:
            return None
        value = cls.retry_after_s
        if not math.isfinite(value) or value < 0:  # parse_retry_after never gives these; be sure anyway
            return None
        return min(value, self.retry_after_cap(attempt_timeout_s))


@dataclass(frozen=True)
class BreakerPolicy:
    """After `threshold` consecutive connection failures, pause and probe with one request at a time;
    abort when no request has succeeded for `give_up_s` since the breaker opened."""

    threshold: int = 8
    cooldown_s: float = 1.0
    max_cooldown_s: float = 15.0
    give_up_s: float = 60.0


@dataclass
class DispatchStats:
    """Counters for progress display; `Dispatcher.stats` returns a copy."""

    sent: int = 0  # attempts sent (retries included)
    started: int = 0  # samples taken from the input
    in_flight: int = 0
    done: int = 0  # results delivered
    errors: int = 0  # results whose outcome is not an answer (http_error, timeout, connection, unsupported,
    # malformed)
    retries: int = 0
    connection_failures: int = 0  # attempts that could not reach the server (retries included)
    concurrency: int = 0  # current limit
    paused: bool = False
    pauses: int = 0  # how many times sending was paused (Retry-After, circuit breaker)
    breaker_open: bool = False
    aborted: bool = False
    stopped: bool = False
    by_outcome: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    """Runs requests against one resolved endpoint with bounded, adaptive concurrency."""

    def __init__(
        self,
        endpoint: ResolvedEndpoint,
        *,
        concurrency: int | None = None,
        controller: Controller | None = None,
        max_concurrency: int = 64,
        attempt_timeout_s: float | None = 600.0,
        sample_timeout_s: float | None = None,
        retry: RetryPolicy | None = None,
        breaker: BreakerPolicy | None = None,
        client: httpx.AsyncClient | None = None,
        keep_response: bool = True,
        seed: int | None = None,
        stream: bool | None = None,
    ) -> None:
        """`stream`: whether the bodies ask for SSE streaming, when the caller knows (None: read each body)."""
        if controller is None:
            controller = (
                FixedController(concurrency)
                if concurrency is not None
                else AdaptiveController(
                    initial=min(DEFAULT_INITIAL, max_concurrency), maximum=max_concurrency
                )
            )
        self.endpoint = endpoint
        self.controller = controller
        self.attempt_timeout_s = attempt_timeout_s
        self.sample_timeout_s = sample_timeout_s
        self.retry = retry or RetryPolicy()
        self.breaker = breaker or BreakerPolicy()
        self.keep_response = keep_response
        self.stream = stream
        self._pool_size = concurrency if concurrency is not None else max_concurrency
        self._client = client
        self._rng = random.Random(seed)  # private: the global random sequence belongs to MMMU scoring
        self._headers = endpoint.headers()
        self._secrets = endpoint.secrets()
        self._stats = DispatchStats()
        self._gate: Gate | None = None
        self._stop = False
        self._abort: BaseException | None = None
        self._consecutive_conn = 0
        self._breaker_since: float | None = None
        self._cooldown = self.breaker.cooldown_s
        self._last_conn_message = ""
        self._finished = 0  # results handed to the consumer

    # -- progress ---------------------------------------------------------------------------------------

    @property
    def stats(self) -> DispatchStats:
        """A snapshot of the counters."""
        gate = self._gate
        snap = replace(self._stats, by_outcome=dict(self._stats.by_outcome))
        snap.concurrency = gate.limit if gate else self.controller.limit
        snap.in_flight = gate.in_flight if gate else 0
        snap.paused = gate.paused if gate else False
        snap.pauses = gate.pauses if gate else 0
        return snap

    @property
    def limit_history(self) -> list[LimitChange]:
        """Every change of the concurrency limit so far."""
        return self.controller.history

    @property
    def pause_reasons(self) -> list[str]:
        """Why sending was paused, in order."""
        return list(self._gate.pause_reasons) if self._gate else []

    def request_stop(self) -> None:
        """Stop taking new samples; samples already started finish and are delivered."""
        self._stop = True

    # -- running ----------------------------------------------------------------------------------------

    async def run(
        self, requests: Iterable[RequestItem] | AsyncIterable[RequestItem], on_result: OnResult
    ) -> DispatchStats:
        """Send every request, call `on_result` for each, return the final counters.

        Raises `EndpointError` when the circuit breaker gives up, and re-raises whatever `on_result`
        raised; in both cases every result received before is delivered first.
        """
        self._gate = Gate(self.controller)
        owns_client = self._client is None
        client = self._client or make_http_client(self._pool_size)
        queue: asyncio.Queue[Result | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()
        wakeup = asyncio.Event()
        consumer = asyncio.create_task(self._consume(queue, on_result))

        def consumer_done(task: asyncio.Task[None]) -> None:
            wakeup.set()
            if not task.cancelled():
                # Mark its error retrieved: when `requests` raises too, that error propagates instead,
                # and asyncio would print this one as a traceback ("Task exception was never retrieved").
                task.exception()

        consumer.add_done_callback(consumer_done)

        def finished(task: asyncio.Task[None]) -> None:
            tasks.discard(task)
            wakeup.set()
            if not task.cancelled() and task.exception() is not None and self._abort is None:
                self._abort = task.exception()

        def halted() -> bool:
            return self._abort is not None or consumer.done()

        try:
            try:
                async for sample_id, body in _aiter(requests):
                    while len(tasks) >= self._window() and not halted():
                        wakeup.clear()
                        await wakeup.wait()
                    if self._stop or halted():
                        break
                    self._stats.started += 1
                    task = asyncio.create_task(self._run_sample(client, sample_id, body, queue))
                    tasks.add(task)
                    task.add_done_callback(finished)
                while tasks and not halted():
                    wakeup.clear()
                    await wakeup.wait()
            finally:
                # Abort, store failure or cancellation: stop what is left, deliver what has arrived.
                await self._cancel(tasks)
                await self._drain(queue, consumer)
        finally:
            if owns_client:
                await client.aclose()
        self._stats.stopped = self._stop
        if not consumer.cancelled() and consumer.exception() is not None:
            raise consumer.exception()  # type: ignore[misc]  # the store failed: surface its own error
        if self._abort is not None:
            self._stats.aborted = True
            raise self._abort
        return self.stats

    def _window(self) -> int:
        # Samples held at once (in flight + waiting for a slot or a retry): enough to keep the gate full
        # while bounding memory (each holds a multi-megabyte body).
        assert self._gate is not None
        return self._gate.limit + max(2, self._gate.limit // 2)

    async def _cancel(self, tasks: set[asyncio.Task[None]]) -> None:
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _drain(self, queue: asyncio.Queue[Result | None], consumer: asyncio.Task[None]) -> None:
        """Deliver everything already queued, then stop the consumer."""
        if not consumer.done():
            queue.put_nowait(None)
            await asyncio.shield(consumer)

    async def _consume(self, queue: asyncio.Queue[Result | None], on_result: OnResult) -> None:
        # One consumer: the store sees one write at a time, and cancelling a request never cancels a write.
        while True:
            result = await queue.get()
            if result is None:
                return
            await _maybe_await(on_result(result))
            self._stats.done += 1

    async def _run_sample(
        self, client: httpx.AsyncClient, sample_id: str, body: Body, queue: asyncio.Queue[Result | None]
    ) -> None:
        assert self._gate is not None
        gate = self._gate
        payload = encode_body(body, self.endpoint.model)
        stream = self.stream if self.stream is not None else wants_stream(body)
        started_at = time.time()
        t0 = time.perf_counter()
        deadline = t0 + self.sample_timeout_s if self.sample_timeout_s else None
        attempts = 0
        ttft: float | None = None
        while True:
            await gate.acquire()
            if self._abort is not None:
                gate.release()
                return
            attempts += 1
            self._stats.sent += 1
            timeout = self.attempt_timeout_s
            if deadline is not None:
                remaining = max(0.001, deadline - time.perf_counter())
                timeout = remaining if timeout is None else min(timeout, remaining)
            try:
                attempt = await send_attempt(
                    client,
                    self.endpoint.chat_url,
                    payload,
                    headers=self._headers,
                    stream=stream,
                    timeout=timeout,
                )
            finally:
                in_flight = gate.in_flight
                gate.release()
            cls = attempt.classification
            ttft = attempt.ttft_s
            before = gate.limit
            self.controller.on_attempt(cls, attempt.latency_s, in_flight)
            if gate.limit > before:
                gate.wake()
            self._watch_breaker(cls)
            # One policy for every retryable status: the server asks everyone to wait; capped.
            retry_after = self.retry.honoured_retry_after(cls, self.attempt_timeout_s)
            if retry_after is not None:
                gate.pause(retry_after, f"HTTP {cls.status} Retry-After {retry_after:g} s")
            if cls.transient and attempts < self.retry.max_attempts and self._abort is None:
                delay = self.retry.backoff(attempts, self._rng)
                if retry_after is not None:
                    delay = max(delay, retry_after)
                if deadline is None or time.perf_counter() + delay < deadline:
                    log.debug(
                        "%s: sample %s attempt %d: %s (%s); retrying in %.2f s",
                        self.endpoint.name,
                        sample_id,
                        attempts,
                        cls.outcome.value if cls.status is None else f"HTTP {cls.status}",
                        scrub_message(cls.server_message or "", self._secrets),
                        delay,
                    )
                    self._stats.retries += 1
                    await asyncio.sleep(delay)
                    continue
            break
        if self._abort is not None and cls.outcome is Outcome.CONNECTION:
            return  # the endpoint is gone: leave the sample undone so a resumed run sends it again
        queue.put_nowait(self._result(sample_id, cls, attempts, attempt.latency_s, t0, ttft, started_at))

    def _result(
        self,
        sample_id: str,
        cls: Classification,
        attempts: int,
        latency: float,
        t0: float,
        ttft: float | None,
        started_at: float,
    ) -> Result:
        self._finished += 1
        stats = self._stats
        stats.by_outcome[cls.outcome.value] = stats.by_outcome.get(cls.outcome.value, 0) + 1
        if not cls.is_answer:
            stats.errors += 1
        secrets = self._secrets
        final = replace(
            cls,
            text=scrub_answer(cls.text, secrets) if cls.text else cls.text,
            server_message=scrub_message(cls.server_message, secrets) if cls.server_message else None,
            response=cls.response if self.keep_response else None,
            # the body as received but for URL credentials and known secrets (it is stored)
            error_body=scrub_message(cls.error_body, secrets, patterns=False) if cls.error_body else None,
        )
        return Result(
            sample_id=sample_id,
            endpoint=self.endpoint.name,
            classification=final,
            attempts=attempts,
            latency_s=latency,
            total_s=time.perf_counter() - t0,
            ttft_s=ttft,
            started_at=started_at,
        )

    def _watch_breaker(self, cls: Classification) -> None:
        """Open on consecutive connection failures; close on any answer; abort if it stays open too long."""
        assert self._gate is not None
        gate = self._gate
        if cls.outcome is not Outcome.CONNECTION:
            self._consecutive_conn = 0
            if self._breaker_since is not None:
                self._breaker_since = None
                self._cooldown = self.breaker.cooldown_s
                gate.cap = None
                self._stats.breaker_open = False
            return
        self._consecutive_conn += 1
        self._stats.connection_failures += 1
        self._last_conn_message = cls.server_message or "connection failed"
        if self._consecutive_conn < self.breaker.threshold:
            return
        now = time.monotonic()
        if self._breaker_since is None:
            log.warning(
                "%s: %d consecutive connection failures (%s); pausing and probing one request at a time",
                self.endpoint.name,
                self._consecutive_conn,
                self._last_conn_message,
            )
            self._breaker_since = now
            self._stats.breaker_open = True
            gate.cap = 1  # half-open: probe with one request at a time
        elif now - self._breaker_since >= self.breaker.give_up_s:
            if self._abort is None:
                self._abort = EndpointError(
                    f"{self.endpoint.name}: {self._consecutive_conn} consecutive connection failures "
                    f"({self._last_conn_message}) at {mask_url(self.endpoint.chat_url)}; stopped after "
                    f"{self._finished} results",
                    hint="is the server still running? results so far are kept; run again to resume",
                )
            return
        else:
            self._cooldown = min(self._cooldown * 2, self.breaker.max_cooldown_s)
        gate.pause(self._cooldown, f"circuit breaker: {self._last_conn_message}")


async def _aiter(items: Iterable[RequestItem] | AsyncIterable[RequestItem]) -> AsyncIterable[RequestItem]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def _maybe_await(value: Awaitable[None] | None) -> None:
    if inspect.isawaitable(value):
        await value
