"""The client against the project's simulator (vlmparity.sim) in both personalities, over real HTTP.

The simulator's own records (request log, fault schedule) are the oracle: the client must have sent
exactly what the server saw, retried exactly the injected faults, and classified each answer.
"""

from __future__ import annotations

import asyncio
import base64
import io
from typing import Any

import pytest
from PIL import Image

from vlmparity.client import (
    BackendKind,
    Dispatcher,
    EndpointSpec,
    Outcome,
    Result,
    RetryPolicy,
    resolve_endpoint,
)
from vlmparity.errors import EndpointError
from vlmparity.sim import AsyncSimServer, FaultConfig, SimConfig
from vlmparity.sim.faults import fault_for
from vlmparity.tasks.base import request_hash

MODEL = "llava-hf/llava-1.5-7b-hf"


def _png_url(color: tuple[int, int, int]) -> str:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _body(text: str, images: int = 1, **extra: Any) -> dict[str, Any]:
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": _png_url((i * 40, 10, 200))}} for i in range(images)
    ]
    content.append({"type": "text", "text": text})
    return {"messages": [{"role": "user", "content": content}], "max_tokens": 16, "temperature": 0.0, **extra}


async def _collect(dispatcher: Dispatcher, items: list[tuple[str, dict[str, Any]]]) -> list[Result]:
    results: list[Result] = []

    async def on_result(result: Result) -> None:
        results.append(result)

    await dispatcher.run(items, on_result)
    return results


# -- resolve --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "path", "kind", "api"),
    [
        ({"personality": "vllm"}, "", BackendKind("vllm"), "/v1"),
        ({"personality": "vllm"}, "/v1", BackendKind("vllm"), "/v1"),
        ({"personality": "ovms", "ovms_version": "2025.2"}, "", BackendKind("ovms"), "/v3"),
        ({"personality": "ovms", "ovms_version": "2025.2"}, "/v1", BackendKind("ovms"), "/v3"),
        ({"personality": "ovms", "ovms_version": "2025.4"}, "/v3", BackendKind("ovms"), "/v3"),
        ({"personality": "ovms", "ovms_version": "2026.3"}, "/v1", BackendKind("ovms"), "/v1"),
    ],
)
def test_resolve_against_sim(overrides: dict[str, Any], path: str, kind: BackendKind, api: str) -> None:
    async def main() -> tuple[str, Any]:
        async with AsyncSimServer(SimConfig(**overrides)) as sim:
            return sim.url, await resolve_endpoint(EndpointSpec(url=sim.url + path), ready_timeout=5)

    root, ep = asyncio.run(main())
    assert (ep.kind, ep.chat_url, ep.model) == (kind, root + api + "/chat/completions", MODEL)


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
def test_resolve_waits_for_startup(personality: str) -> None:
    def refused(sim: AsyncSimServer) -> int:
        return sum(1 for e in sim.log if e.status == 503)  # readiness polls answered "not ready"

    async def main() -> tuple[Any, int]:
        async with AsyncSimServer(SimConfig(personality=personality, startup_delay=3600)) as sim:

            async def end_startup() -> None:  # on a condition, not a delay a slow client could outlast
                while refused(sim) < 3:
                    await asyncio.sleep(0.01)
                sim.mark_ready()

            ender = asyncio.create_task(end_startup())
            ep = await resolve_endpoint(EndpointSpec(url=sim.url), ready_timeout=60, poll_interval=0.05)
            await ender
            return ep, refused(sim)

    ep, not_ready = asyncio.run(main())
    assert ep.model == MODEL
    assert not_ready >= 3  # it kept polling while the server was starting (a ready server sends no 503)


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
def test_resolve_wrong_model_against_sim(personality: str) -> None:
    async def main() -> None:
        async with AsyncSimServer(SimConfig(personality=personality)) as sim:
            await resolve_endpoint(EndpointSpec(url=sim.url, model="llava-1.5"), ready_timeout=2)

    with pytest.raises(EndpointError, match=f"model 'llava-1.5' is not served by .*; served: {MODEL}"):
        asyncio.run(main())


# -- dispatch ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
def test_faults_are_retried_exactly_as_injected(personality: str) -> None:
    faults = FaultConfig(
        fault_seed=3,
        p_500=0.06,
        p_503=0.06,
        p_429=0.06,
        p_reset=0.06,
        p_truncated=0.06,
        p_non_json=0.06,
        p_html=0.06,
        retry_after=0,
    )
    bodies = {f"s{i}": _body(f"Is there a cat in image {i}? Answer yes or no.") for i in range(24)}
    max_attempts = 12

    async def main() -> tuple[list[Result], list[Any]]:
        cfg = SimConfig(personality=personality, faults=faults, image_limit=None)
        async with AsyncSimServer(cfg) as sim:
            ep = await resolve_endpoint(EndpointSpec(url=sim.url), ready_timeout=5)
            retry = RetryPolicy(max_attempts=max_attempts, backoff_base_s=0.005, backoff_max_s=0.02)
            results = await _collect(Dispatcher(ep, concurrency=4, retry=retry), list(bodies.items()))
            return results, [e for e in sim.log if e.path.endswith("/chat/completions") and e.body_hash]

    results, chat_log = asyncio.run(main())
    assert len(results) == len(bodies)
    for result in results:
        digest = request_hash(bodies[result.sample_id])
        # The simulator's schedule: the nth arrival of this body fails with fault_for(...), independently
        # of arrival order; the client must stop at the first clean arrival.
        schedule = [fault_for(faults, digest, n) for n in range(max_attempts)]
        expected = next((n + 1 for n, kind in enumerate(schedule) if kind is None), max_attempts)
        assert result.attempts == expected, (result.sample_id, schedule)
        assert sum(1 for e in chat_log if e.body_hash == digest) == expected
        assert result.outcome is Outcome.OK
    assert any(r.attempts > 1 for r in results)  # the schedule did inject faults


