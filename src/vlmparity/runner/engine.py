"""The engine loop: dispatch the planned samples to every endpoint concurrently and persist each answer
to the run store as it arrives (a sample's request hash is durable before its request leaves); passes
until every endpoint has a result for every sample's current request; a rerun sends only what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from vlmparity.config import RunConfig
from vlmparity.errors import ConfigError, DataError, VlmparityError
from vlmparity.runner.plan import TaskPlan
from vlmparity.runner.progress import Counters, NullProgress, ProgressSink
from vlmparity.runner.requests import Built, RequestBook, build_one, treatment_for
from vlmparity.store import ANSWERED, ResultRecord, ResultWriter, SampleRecord, Store, is_done, store_path
from vlmparity.tasks.base import GenerationParams, Sample, Task

if TYPE_CHECKING:
    from vlmparity.client import Dispatcher, ResolvedEndpoint, Result
    from vlmparity.data.images import ImageEncoder

WRITER_GRACE_S = 5.0  # how long an interrupted or failed run waits for the store to commit what it has
PREFETCH_SAMPLES = 24  # how far ahead of sending images are encoded (MME: 12 distinct images)


# What the run decides of a stored result (the rest is the dispatcher's `Result`, copied by name).
_RUN_DECIDES = frozenset(
    ("run_id", "task", "sample_id", "request_hash", "outcome", "text", "created", "error_body", "trace")
)
# ResultRecord field -> the Result attribute it copies (the store names seconds without the `_s`).
_FROM_RESULT = tuple(
    (f.name, f"{f.name}_s" if f.name in ("latency", "ttft") else f.name)
    for f in fields(ResultRecord)
    if f.name not in _RUN_DECIDES
)


def result_record(result: Result, **decided: Any) -> ResultRecord:
    """The store's row for a dispatcher `Result`: every field the run does not decide (`decided`: the
    row's keys, the outcome as stored, what is kept of text, error body and trace, the time) is the
    Result's attribute of the same name."""
    return ResultRecord(**{name: getattr(result, attr) for name, attr in _FROM_RESULT}, **decided)


class Gate(Protocol):
    """Decides when samples are sent (a sequential comparison's look gate, `compare.looks.LookGate`): it
    may reorder, delay or skip sending, never change a request. The engine calls it from its event loop."""

    @property
    def stopped(self) -> bool:
        """The gate ended the run early on purpose (the endpoints are then not scored)."""

    def bind(self, engine: Engine) -> None:
        """The engine the gate serves (its samples, plans, store, endpoints)."""

    def order(self, endpoint: str, todo: Sequence[int]) -> list[int]:
        """The order in which an endpoint sends the sample indices it still needs."""

    async def begin(self) -> bool:
        """Before a pass: True to send nothing more."""

    async def admit(self, index: int) -> bool:
        """Whether sample `index` is sent (waits until it may be); False skips it."""

    def resolved(self, endpoint: str, index: int) -> None:
        """An endpoint has the outcome of sample `index` (answered, failed, skipped or not admitted)."""

    def endpoint_ended(self, endpoint: str) -> None:
        """An endpoint finished its pass."""


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


def _reject(fut: asyncio.Future[None], exc: BaseException) -> None:
    # The writer failed before committing the registration: whoever awaits it gets the store's error
    # (nobody may: it also surfaces from the writer's flush, so asyncio need not log it as unretrieved).
    if not fut.done():
        fut.set_exception(exc)
        fut.exception()


def _threadsafe(
    loop: asyncio.AbstractEventLoop, fn: Callable[[asyncio.Future[None]], None], fut: asyncio.Future[None]
) -> Callable[[], None]:
    """A writer-thread callback that resolves `fut` on its loop; a no-op once the loop is closed (an
    interrupted run's writer may still commit after the loop is gone)."""

    def call() -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(fn, fut)

    return call


def _threadsafe_error(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[None]
) -> Callable[[BaseException], None]:
    def call(exc: BaseException) -> None:
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_reject, fut, exc)

    return call


