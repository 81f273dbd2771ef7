"""`vlmparity doctor` against the in-process simulator (over real HTTP) and, for what the simulator cannot
do (require an API key, answer non-JSON, lack a chat path), small fake servers.

Expected values come from what each simulator configuration is documented to do (sim/config.py,
sim/personality.py, sim/answers.py) and from research/servers.md (§1.1 OVMS paths per release, §1.7 and
§2.4 error shapes, §2.3 the vLLM image-limit message): never from running the doctor.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import orjson
import pytest
from aiohttp import web

from vlmparity.cli import main
from vlmparity.client import EndpointSpec
from vlmparity.doctor import (
    DoctorReport,
    error_shape,
    judge_determinism,
    judge_seed,
    ovms_release,
    run_doctor,
)
from vlmparity.sim import SimConfig, SimServer
from vlmparity.sim.reqlog import LogEntry

LLAVA = "llava-hf/llava-1.5-7b-hf"  # the simulator's default served name


def sim_config(**overrides: Any) -> SimConfig:
    """Zero latency; at temperature 1 every answer is redrawn from the request's seed (temperature_noise 2),
    so one seed always gives one text and other seeds pick among several. `answers` entries are added."""
    answers = {"temperature_noise": 2.0, **overrides.pop("answers", {})}
    return SimConfig.model_validate({"load": {"time_scale": 0}, "answers": answers, **overrides})


@contextmanager
def sim_server(**overrides: Any) -> Iterator[SimServer]:
    with SimServer(sim_config(**overrides)) as sim:
        yield sim


def doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Run `vlmparity doctor ARGS` in-process; (exit code, stdout)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        main(["doctor", *args])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    code = info.value.code
    return (code if isinstance(code, int) else 0), out.out


def doctor_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    code, out = doctor(capsys, *args, "--json")
    doc = json.loads(out)
    assert doc["exit_code"] == code
    return code, doc


def marks(doc: dict[str, Any]) -> dict[str, str]:
    return {c["id"]: c["mark"] for c in doc["checks"]}


def check(doc: dict[str, Any], check_id: str) -> dict[str, Any]:
    found = [c for c in doc["checks"] if c["id"] == check_id]
    assert len(found) == 1, f"no single {check_id!r} check in {[c['id'] for c in doc['checks']]}"
    return found[0]


def chat_requests(sim: SimServer) -> list[LogEntry]:
    """Chat requests that carried a model (not the client's empty `{}` path probes)."""
    return [e for e in sim.chat_log if e.model is not None]


ALL_CHECKS = [
    "reachable",
    "backend",
    "ready",
    "models",
    "model",
    "chat",
    "images",
    "determinism",
    "seed",
    "streaming",
    "usage",
    "errors",
    "logprobs",
]


# ---------------------------------------------------------------------------------------------- vLLM


def test_vllm_deterministic_with_image_limit_one_and_nested_errors(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with sim_server() as sim:  # vLLM 0.11.0, --limit-mm-per-prompt image=1 (the sim's defaults)
        code, doc = doctor_json(capsys, sim.base_url, "--model", LLAVA, "--api-key", "sk-doctor-SECRET")
        log = chat_requests(sim)
    assert code == 0 and doc["evaluable"] is True
    assert [c["id"] for c in doc["checks"]] == ALL_CHECKS
    assert doc["kind"] == "vllm" and doc["server_version"] == "0.11.0"
    assert doc["model"] == LLAVA and doc["served_models"] == [LLAVA] and doc["max_model_len"] == 4096
    assert doc["chat_url"] == sim.base_url + "/chat/completions"
    # images: 1 answered, 2 refused with vLLM's limit message; 3 never sent
    assert doc["image_limit"] == 1
    assert doc["images"] == {"1": "ok", "2": "unsupported"}
    assert max(e.image_count for e in log) == 2
    images = check(doc, "images")
    assert images["mark"] == "warn"
    assert "At most 1 image(s) may be provided in one prompt." in images["detail"]
    assert "unsupported" in images["detail"] and "--multi-image error" in images["detail"]
    assert """--limit-mm-per-prompt '{"image": 7}'""" in images["fix"]
    # behaviour the simulator has by construction
    assert doc["deterministic"] is True
    assert doc["seed"] == "honoured"
    assert doc["streaming"] is True and doc["stream_done"] is True and doc["stream_matches_unary"] is True
    assert doc["usage_unary"] is True and doc["usage_stream"] is True
    assert doc["error_shape"] == "nested"
    assert doc["errors"]["unknown_model"]["status"] == 404
    assert (
        doc["errors"]["unknown_model"]["message"]
        == "The model `vlmparity-doctor-no-such-model` does not exist."
    )
    assert doc["errors"]["corrupt_image"]["status"] == 400
    assert doc["errors"]["corrupt_image"]["message"].startswith("Failed to load image")
    assert {k: v for k, v in marks(doc).items() if v != "ok"} == {"images": "warn"}
    # what was sent: tiny requests, the seed pair at temperature 1, the key never echoed
    assert log and all(e.max_tokens == 8 for e in log if e.status == 200)
    seeded = [e for e in log if e.seed == 1234]
    assert len(seeded) == 2 and all(e.temperature == 1.0 for e in seeded)
    unseeded = [e for e in log if e.seed is None and e.status == 200]
    assert unseeded and all(e.temperature == 0.0 for e in unseeded)
    assert "sk-doctor-SECRET" not in json.dumps(doc)

    with sim_server() as sim:
        code, out = doctor(capsys, sim.base_url, "--api-key", "sk-doctor-SECRET")
    lines = out.splitlines()
    assert code == 0
    assert lines[0].startswith("✓ reachable: ")
    assert "✓ backend: vLLM 0.11.0 (/version)" in out
    assert any(line.startswith("! images per request: at most 1 image per request") for line in lines)
    assert any(line.startswith("✓ determinism: temperature 0: the same request twice") for line in lines)
    assert any(line.startswith("✓ seed: honoured") for line in lines)
    assert any(line.startswith("✓ streaming: SSE works") and "data: [DONE]" in line for line in lines)
    assert any(line.startswith('✓ errors: {"error": {"message"') for line in lines)
    assert lines[-1].endswith("(1 warning)")
    assert "sk-doctor-SECRET" not in out


def test_vllm_before_0_10_1_has_flat_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_server(vllm_version="0.9.2") as sim:
        code, doc = doctor_json(capsys, sim.base_url)
    assert code == 0
    assert doc["server_version"] == "0.9.2"
    assert doc["error_shape"] == "flat"
    assert doc["errors"]["unknown_model"]["shape"] == "flat"
    assert doc["errors"]["corrupt_image"]["shape"] == "flat"
    errors = check(doc, "errors")
    assert errors["mark"] == "ok" and "vLLM < 0.10.1" in errors["detail"]


def test_vllm_error_shape_that_contradicts_its_version_is_flagged(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_server(vllm_version="0.11.0", vllm_error_format="flat") as sim:
        code, doc = doctor_json(capsys, sim.base_url)
    assert code == 0
    assert doc["error_shape"] == "flat"
    errors = check(doc, "errors")
    assert errors["mark"] == "warn" and "unexpected for vLLM 0.11.0 (nested expected)" in errors["detail"]


@pytest.mark.parametrize(
    ("limit", "expected_limit", "images"),
    [
        (None, None, {"1": "ok", "2": "ok", "3": "ok"}),
        (2, 2, {"1": "ok", "2": "ok", "3": "unsupported"}),
    ],
)
def test_vllm_image_limit_reported(
    capsys: pytest.CaptureFixture[str], limit: int | None, expected_limit: int | None, images: dict[str, str]
) -> None:
    with sim_server(image_limit=limit) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
        sent = sorted({e.image_count for e in chat_requests(sim)})
    assert code == 0
    assert doc["image_limit"] == expected_limit
    assert doc["images"] == images
    assert sent == [0, 1, 2, 3]  # 0: the seed probes are text-only
    images_check = check(doc, "images")
    if limit is None:
        assert images_check["mark"] == "ok" and images_check["fix"] is None
    else:
        assert images_check["mark"] == "warn"
        assert "at most 2 images per request" in images_check["detail"]


def test_text_only_model_cannot_be_evaluated(capsys: pytest.CaptureFixture[str]) -> None:
    # vLLM with --limit-mm-per-prompt image=0: the first one-image request already gets the limit 400.
    with sim_server(image_limit=0) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
    assert code == 3
    chat = check(doc, "chat")
    assert chat["mark"] == "fail" and "takes no images" in chat["detail"]
    assert [c["id"] for c in doc["checks"]] == ALL_CHECKS[:6]


# ------------------------------------------------------------------------------------------------ OVMS


@pytest.mark.parametrize(
    ("version", "release", "v3_models"),
    [("2025.2", "2025.2 or older", False), ("2025.4", "2025.3 to 2026.2", True)],
)
def test_ovms_old_release_serves_v3_only(
    capsys: pytest.CaptureFixture[str], version: str, release: str, v3_models: bool
) -> None:
    with sim_server(personality="ovms", ovms_version=version) as sim:
        code, doc = doctor_json(capsys, sim.url + "/v3")
        code_v1, doc_v1 = doctor_json(capsys, sim.url + "/v1")  # a vLLM-style URL given to an old OVMS
    assert code == 0 and doc["kind"] == "ovms"
    assert doc["release"] == release
    assert doc["ovms_paths"] == {"/v3": True, "/v1": False, "/v3/models": v3_models}
    assert doc["chat_url"] == sim.url + "/v3/chat/completions"
    backend = check(doc, "backend")
    assert backend["mark"] == "ok" and "/v1 needs OVMS 2026.3 or newer" in backend["detail"]
    # OVMS: no image limit, flat string errors, 404 for an unknown graph, 400 wrapped for a bad image
    assert doc["image_limit"] is None and doc["images"] == {"1": "ok", "2": "ok", "3": "ok"}
    assert doc["error_shape"] == "flat-string"
    assert doc["errors"]["unknown_model"] == {
        "status": 404,
        "outcome": "http_error",
        "shape": "flat-string",
        "message": "Mediapipe graph definition with requested name is not found",
    }
    assert doc["errors"]["corrupt_image"]["status"] == 400
    assert doc["errors"]["corrupt_image"]["message"] == "Image parsing failed"
    assert doc["deterministic"] is True and doc["seed"] == "honoured"
    assert doc["streaming"] is True and doc["usage_stream"] is True
    assert all(v == "ok" for v in marks(doc).values())
    # given /v1 it still works, on /v3, and says so
    assert code_v1 == 0 and doc_v1["chat_url"] == sim.url + "/v3/chat/completions"
    backend_v1 = check(doc_v1, "backend")
    assert backend_v1["mark"] == "warn"
    assert "OVMS serves /v1 only from 2026.3; using /v3" in backend_v1["detail"]
    assert backend_v1["fix"].startswith(f"use {sim.url}/v3 as the base URL")


def test_ovms_2026_3_serves_v1_too(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_server(personality="ovms", ovms_version="2026.3") as sim:
        code, doc = doctor_json(capsys, sim.url + "/v1")
        code_text, out = doctor(capsys, sim.url + "/v3")
    assert code == 0 and doc["kind"] == "ovms"
    assert doc["release"] == "2026.3 or newer"
    assert doc["ovms_paths"] == {"/v3": True, "/v1": True, "/v3/models": True}
    assert doc["chat_url"] == sim.url + "/v1/chat/completions"
    assert check(doc, "backend")["mark"] == "ok"
    assert doc["error_shape"] == "flat-string"
    assert code_text == 0
    assert "✓ backend: OpenVINO Model Server: serves /v3 and /v1 " in out
    assert "release 2026.3 or newer" in out
    assert '✓ errors: {"error": "<message>"} (OVMS)' in out


# ---------------------------------------------------------------------------------- cannot be evaluated


@pytest.mark.parametrize("personality", ["vllm", "ovms"])
def test_wrong_model_lists_served_names(capsys: pytest.CaptureFixture[str], personality: str) -> None:
    with sim_server(personality=personality) as sim:
        code, doc = doctor_json(capsys, sim.base_url, "--model", "llava-typo")
        code_text, out = doctor(capsys, sim.base_url, "--model", "llava-typo")
        sent = chat_requests(sim)
    assert code == 3 and doc["evaluable"] is False
    assert doc["served_models"] == [LLAVA]
    assert [c["id"] for c in doc["checks"]] == ["reachable", "backend", "ready", "models", "model"]
    model = check(doc, "model")
    assert model["mark"] == "fail"
    assert "'llava-typo' is not served" in model["detail"] and model["detail"].endswith(f"served: {LLAVA}")
    assert model["fix"] == f"pass --model {LLAVA!r}"
    assert sent == []  # nothing is sent to a model that does not exist
    assert code_text == 3
    assert out.splitlines()[-1].startswith("✗ model: model 'llava-typo' is not served")


@pytest.mark.parametrize(("personality", "route"), [("vllm", "/health"), ("ovms", "/v2/health/ready")])
def test_not_ready_within_timeout(capsys: pytest.CaptureFixture[str], personality: str, route: str) -> None:
    with sim_server(personality=personality, startup_delay=3600) as sim:
        code, doc = doctor_json(capsys, sim.base_url, "--timeout", "0.3")
        code_text, out = doctor(capsys, sim.base_url, "--timeout", "0")
    assert code == 3
    assert [c["id"] for c in doc["checks"]] == ["reachable", "backend", "ready"]
    ready = check(doc, "ready")
    assert ready["mark"] == "fail"
    assert "not ready after" in ready["detail"] and f"{route} answered 503" in ready["detail"]
    assert "raise --ready-timeout" in ready["fix"]
    assert code_text == 3
    assert out.splitlines()[-1].startswith("✗ ready: ")


def test_startup_shorter_than_timeout_is_waited_for(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_server(startup_delay=3600) as sim:

        def end_startup() -> None:  # once the doctor has been told "not ready" twice (not after a delay)
            deadline = time.monotonic() + 60
            while sum(1 for e in sim.log if e.status == 503) < 2 and time.monotonic() < deadline:
                time.sleep(0.01)
            sim.mark_ready()

        ender = threading.Thread(target=end_startup, daemon=True)
        ender.start()
        code, doc = doctor_json(capsys, sim.base_url, "--timeout", "60")
        ender.join()
        not_ready = sum(1 for e in sim.log if e.status == 503)
    assert code == 0 and check(doc, "ready")["mark"] == "ok"
    assert not_ready >= 2  # it really waited


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dead_port_one_line_no_traceback() -> None:
    url = f"http://127.0.0.1:{_free_port()}/v1"
    out = subprocess.run(
        [sys.executable, "-m", "vlmparity", "doctor", url, "--timeout", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 3
    assert out.stderr == ""
    lines = out.stdout.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"✗ reachable: cannot connect to {url}: connection refused")
    assert "→ check the host and port" in lines[0]


def test_refused_connection_fails_at_once_unless_asked_to_wait() -> None:
    """Nothing listening: without --ready-timeout one attempt, then the checklist (no 30 s retry loop);
    with --ready-timeout the refusals are retried until it runs out. The attempts are counted on a
    transport that refuses every connection, as a dead port does."""
    import httpx

    from vlmparity.client.probe import resolve_endpoint
    from vlmparity.errors import EndpointError

    def attempts(**kwargs: Any) -> int:
        calls = 0

        def refuse(request: httpx.Request) -> httpx.Response:
            nonlocal calls
            calls += 1
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

        async def go() -> None:
            async with httpx.AsyncClient(transport=httpx.MockTransport(refuse)) as client:
                await resolve_endpoint(
                    EndpointSpec(url="http://127.0.0.1:1/v1"), client=client, poll_interval=0.001, **kwargs
                )

        with pytest.raises(EndpointError, match="cannot connect"):
            asyncio.run(go())
        return calls

    assert attempts(ready_timeout=30.0, connect_timeout=0.0) == 1  # doctor's default
    assert attempts(ready_timeout=0.2) > 1  # --ready-timeout 0.2: refusals retried meanwhile
    # the command: no --ready-timeout, a dead port: exit 3 and the fix names the option
    url = f"http://127.0.0.1:{_free_port()}/v1"
    out = subprocess.run(
        [sys.executable, "-m", "vlmparity", "doctor", url], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 3, out.stderr
    (line,) = out.stdout.splitlines()
    assert line.startswith(f"✗ reachable: cannot connect to {url}: connection refused")
    assert "waited" not in line and "pass --ready-timeout SECONDS to wait while it starts" in line


def test_dead_port_json(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    code, doc = doctor_json(capsys, url, "--timeout", "0")
    assert code == 3
    assert [(c["id"], c["mark"]) for c in doc["checks"]] == [("reachable", "fail")]
    assert doc["kind"] is None and doc["model"] is None


def test_usage_errors_exit_4(capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["localhost:8000"], ["http://127.0.0.1:1", "--kind", "tgi"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as info:
            main(["doctor", *args])
        err = capsys.readouterr().err
        assert info.value.code == 4
        assert err.startswith("vlmparity: error: ") and len(err.splitlines()) == 1


# ----------------------------------------------------------------------- misbehaving servers (sim knobs)


def non_ok(doc: dict[str, Any]) -> dict[str, str]:
    return {k: v for k, v in marks(doc).items() if v != "ok"}


def test_nondeterministic_at_temperature_zero_warns(capsys: pytest.CaptureFixture[str]) -> None:
    # answers.nondeterminism 1: every temperature-0 answer is a fresh random draw (batch-dependent numerics)
    with sim_server(answers={"nondeterminism": 1.0}) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
        log = chat_requests(sim)
    assert code == 0 and doc["evaluable"] is True
    # what the server did: the one-image temperature-0 request twice, two different texts
    first, again = [e for e in log if e.status == 200 and e.image_count == 1 and not e.stream][:2]
    assert first.body_hash == again.body_hash and first.temperature == 0.0
    assert first.answer != again.answer
    assert doc["deterministic"] is False
    determinism = check(doc, "determinism")
    assert determinism["mark"] == "warn"
    assert (
        f"temperature 0 is not deterministic: {first.answer!r} then {again.answer!r}" in determinism["detail"]
    )
    assert "--seed parity" in determinism["fix"]
    # the stream (temperature 0 too) got yet another draw; seeded sampling is untouched
    assert doc["stream_matches_unary"] is False and check(doc, "streaming")["mark"] == "warn"
    assert doc["seed"] == "honoured"
    assert non_ok(doc) == {"images": "warn", "determinism": "warn", "streaming": "warn"}


def test_seed_ignored_warns(capsys: pytest.CaptureFixture[str]) -> None:
    # answers.honour_seed false: at temperature 1 (always redrawn here) the seed is not used
    with sim_server(answers={"honour_seed": False}) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
        seeded = [e for e in chat_requests(sim) if e.seed == 1234]
    assert code == 0
    assert len(seeded) == 2 and all(e.temperature == 1.0 for e in seeded)
    assert seeded[0].answer != seeded[1].answer  # what the server did
    assert doc["seed"] == "ignored"
    seed = check(doc, "seed")
    assert seed["mark"] == "warn"
    assert seed["detail"].startswith(
        f"ignored: at temperature 1 seed 1234 twice gave different texts ({seeded[0].answer!r}, "
        f"{seeded[1].answer!r})"
    )
    assert "evaluate at temperature 0" in seed["fix"]
    assert doc["deterministic"] is True  # temperature 0 does not read the seed
    assert non_ok(doc) == {"images": "warn", "seed": "warn"}


def test_no_usage_warns(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_server(usage=False) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
    assert code == 0
    assert doc["usage_unary"] is False and doc["usage_stream"] is False
    usage = check(doc, "usage")
    assert usage["mark"] == "warn"
    assert (
        usage["detail"] == "no token usage in unary answers nor in streams with stream_options.include_usage"
    )
    assert doc["streaming"] is True and doc["stream_done"] is True
    assert non_ok(doc) == {"images": "warn", "usage": "warn"}


def test_stream_without_done_warns(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_server(stream_done=False) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
        streamed = [e for e in chat_requests(sim) if e.stream]
    assert code == 0
    assert doc["streaming"] is True and doc["stream_done"] is False
    assert doc["usage_stream"] is True and doc["stream_matches_unary"] is True
    # the sim streams a role delta, one chunk per word and the usage chunk (sim/server.py)
    assert len(streamed) == 1
    events = 1 + len(streamed[0].answer.split()) + 1  # type: ignore[union-attr]
    streaming = check(doc, "streaming")
    assert streaming["mark"] == "warn"
    assert streaming["detail"] == f"{events} SSE events but no closing data: [DONE]"
    assert non_ok(doc) == {"images": "warn", "streaming": "warn"}


def test_ovms_without_usage_nor_done(capsys: pytest.CaptureFixture[str]) -> None:
    with sim_server(personality="ovms", usage=False, stream_done=False) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
    assert code == 0 and doc["kind"] == "ovms"
    assert doc["usage_unary"] is False and doc["usage_stream"] is False
    assert doc["streaming"] is True and doc["stream_done"] is False
    assert non_ok(doc) == {"streaming": "warn", "usage": "warn"}


# -------------------------------------------------------------- fake servers (what the sim cannot do)


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


def keyed_vllm_app(key: str) -> web.Application:
    """A vLLM-like server whose /v1 routes need `Authorization: Bearer <key>` (vLLM --api-key). A fake,
    because the simulator accepts any request whatever its Authorization header."""

    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.path.startswith("/v1") and request.headers.get("Authorization") != f"Bearer {key}":
            return _json({"error": "Unauthorized"}, 401)
        return await handler(request)

    async def health(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(request: web.Request) -> web.Response:
        return _json({"version": "0.11.0"})

    async def models(request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": "m", "object": "model", "owned_by": "vllm"}]})

    async def chat(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        if "messages" not in doc:
            return _json({"error": {"message": "messages: Field required", "type": "BadRequestError"}}, 400)
        if doc.get("model") != "m":
            msg = f"The model `{doc.get('model')}` does not exist."
            return _json(
                {"error": {"message": msg, "type": "NotFoundError", "param": "model", "code": 404}}, 404
            )
        message = {"role": "assistant", "content": "red"}
        return _json({"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

    app = web.Application(middlewares=[auth])
    app.router.add_get("/health", health)
    app.router.add_get("/version", version)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    return app


@asynccontextmanager
async def serving(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def doctor_on(app: web.Application, path: str = "/v1", **kwargs: Any) -> DoctorReport:
    async def go() -> DoctorReport:
        async with serving(app) as root:
            return await run_doctor(EndpointSpec(url=root + path, **kwargs), timeout=0)

    return asyncio.run(go())


def test_api_key_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    report = doctor_on(keyed_vllm_app(key="sk-doctor-KEY"))
    assert report.exit_code == 3
    last = report.checks[-1]
    assert last.mark == "fail" and "refused the request (401" in last.detail
    assert last.fix == "pass --api-key KEY or set OPENAI_API_KEY"
    report = doctor_on(keyed_vllm_app(key="sk-doctor-KEY"), api_key="sk-doctor-KEY")
    assert report.exit_code == 0 and report.check("chat") is not None
    assert "sk-doctor-KEY" not in json.dumps(report.to_dict())


def test_non_json_server_cannot_be_evaluated() -> None:
    # A fake: the simulator always answers JSON on its API routes.
    async def text(request: web.Request) -> web.Response:
        return web.Response(text="hello", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", text)
    report = doctor_on(app)
    assert report.exit_code == 3
    failed = [c for c in report.checks if c.mark == "fail"]
    assert len(failed) == 1 and failed[0] is report.checks[-1]
    assert "did not answer a JSON model list" in failed[0].detail


def test_no_chat_path_cannot_be_evaluated() -> None:
    # A fake: the simulator always serves a chat completions path next to its model list.
    async def models(request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models)
    report = doctor_on(app)
    assert report.exit_code == 3
    last = report.checks[-1]
    assert (last.id, last.mark) == ("chat", "fail")
    assert last.detail.startswith("no chat completions endpoint at ")
    assert report.check("model") is not None and report.check("model").mark == "ok"  # type: ignore[union-attr]


# ------------------------------------------------------------------------------------- pure judgements


def test_error_shapes_from_the_research_examples() -> None:
    # research/servers.md §2.4 (vLLM >= 0.10.1 and < 0.10.1) and §1.7 (OVMS)
    nested = {"error": {"message": "x", "type": "BadRequestError", "param": None, "code": 400}}
    flat = {"object": "error", "message": "x", "type": "BadRequestError", "param": None, "code": 400}
    assert error_shape(nested) == "nested"
    assert error_shape(flat) == "flat"
    assert (
        error_shape({"error": "Mediapipe graph definition with requested name is not found"}) == "flat-string"
    )
    assert error_shape({"detail": "Not Found"}) == "detail"
    assert error_shape(None) == "none"
    assert error_shape(["x"]) == "other"


def test_judgements() -> None:
    assert judge_determinism("a", "a") is True
    assert judge_determinism("a", "b") is False
    assert judge_determinism("a", None) is None
    assert judge_seed(("a", "a"), ["a", "b"]) == "honoured"
    assert judge_seed(("a", "b"), []) == "ignored"
    assert judge_seed(("a", "a"), ["a", "a", "a", "a"]) == "unclear"
    assert judge_seed(("a", None), []) == "unclear"
    assert judge_seed(("a", "a"), [None]) == "unclear"
    # research/servers.md §1.1: /v1 from 2026.3; /v3/models from 2025.3
    assert ovms_release(True, True) == "2026.3 or newer"
    assert ovms_release(False, True) == "2025.3 to 2026.2"
    assert ovms_release(False, False) == "2025.2 or older"


def test_logprobs_line_says_whether_the_endpoint_gives_them(capsys: pytest.CaptureFixture[str]) -> None:
    # the same probe `vlmparity run` sends before its first question (one per doctor, never faulted)
    with sim_server() as sim:
        code, doc = doctor_json(capsys, sim.base_url)
        assert len(sim.probe_log) == 1 and sim.probe_log[0].status == 200
    assert doc["logprobs"] is True and check(doc, "logprobs")["mark"] == "ok"
    with sim_server(tokens={"logprobs": False}) as sim:
        code, doc = doctor_json(capsys, sim.base_url)
    assert code == 0 and doc["logprobs"] is False  # a warning only: accuracy needs no log-probabilities
    line = check(doc, "logprobs")
    assert line["mark"] == "warn" and "carries no log-probabilities" in line["detail"]