def test_image_limit_against_vllm_sim() -> None:
    async def main() -> list[Result]:
        async with AsyncSimServer(SimConfig(personality="vllm", image_limit=1)) as sim:
            ep = await resolve_endpoint(EndpointSpec(url=sim.url), ready_timeout=5)
            return await _collect(Dispatcher(ep, concurrency=2), [("two", _body("Compare.", images=2))])

    (result,) = asyncio.run(main())
    assert (result.outcome, result.image_limit, result.status, result.attempts) == (
        Outcome.UNSUPPORTED,
        1,
        400,
        1,
    )


def test_hang_times_out_against_sim() -> None:
    async def main() -> list[Result]:
        faults = FaultConfig(p_hang=1.0, hang_seconds=5.0)
        async with AsyncSimServer(SimConfig(personality="ovms", faults=faults)) as sim:
            ep = await resolve_endpoint(EndpointSpec(url=sim.url), ready_timeout=5)
            retry = RetryPolicy(max_attempts=2, backoff_base_s=0.01, backoff_max_s=0.02)
            dispatcher = Dispatcher(ep, concurrency=1, attempt_timeout_s=0.2, retry=retry)
            return await _collect(dispatcher, [("h", _body("Is it red?"))])

    (result,) = asyncio.run(main())
    assert (result.outcome, result.transient, result.attempts) == (Outcome.TIMEOUT, True, 2)


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
@pytest.mark.parametrize("stream", [False, True])
def test_answers_match_the_sim_log(personality: str, stream: bool) -> None:
    extra = {"stream": True, "stream_options": {"include_usage": True}} if stream else {}
    bodies = {
        f"q{i}": _body(f"Question {i}: is the image blue? Please answer yes or no.", **extra)
        for i in range(6)
    }

    async def main() -> tuple[list[Result], list[Any]]:
        async with AsyncSimServer(SimConfig(personality=personality)) as sim:
            ep = await resolve_endpoint(EndpointSpec(url=sim.url), ready_timeout=5)
            results = await _collect(Dispatcher(ep, concurrency=3), list(bodies.items()))
            return results, [e for e in sim.log if e.model is not None]  # not the probe's empty POST

    results, log = asyncio.run(main())
    by_hash = {e.body_hash: e for e in log}
    assert len(by_hash) == len(bodies) == len(results)
    for result in results:
        entry = by_hash[request_hash(bodies[result.sample_id])]
        assert entry.model == MODEL
        assert entry.stream is stream
        assert result.text == entry.answer
        assert result.finish_reason == entry.finish_reason
        assert (result.prompt_tokens, result.completion_tokens) == (
            entry.prompt_tokens,
            entry.completion_tokens,
        )
        assert result.outcome is (Outcome.LENGTH if entry.finish_reason == "length" else Outcome.OK)
        assert (result.ttft_s is not None) is stream


@pytest.mark.slow
def test_adaptive_settles_below_max_against_a_saturated_sim() -> None:
    # capacity 4, 50 ms per request: at n in flight, latency ~ n/4 * 0.05 s. Slow start ends at the first
    # queueing (latency above floor + 50 ms, n ~ 20); the controller cuts when even the fastest recent
    # answer is above floor + 0.25 s (n above ~24-30), so it must stay well below its maximum of 64.
    from vlmparity.sim import LoadConfig

    load = LoadConfig(capacity=4, base_latency=0.05, per_image=0, per_token=0)

    async def main() -> tuple[Dispatcher, Any]:
        async with AsyncSimServer(SimConfig(personality="vllm", load=load)) as sim:
            ep = await resolve_endpoint(EndpointSpec(url=sim.url), ready_timeout=5)
            dispatcher = Dispatcher(ep, max_concurrency=64)
            await _collect(dispatcher, [(f"s{i}", _body(f"question {i}")) for i in range(300)])
            return dispatcher, sim.load_stats

    dispatcher, load_stats = asyncio.run(main())
    limits = [c.limit for c in dispatcher.limit_history]
    assert max(limits) <= 40
    assert limits[-1] <= 40
    assert any(c.reason == "slow start ends: queueing" for c in dispatcher.limit_history)
    assert load_stats.max_running == 4 and load_stats.served >= 300
