"""Injected faults over real HTTP: every kind observed by a client, reproducible schedules, counters."""

from __future__ import annotations

import json
import math
from typing import Any

import httpx
import openai
import pytest

from test_sim_support import MODEL
from vlmparity.sim import SimServer
from vlmparity.sim.config import FAULT_KINDS, FaultConfig
from vlmparity.sim.faults import fault_for

FAST = {"time_scale": 0}


def text_body(i: int, **extra: Any) -> dict[str, Any]:
    """A distinct text-only request per `i` (faults are drawn per body)."""
    content = f"Question {i}: is the number {i} even? Answer yes or no."
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 8,
        "temperature": 0,
        **extra,
    }


def send(sim: SimServer, body: dict[str, Any], timeout: float = 10.0) -> httpx.Response:
    return httpx.post(sim.base_url + "/chat/completions", json=body, timeout=timeout)


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
@pytest.mark.parametrize("status", [500, 503, 429])
def test_http_status_faults(personality: str, status: int) -> None:
    with SimServer(personality=personality, load=FAST, faults={f"p_{status}": 1.0, "retry_after": 3}) as sim:
        response = send(sim, text_body(1))
        assert response.status_code == status
        assert response.headers["content-type"].startswith("application/json")
        error = response.json()["error"]
        assert isinstance(error, dict if personality == "vllm" else str)
        if status in (429, 503):
            assert response.headers["Retry-After"] == "3"
        assert sim.fault_counts == {f"http_{status}": 1}
        assert sim.chat_log[-1].fault == f"http_{status}" and sim.chat_log[-1].outcome == "fault"


@pytest.mark.parametrize("stream", [False, True])
def test_connection_reset(stream: bool) -> None:
    with SimServer(load=FAST, faults={"p_reset": 1.0}) as sim:
        with pytest.raises((httpx.ReadError, httpx.RemoteProtocolError)):
            send(sim, text_body(2, stream=stream))
        assert sim.fault_counts == {"reset": 1}
        assert sim.chat_log[-1].status == 0


def test_hang_longer_than_client_timeout() -> None:
    with SimServer(load=FAST, faults={"p_hang": 1.0, "hang_seconds": 60}) as sim:
        with pytest.raises(httpx.ReadTimeout):
            send(sim, text_body(3), timeout=2)  # long enough for the server to have parsed it
        assert sim.fault_counts == {"hang": 1}
    # leaving the block stopped the server although a handler was still hanging


@pytest.mark.parametrize("stream", [False, True])
def test_truncated_body(stream: bool) -> None:
    with SimServer(
        load=FAST,
        faults={"p_truncated": 1.0},
        answers={"styles": {"terse": 0, "verbose": 1, "unparseable": 0}},
    ) as sim:
        with pytest.raises(httpx.RemoteProtocolError):
            send(sim, text_body(4, stream=stream))
        assert sim.fault_counts == {"truncated": 1}


def test_non_json_body() -> None:
    with SimServer(load=FAST, faults={"p_non_json": 1.0}) as sim:
        response = send(sim, text_body(5))
        assert response.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(response.text)
        stream = send(sim, text_body(6, stream=True))
        payloads = [
            line[6:]
            for line in stream.text.split("\n")
            if line.startswith("data: ") and line != "data: [DONE]"
        ]
        bad = 0
        for payload in payloads:
            try:
                json.loads(payload)
            except json.JSONDecodeError:
                bad += 1
        assert bad == 1


def test_html_error_page() -> None:
    with SimServer(personality="ovms", load=FAST, faults={"p_html": 1.0}) as sim:
        response = send(sim, text_body(7))
        assert response.status_code == 502
        assert response.headers["content-type"].startswith("text/html")
        assert "<html>" in response.text


def test_sdk_retries_draw_again_and_are_logged() -> None:
    # every attempt fails: the SDK retries twice, each retry is the same body's next arrival
    with SimServer(load=FAST, faults={"p_500": 1.0}) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="unused", max_retries=2)
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(**{k: v for k, v in text_body(8).items()})
        attempts = [e.attempt for e in sim.chat_log]
        assert attempts == [0, 1, 2]
        assert len({e.body_hash for e in sim.chat_log}) == 1
        assert sim.fault_counts == {"http_500": 3}


def test_schedule_is_reproducible_and_order_independent() -> None:
    faults = {"fault_seed": 42, "p_500": 0.2, "p_503": 0.1, "p_429": 0.1, "p_html": 0.1}
    bodies = [text_body(i) for i in range(30)]
    plan = bodies + bodies[:10]  # the first ten are sent twice (retries)

    def outcomes(order: list[dict[str, Any]]) -> dict[str, list[int]]:
        """Statuses per body, in that body's arrival order."""
        seen: dict[str, list[int]] = {}
        with SimServer(load=FAST, faults=faults) as sim:
            for body in order:
                seen.setdefault(body["messages"][0]["content"], []).append(send(sim, body).status_code)
        return seen

    forward = outcomes(plan)
    backward = outcomes(list(reversed(bodies)) + bodies[:10])
    assert forward == backward
    assert (
        len({s for statuses in forward.values() for s in statuses}) > 1
    )  # faults and successes both happened
    with SimServer(load=FAST, faults={**faults, "fault_seed": 43}) as other:
        other_statuses = [send(other, body).status_code for body in bodies]
    assert other_statuses != [forward[b["messages"][0]["content"]][0] for b in bodies]


def test_fault_rates_match_configuration() -> None:
    cfg = FaultConfig(
        fault_seed=7,
        p_500=0.1,
        p_503=0.05,
        p_429=0.05,
        p_reset=0.05,
        p_hang=0.05,
        p_truncated=0.05,
        p_non_json=0.05,
        p_html=0.05,
    )
    n = 4000
    draws = [fault_for(cfg, f"body-{i}", 0) for i in range(n)]
    for kind, p in cfg.probabilities().items():
        count = sum(d == kind for d in draws)
        assert abs(count - n * p) <= 4 * math.sqrt(n * p * (1 - p)), (kind, count)
    assert sum(d is None for d in draws) == pytest.approx(n * 0.55, abs=4 * math.sqrt(n * 0.55 * 0.45))
    assert set(FAULT_KINDS) == set(cfg.probabilities())


def test_fault_rate_over_http() -> None:
    p = 0.3
    n = 300
    with SimServer(load=FAST, faults={"p_500": p, "fault_seed": 3}) as sim:
        statuses = [send(sim, text_body(1000 + i)).status_code for i in range(n)]
        assert sim.fault_counts.get("http_500", 0) == statuses.count(500)
    assert set(statuses) == {200, 500}
    assert abs(statuses.count(500) - n * p) <= 4 * math.sqrt(n * p * (1 - p))