@dataclass
class EndpointRun:
    """One endpoint during a run: its resolution, its store run and this session's counters."""

    name: str
    resolved: ResolvedEndpoint
    run_id: int
    # The image limit known before the first question is sent (the start-up probe); with --max-images it
    # decides --multi-image skip|merge. A limit a refusal reveals mid-run (`learned_limit`) is only
    # reported and stored: it never changes what is sent or how it is scored.
    limit: int | None = None
    learned_limit: int | None = None
    # Stored failures to send again on the first pass: "unsupported" (the server's image limit changed
    # since they were refused) or "failures" (every permanent failure: the server changed on purpose).
    resend: str | None = None
    todo: list[int] = field(default_factory=list)
    in_flight_hash: dict[int, str] = field(default_factory=dict)
    dispatcher: Dispatcher | None = None
    done: int = 0
    errors: int = 0
    not_sent: int = 0
    retries: int = 0
    pass_base: int = 0  # `done` when the current pass began (progress counts per pass)
    results: list[Result] = field(default_factory=list)  # this session's results (timings)
    wall_s: float = 0.0
    error: BaseException | None = None
    breaker_told: bool = False  # the user was told the server stopped answering (this pass)


@dataclass(frozen=True)
class SessionStats:
    """What one invocation did for one endpoint (the one-line summary)."""

    endpoint: str
    sent: int
    wall_s: float
    latencies: tuple[float, ...]
    ttfts: tuple[float, ...]
    output_tokens: int
    errors: int
    not_sent: int
    retries: int


class Engine:
    """Dispatches the planned samples to every endpoint and persists each answer as it arrives."""

    def __init__(
        self,
        config: RunConfig,
        plans: Sequence[TaskPlan],
        store: Store,
        endpoints: Sequence[EndpointRun],
        encoder: ImageEncoder,
        *,
        progress: ProgressSink | None = None,
        workers: int | None = None,
        gate: Gate | None = None,
    ) -> None:
        self.config = config
        self.options = config.options
        self.plans = plans
        self.store = store
        self.endpoints = list(endpoints)
        self.encoder = encoder
        self.progress: ProgressSink = progress or NullProgress()
        self.gen: GenerationParams = config.generation
        self.samples: list[Sample] = [s for p in plans for s in p.samples]
        self.tasks: dict[str, Task] = {p.task.name: p.task for p in plans}
        self.stored: dict[tuple[str, str], SampleRecord] = store.samples()
        self._registering: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._accepted: set[tuple[int, str, str]] = set()
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        self.writer: ResultWriter | None = None
        self.stop_requested = False
        self._dispatching: list[asyncio.Task[None]] = []
        # a sequential comparison's look gate: order, admit, resolved, ended
        self.gate = gate
        if gate is not None:
            gate.bind(self)

    # -- multi-image limits -------------------------------------------------------------------------------

    def shared_limit(self) -> int | None:
        """The image limit --multi-image skip|merge applies: `--max-images` when given (it always wins),
        else the smallest limit the start-up probe found. Never a limit learned while sending."""
        if self.options.max_images is not None:
            return self.options.max_images
        limits = [e.limit for e in self.endpoints if e.limit is not None]
        return min(limits) if limits else None

    def _build(self, index: int, sample: Sample, task: Task) -> Built:
        return build_one(
            index, sample, task, self.gen, self.encoder, self.options.multi_image, self.shared_limit()
        )

    # -- samples: hash guard and registration -------------------------------------------------------------

    def accept(self, built: Built) -> asyncio.Future[None] | None:
        """Check a built request against the store and register it; returns what to await (if anything)
        before sending it: the commit of its registration, so that a stored answer always has its
        sample's request hash and a killed run's answers are recognised as done when it resumes."""
        key = (built.sample.task, built.sample.id)
        mark = (built.index, built.request_hash, built.treatment)
        if mark in self._accepted:
            return self._registering.get(key)
        self._accepted.add(mark)
        rec = built.record()
        stored = self.stored.get(key)
        if stored is None:
            self.stored[key] = rec
            return self._register(key, rec)
        if stored.request_hash == rec.request_hash and stored.treatment == rec.treatment:
            return self._registering.get(key)
        policy = self.options.multi_image
        if stored.treatment == "full" and rec.treatment != "full" and policy in ("skip", "merge"):
            # a limit known at start-up now that was not when this sample was sent whole: deliberately
            # change how it is sent
            self.store.retreat_samples([rec])
            self.stored[key] = rec
            return None
        raise ConfigError(
            f"{self.store.path} holds a different request for {built.sample.task} {built.sample.id!r} "
            f"({stored.treatment}, {stored.request_hash[:12]} vs {rec.treatment}, {rec.request_hash[:12]}): "
            "the generation parameters, image format or PNG level, multi-image policy, prompt or data differ from the "
            "run stored there",
            hint="use a new --output-path, or rerun with the original options",
        )

    def _register(self, key: tuple[str, str], rec: SampleRecord) -> asyncio.Future[None]:
        """Queue a registration on the writer thread (group-committed with the answers)."""
        assert self.writer is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._registering[key] = fut

        self.writer.register([rec], _threadsafe(loop, _resolve, fut), _threadsafe_error(loop, fut))
        return fut

    # -- what to send -----------------------------------------------------------------------------------

    def compute_todo(self, ep: EndpointRun, *, first_pass: bool) -> list[int]:
        """Indices of the samples this endpoint still needs, in document order.

        First pass: missing, transient failures (and permanent ones with --rerun-errors, or those
        `ep.resend` names), results of an older request, samples the image limit known at start-up now
        sends differently. Later passes only what has no result for its current request.
        """
        results = self.store.results(ep.run_id)
        limit = self.shared_limit()
        policy = self.options.multi_image
        out = []
        for i, sample in enumerate(self.samples):
            key = (sample.task, sample.id)
            srec = self.stored.get(key)
            if srec is None:
                out.append(i)
                continue
            if srec.treatment == "skipped":
                if policy != "skip":
                    out.append(i)  # rebuilt as sent now: the hash guard explains the mismatch
                continue
            if srec.treatment == "full" and treatment_for(srec.image_count, policy, limit) != "full":
                out.append(i)
                continue
            rec = results.get(key)
            stale = rec is None or rec.request_hash != srec.request_hash
            if stale or (first_pass and not self._done(ep, rec)):  # type: ignore[arg-type]
                out.append(i)
        return out

    def _done(self, ep: EndpointRun, rec: ResultRecord) -> bool:
        if not is_done(rec, rerun_errors=self.options.rerun_errors):
            return False
        if rec.outcome == "unsupported" and rec.attempts == 0:
            return False  # recorded as not sent by an older vlmparity (a limit learned mid-run): send it
        if rec.answered or ep.resend is None:
            return True
        return not (ep.resend == "failures" or rec.outcome == "unsupported")

    async def verify_stored(self) -> None:
        """Rebuild the first stored sample of each task and compare hashes before sending anything.

        Samples sent in this run are each checked as they are built; this catches changed options even
        when every sample left to send is new to the store.
        """
        loop = asyncio.get_running_loop()
        for plan in self.plans:
            for sample in plan.samples:
                srec = self.stored.get((sample.task, sample.id))
                if srec is not None and srec.treatment != "skipped":
                    index = self.samples.index(sample)
                    built = await loop.run_in_executor(None, self._build, index, sample, plan.task)
                    self.accept(built)
                    break

    # -- dispatch ---------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Passes until every endpoint has a result for every sample's current request."""
        self.writer = ResultWriter(store_path(self.options.output_path))
        book: RequestBook | None = None
        try:
            await self.verify_stored()
            for pass_no in range(3):
                for ep in self.endpoints:
                    ep.todo = self.compute_todo(ep, first_pass=pass_no == 0) if ep.error is None else []
                    if self.gate is not None:
                        ep.todo = self.gate.order(ep.name, ep.todo)
                if self.gate is not None and await self.gate.begin():
                    break
                if not any(ep.todo for ep in self.endpoints) or self.stop_requested:
                    break
                book = RequestBook(
                    self.samples,
                    self.tasks,
                    self._build,
                    workers=self.workers,
                    prefetch=self.encoder.prefetch,
                    release=self.encoder.release,
                )
                for ep in self.endpoints:
                    book.want(ep.todo)
                await self._pass(book)
                book.close()
                book = None
                await self._flushed()  # the next pass reads the store
                fatal = [ep.error for ep in self.endpoints if isinstance(ep.error, ConfigError)]
                if fatal:
                    raise fatal[0]
        except BaseException as exc:
            if book is not None:
                book.close()
            # Interrupted (cancelled) or failed: commit what was received, but do not wait for ever on a
            # disk that does not answer. The store is safe either way (a transaction cut short is rolled
            # back when it is next opened).
            with contextlib.suppress(Exception):
                self.writer.close(timeout=WRITER_GRACE_S)
            if self.writer.error is not None and not isinstance(
                exc, asyncio.CancelledError | KeyboardInterrupt
            ):
                raise self.writer_failure() from None
            raise
        self.writer.close()

    def writer_failure(self) -> VlmparityError:
        """The store writer's own one-line error (it names the cause)."""
        assert self.writer is not None
        return self.writer.failure() or DataError("the run store writer stopped")

    async def _flushed(self) -> None:
        """Wait until every answer queued so far is committed, without holding a thread (cancellable)."""
        assert self.writer is not None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self.writer.register([], _threadsafe(loop, _resolve, fut), _threadsafe_error(loop, fut))
        await fut

    async def _pass(self, book: RequestBook) -> None:
        ticker = asyncio.create_task(self._tick())
        self._dispatching = [
            asyncio.create_task(self._dispatch(ep, book)) for ep in self.endpoints if ep.todo
        ]
        try:
            await asyncio.gather(*self._dispatching)
        finally:
            ticker.cancel()
            await asyncio.gather(ticker, return_exceptions=True)
            self._report_all()

    async def _dispatch(self, ep: EndpointRun, book: RequestBook) -> None:
        from vlmparity.client import Dispatcher, RetryPolicy

        opts = self.options
        ep.dispatcher = Dispatcher(
            ep.resolved,
            concurrency=opts.concurrency if isinstance(opts.concurrency, int) else None,
            attempt_timeout_s=opts.timeout,
            retry=RetryPolicy(max_attempts=opts.max_retries + 1),
            keep_response=False,
            stream=self.gen.stream,  # known here: the dispatcher need not look into megabyte bodies
        )
        ep.pass_base = ep.done
        self.progress.begin(ep.name, len(ep.todo))
        t0 = time.perf_counter()
        try:
            await ep.dispatcher.run(self._feed(ep, book), lambda r: self._on_result(ep, r))
        except asyncio.CancelledError:
            failure = self.writer.failure() if self.writer is not None and self.writer.stopped else None
            if failure is None:
                raise  # Ctrl-C / SIGTERM: the run is being cancelled
            ep.error = failure  # the store stopped: answers in flight could not be stored anyway
        except VlmparityError as exc:
            ep.error = exc
            if isinstance(exc, ConfigError):  # a store mismatch concerns every endpoint: stop them all
                self.request_stop()
        finally:
            ep.wall_s += time.perf_counter() - t0
            ep.retries += ep.dispatcher.stats.retries
            self._report(ep)
            self.progress.end(ep.name)
            if self.gate is not None:
                self.gate.endpoint_ended(ep.name)

    def request_stop(self) -> None:
        """Stop taking new samples everywhere (answers in flight are still stored)."""
        self.stop_requested = True
        for ep in self.endpoints:
            if ep.dispatcher is not None:
                ep.dispatcher.request_stop()

    async def _feed(self, ep: EndpointRun, book: RequestBook) -> AsyncIterator[tuple[str, bytes]]:
        todo = ep.todo
        ahead = 2 * self.workers + 2
        for pos, index in enumerate(todo):
            if self.stop_requested:
                return
            if self.gate is not None and not await self.gate.admit(index):
                self.gate.resolved(ep.name, index)
                if self.stop_requested:
                    return
                continue
            try:
                built = await book.take(
                    index, todo[pos + 1 : pos + 1 + ahead], todo[pos + 1 : pos + 1 + PREFETCH_SAMPLES]
                )
            except DataError as exc:
                # A request that cannot be built (an undecodable image): stop feeding this endpoint, but
                # end the feed normally so the requests already in flight finish and are stored. The row
                # is named: a rerun stops there again until the data is fixed.
                sample = self.samples[index]
                ep.error = DataError(f"{sample.task} row {sample.doc_id}, {exc.message}", hint=exc.hint)
                return
            try:
                registered = self.accept(built)
                if registered is not None:  # its hash must be durable before it is sent (or it failed)
                    await registered
            except DataError:
                if self.writer is not None and self.writer.failed:
                    # The store refuses: send nothing more, but let the requests in flight finish, so
                    # their answers are stored; the writer's error ends the run after this pass.
                    return
                raise
            if built.treatment == "skipped" or built.payload is None:
                ep.not_sent += 1
                ep.done += 1
                if self.gate is not None:
                    self.gate.resolved(ep.name, index)
                continue
            ep.in_flight_hash[index] = built.request_hash
            yield str(index), built.payload

    def _on_result(self, ep: EndpointRun, result: Result) -> None:
        index = int(result.sample_id)
        sample = self.samples[index]
        rhash = ep.in_flight_hash.pop(index)
        outcome = str(result.outcome.value if hasattr(result.outcome, "value") else result.outcome)
        text = result.text if outcome in ANSWERED else None
        if outcome == "empty" and text is None:
            text = ""
        assert self.writer is not None
        self.writer.put(
            result_record(
                result,
                run_id=ep.run_id,
                task=sample.task,
                sample_id=sample.id,
                request_hash=rhash,
                outcome=outcome,
                text=text,
                created=time.time(),
                error_body=result.error_body if outcome not in ANSWERED else None,
                trace=result.trace if self.gen.logprobs else None,
            )
        )
        ep.results.append(result)
        ep.done += 1
        if outcome not in ANSWERED:
            ep.errors += 1
        if self.gate is not None:
            self.gate.resolved(ep.name, index)
        if result.image_limit is not None and (
            ep.learned_limit is None or result.image_limit < ep.learned_limit
        ):
            # Told once and stored as a fact about the server; every question is still sent (whether the
            # next one is refused too is the server's answer to give, and must not depend on timing).
            first = ep.learned_limit is None
            ep.learned_limit = result.image_limit
            self.store.set_image_limit(ep.run_id, result.image_limit)
            if first:
                self.progress.message(
                    f"{ep.name}: the server refused a request with more than {result.image_limit} image(s) "
                    "(every question is still sent; each refusal is that question's outcome)"
                )

    async def _tick(self) -> None:
        while True:
            self._report_all()
            if self.writer is not None and self.writer.failed and not self.stop_requested:
                self.request_stop()  # the store cannot take answers: send nothing more (the error follows)
            if self.writer is not None and self.writer.stopped:
                # nothing can be stored any more: do not wait for requests in flight (a hanging server)
                for task in self._dispatching:
                    task.cancel()
            await asyncio.sleep(0.25)

    def _report_all(self) -> None:
        for ep in self.endpoints:
            self._report(ep)

    def _report(self, ep: EndpointRun) -> None:
        stats = ep.dispatcher.stats if ep.dispatcher is not None else None
        if stats is not None and stats.breaker_open != ep.breaker_told:
            ep.breaker_told = stats.breaker_open
            if stats.breaker_open:
                self.progress.message(
                    f"{ep.name}: the server stopped answering ({stats.connection_failures} connection "
                    "failure(s)); retrying one request at a time"
                )
        self.progress.update(
            ep.name,
            Counters(
                done=ep.done - ep.pass_base,
                errors=ep.errors,
                in_flight=stats.in_flight if stats else 0,
                concurrency=stats.concurrency if stats else 0,
                connection_failures=stats.connection_failures if stats else 0,
            ),
        )

    def session_stats(self) -> list[SessionStats]:
        """Per endpoint: what this invocation sent and how fast."""
        out = []
        for ep in self.endpoints:
            rs = ep.results
            out.append(
                SessionStats(
                    endpoint=ep.name,
                    sent=len(rs),
                    wall_s=ep.wall_s,
                    latencies=tuple(r.latency_s for r in rs if r.latency_s is not None),
                    ttfts=tuple(r.ttft_s for r in rs if r.ttft_s is not None),
                    output_tokens=sum(r.completion_tokens or 0 for r in rs),
                    errors=ep.errors,
                    not_sent=ep.not_sent,
                    retries=ep.retries,
                )
            )
        return out
