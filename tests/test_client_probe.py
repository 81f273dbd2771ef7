"""resolve_endpoint: detection of vLLM and OVMS (old /v3-only and new /v1) and one clear error per mistake.

The fake servers reproduce the routes and bodies listed in research/servers.md (§1.1, 1.2, 1.7, 2.1, 2.4).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web
from pydantic import SecretStr, ValidationError

from vlmparity.client import (
    BackendKind,
    EndpointSpec,
    ResolvedEndpoint,
    effective_api_key,
    resolve_endpoint,
    spec_from_env,
)
from vlmparity.client.endpoint import split_url
from vlmparity.client.probe import MIN_PROBE_TIMEOUT_S, PROBE_TIMEOUT_S
from vlmparity.errors import ConfigError, EndpointError

LLAVA = "llava-hf/llava-1.5-7b-hf"
SECRET = "sk-probe-SECRET-777"


def _json(doc: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json")


class Counts:
    def __init__(self) -> None:
        self.hits: Counter[str] = Counter()


def vllm_app(
    models: list[str] | None = None, *, key: str | None = None, health: bool = True
) -> tuple[web.Application, Counts]:
    """vLLM's OpenAI server: /health, /version, /v1/models, /v1/chat/completions; FastAPI 404s elsewhere."""
    served = models if models is not None else [LLAVA]
    counts = Counts()

    @web.middleware
    async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
        counts.hits[f"{request.method} {request.path}"] += 1
        if (
            key is not None
            and request.path.startswith("/v1")
            and request.headers.get("Authorization") != f"Bearer {key}"
        ):
            return _json({"error": {"message": "Unauthorized", "type": "Unauthorized", "code": 401}}, 401)
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _json({"detail": "Not Found"}, 404)

    async def health_(request: web.Request) -> web.Response:
        return web.Response(status=200)

    async def version(request: web.Request) -> web.Response:
        return _json({"version": "0.11.0"})

    async def models_(request: web.Request) -> web.Response:
        data = [
            {"id": m, "object": "model", "owned_by": "vllm", "root": m, "parent": None, "max_model_len": 4096}
            for m in served
        ]
        return _json({"object": "list", "data": data})

    async def chat(request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        if "messages" not in doc:
            return _json(
                {
                    "error": {
                        "message": "messages: Field required",
                        "type": "BadRequestError",
                        "param": None,
                        "code": 400,
                    }
                },
                400,
            )
        return _json(
            {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Yes"}, "finish_reason": "stop"}
                ]
            }
        )

    app = web.Application(middlewares=[mw])
    if health:
        app.router.add_get("/health", health_)
    app.router.add_get("/version", version)
    app.router.add_get("/v1/models", models_)
    app.router.add_post("/v1/chat/completions", chat)
    return app, counts


def ovms_app(
    release: str,
    models: list[str] | None = None,
    *,
    not_ready_polls: int = 0,
    model_loading_polls: int = 0,
    config_lists_models: bool = True,
) -> tuple[web.Application, Counts]:
    """OVMS REST: /v2/health/ready, /v2/models/{m}/ready, /v1/config on all releases; /v3/models from
    2025.3; /v1/... OpenAI paths only from 2026.3; flat {"error": "..."} bodies."""
    served = models if models is not None else [LLAVA]
    counts = Counts()
    year_minor = tuple(int(x) for x in release.split("."))

    @web.middleware
    async def mw(request: web.Request, handler: Any) -> web.StreamResponse:
        counts.hits[f"{request.method} {request.path}"] += 1
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _json({"error": "Not Found"}, 404)

    async def ready(request: web.Request) -> web.Response:
        if counts.hits["GET /v2/health/ready"] <= not_ready_polls:
            return _json({}, 503)
        return _json({})

    async def model_ready(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in served:
            return _json({"error": "Model with requested name is not found"}, 404)
        if counts.hits[f"GET {request.path}"] <= model_loading_polls:
            return _json({"error": "Model with requested version is not loaded yet"}, 404)
        return _json({})

    async def config(request: web.Request) -> web.Response:
        state = "LOADING" if counts.hits["GET /v1/config"] <= model_loading_polls else "AVAILABLE"
        entry = {"version": "1", "state": state, "status": {"error_code": "OK", "error_message": "OK"}}
        return _json({m: {"model_version_status": [entry]} for m in served} if config_lists_models else {})

    async def models_(request: web.Request) -> web.Response:
        return _json(
            {
                "data": [{"id": m, "object": "model", "created": 1, "owned_by": "OVMS"} for m in served],
                "object": "list",
            }
        )

    async def chat(request: web.Request) -> web.Response:
        if "application/json" not in request.headers.get("Content-Type", ""):
            return _json({"error": "Mediapipe graph definition with requested name is not found"}, 404)
        doc = orjson.loads(await request.read())
        if "model" not in doc:
            return _json({"error": "The file is not valid json - model field is missing in JSON body"}, 412)
        return _json(
            {
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Yes"}, "finish_reason": "stop"}
                ]
            }
        )

    app = web.Application(middlewares=[mw])
    app.router.add_get("/v2/health/ready", ready)
    app.router.add_get("/v2/models/{name:.+}/ready", model_ready)
    app.router.add_get("/v1/config", config)
    app.router.add_post("/v3/chat/completions", chat)
    if year_minor >= (2025, 3):
        app.router.add_get("/v3/models", models_)
        app.router.add_get("/v3/v1/models", models_)
    if year_minor >= (2026, 3):
        app.router.add_get("/v1/models", models_)
        app.router.add_post("/v1/chat/completions", chat)
    return app, counts


@asynccontextmanager
async def serve(app: web.Application) -> AsyncIterator[str]:
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def resolve(app: web.Application, path: str = "", **spec: Any) -> tuple[str, ResolvedEndpoint]:
    async def main() -> tuple[str, ResolvedEndpoint]:
        async with serve(app) as root:
            resolved = await resolve_endpoint(
                EndpointSpec(url=root + path, **spec), ready_timeout=2.0, poll_interval=0.02
            )
            return root, resolved

    return asyncio.run(main())


def resolve_error(
    app: web.Application, path: str = "", *, ready_timeout: float = 0.0, **spec: Any
) -> EndpointError:
    async def main() -> None:
        async with serve(app) as root:
            await resolve_endpoint(
                EndpointSpec(url=root + path, **spec), ready_timeout=ready_timeout, poll_interval=0.02
            )

    with pytest.raises(EndpointError) as info:
        asyncio.run(main())
    return info.value


# -- detection --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["", "/v1", "/v1/", "/v1/chat/completions"])
def test_vllm_detected(path: str) -> None:
    app, _ = vllm_app()
    root, ep = resolve(app, path)
    assert ep.kind == BackendKind("vllm")
    assert ep.chat_url == root + "/v1/chat/completions"
    assert ep.model == LLAVA  # the only served model, chosen automatically
    assert ep.served_models == (LLAVA,)
    assert ep.server_version == "0.11.0"
    assert ep.max_model_len == 4096


def test_ovms_old_release_v3_only_without_listing() -> None:
    app, counts = ovms_app("2025.2")
    root, ep = resolve(app)
    assert ep.kind == BackendKind("ovms")
    assert ep.chat_url == root + "/v3/chat/completions"
    assert ep.model == LLAVA  # from /v1/config: no /models listing before 2025.3
    assert counts.hits["GET /v1/config"] >= 1


def test_ovms_old_release_given_v1_falls_back_to_v3() -> None:
    app, _ = ovms_app("2025.3")
    root, ep = resolve(app, "/v1")
    assert ep.chat_url == root + "/v3/chat/completions"
    assert any("2026.3" in note for note in ep.notes)


@pytest.mark.parametrize(("path", "api"), [("/v1", "/v1"), ("/v3", "/v3"), ("", "/v3")])
def test_ovms_new_release(path: str, api: str) -> None:
    app, _ = ovms_app("2026.3")
    root, ep = resolve(app, path)
    assert ep.kind == BackendKind("ovms")
    assert ep.chat_url == root + api + "/chat/completions"
    assert ep.notes == ()


def test_ovms_waits_for_server_and_model_ready() -> None:
    app, counts = ovms_app("2025.3", not_ready_polls=3, model_loading_polls=2)
    _, ep = resolve(app)
    assert ep.model == LLAVA
    assert counts.hits["GET /v2/health/ready"] >= 4  # three 503 polls, then 200
    assert counts.hits["GET /v1/config"] == 3  # LOADING twice, then AVAILABLE


def test_ovms_model_ready_route_when_config_does_not_list_it() -> None:
    app, counts = ovms_app("2025.3", model_loading_polls=2, config_lists_models=False)
    _, ep = resolve(app)
    assert ep.model == LLAVA
    assert counts.hits[f"GET /v2/models/{LLAVA}/ready"] == 3  # 404 twice (loading), then 200


def test_explicit_kind_skips_detection() -> None:
    app, counts = vllm_app()
    _, ep = resolve(app, kind=BackendKind("vllm"))
    assert ep.kind == BackendKind("vllm")
    assert counts.hits["GET /v2/health/ready"] == 0


def test_kind_vllm_without_health_uses_the_model_listing() -> None:
    """--kind vllm, but /health answers 404 (never 'not ready'): the listing decides, with a note."""
    app, counts = vllm_app(health=False)
    root, ep = resolve(app, "/v1", kind=BackendKind("vllm"))
    assert (ep.kind, ep.model, ep.chat_url) == (BackendKind("vllm"), LLAVA, root + "/v1/chat/completions")
    assert counts.hits["GET /health"] == 1  # asked once, not polled until the ready timeout
    assert any(n.startswith(f"{root}/health answered 404, so this may not be vllm") for n in ep.notes)


def test_kind_vllm_against_nothing_fails_at_once() -> None:
    hits: Counter[str] = Counter()

    async def not_found(request: web.Request) -> web.Response:
        hits[request.path] += 1
        return _json({"detail": "Not Found"}, 404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)

    async def main() -> tuple[str, EndpointError]:
        async with serve(app) as root:
            spec = EndpointSpec(url=root + "/v1", kind=BackendKind("vllm"))
            with pytest.raises(EndpointError) as info:
                await resolve_endpoint(spec, ready_timeout=30, poll_interval=0.02)
            return root, info.value

    root, err = asyncio.run(main())
    assert hits["/health"] == 1  # no waiting on a 404 that will never change
    assert str(err) == (
        f"no OpenAI-compatible API at {root}/v1: {root} answered 404 on "
        "/health, /v1/models and /v1/chat/completions"
    )
    assert err.hint is not None and err.hint.startswith("without /health it may not be vllm: try --kind auto")


def test_generic_openai_server() -> None:
    async def models_(request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": "gpt-x", "object": "model"}]})

    async def chat(request: web.Request) -> web.Response:
        return _json({"error": {"message": "missing messages", "code": 400}}, 400)

    app = web.Application()
    app.router.add_get("/api/v1/models", models_)
    app.router.add_post("/api/v1/chat/completions", chat)
    root, ep = resolve(app, "/api/v1")
    assert ep.kind == BackendKind("openai")
    assert (ep.chat_url, ep.model) == (root + "/api/v1/chat/completions", "gpt-x")


# -- errors -----------------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_dead_port() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(EndpointError) as info:
        asyncio.run(resolve_endpoint(EndpointSpec(url=url), ready_timeout=0))
    assert str(info.value) == f"cannot connect to {url}: connection refused — is the server running?"
    assert info.value.exit_code == 3


def test_wrong_path_lists_every_path_tried() -> None:
    async def models_(request: web.Request) -> web.Response:
        return _json({"object": "list", "data": [{"id": "m", "object": "model"}]})

    app = web.Application()
    app.router.add_get("/v1/models", models_)
    err = resolve_error(app, "/v1")
    assert str(err).startswith("no chat completions endpoint at ")
    assert "/v1/chat/completions" in str(err) and "/v3/chat/completions" in str(err)


def _all_404() -> web.Application:
    async def not_found(request: web.Request) -> web.Response:
        return web.Response(status=404, text="404: Not Found")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


@pytest.mark.parametrize("model", [None, "m"])
def test_no_openai_api_at_all(model: str | None) -> None:
    """404 on every path: not 'lists no models' but no API there, with the paths tried and the bases."""

    async def main() -> tuple[str, EndpointError]:
        async with serve(_all_404()) as root:
            with pytest.raises(EndpointError) as info:
                await resolve_endpoint(EndpointSpec(url=root, model=model), ready_timeout=0)
            return root, info.value

    root, err = asyncio.run(main())
    assert str(err) == (
        f"no OpenAI-compatible API at {root}: {root} answered 404 on "
        "/v1/models, /v3/models, /v1/chat/completions and /v3/chat/completions"
    )
    assert err.hint == f"give the server's API base URL: {root}/v1 for vLLM, {root}/v3 for OVMS"


def test_wrong_path_prefix_suggests_the_base() -> None:
    app, _ = vllm_app()

    async def main() -> tuple[str, EndpointError]:
        async with serve(app) as root:
            with pytest.raises(EndpointError) as info:
                await resolve_endpoint(EndpointSpec(url=root + "/api/openai"), ready_timeout=0)
            return root, info.value

    root, err = asyncio.run(main())
    assert str(err).startswith(
        f"no OpenAI-compatible API at {root}/api/openai: {root}/api/openai answered 404"
    )
    assert err.hint is not None and f"{root}/v1 for vLLM" in err.hint


def test_chat_without_model_listing() -> None:
    """A chat endpoint but no /models: the model must be named (and is then used)."""

    async def chat(request: web.Request) -> web.Response:
        return _json({"error": {"message": "missing messages", "code": 400}}, 400)

    def app() -> web.Application:
        a = web.Application()
        a.router.add_post("/v1/chat/completions", chat)
        return a

    err = resolve_error(app(), "/v1")
    assert "has no model listing" in str(err) and "404 on /v1/models and /v3/models" in str(err)
    assert str(err).endswith("and no model was given")
    assert err.hint == "name the model to use"
    root, ep = resolve(app(), "/v1", model="m")
    assert (ep.chat_url, ep.model, ep.served_models) == (root + "/v1/chat/completions", "m", ())


def test_empty_listing_after_a_missing_one() -> None:
    """/v1/models 404 but /v3/models lists nothing: a listing exists, it is empty."""

    async def models_(request: web.Request) -> web.Response:
        return _json({"object": "list", "data": []})

    app = web.Application()
    app.router.add_get("/v3/models", models_)
    err = resolve_error(app)
    assert str(err).endswith(" lists no models and none was given")


def test_vllm_given_v3_recovers_with_note() -> None:
    app, _ = vllm_app()
    root, ep = resolve(app, "/v3")
    assert ep.chat_url == root + "/v1/chat/completions"
    assert ep.notes == ("/v3/chat/completions not found; using /v1",)


@pytest.mark.parametrize(
    "factory", [lambda: vllm_app(), lambda: ovms_app("2025.2"), lambda: ovms_app("2026.3")]
)
def test_wrong_model_lists_served_names(factory: Any) -> None:
    app, _ = factory()
    err = resolve_error(app, model="llava")
    assert "model 'llava' is not served by" in str(err)
    assert str(err).endswith(f"served: {LLAVA}")


def test_several_models_and_none_chosen() -> None:
    app, _ = vllm_app(["a", "b"])
    err = resolve_error(app)
    assert "serves 2 models (a, b)" in str(err)
    app, _ = vllm_app(["a", "b"])
    _, ep = resolve(app, model="b")
    assert ep.model == "b"


def test_html_server() -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<!DOCTYPE html><html><head><title>Open WebUI</title></head><body>hi</body></html>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    err = resolve_error(app)
    assert "answered an HTML page ('Open WebUI'), not JSON" in str(err)


def test_not_json_server() -> None:
    async def text(request: web.Request) -> web.Response:
        return web.Response(text="hello", content_type="text/plain")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", text)
    err = resolve_error(app)
    assert "did not answer a JSON model list" in str(err)


def test_not_ready_within_timeout() -> None:
    app, _ = ovms_app("2025.3", not_ready_polls=10_000)
    err = resolve_error(app, ready_timeout=0.2)
    assert "not ready after" in str(err)
    assert "/v2/health/ready answered 503" in str(err)


def _timeouts_seen(ready_timeout: float, answer: Any) -> tuple[list[float], EndpointError]:
    """The read timeout each probe request was given (httpx's per-request `timeout` extension)."""
    seen: list[float] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"]["read"])
        return answer(request)  # type: ignore[no-any-return]

    async def main() -> None:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
            await resolve_endpoint(
                EndpointSpec(url="http://probe.test/v1"),
                ready_timeout=ready_timeout,
                poll_interval=0.02,
                client=http,
            )

    with pytest.raises(EndpointError) as info:
        asyncio.run(main())
    return seen, info.value


def test_probe_requests_are_capped_by_the_ready_timeout() -> None:
    """A probe request never waits longer than the readiness budget left (not its own 10 s)."""
    page = b"<html><head><title>UI</title></head></html>"
    seen, err = _timeouts_seen(
        3.0, lambda r: httpx.Response(200, content=page, headers={"Content-Type": "text/html"})
    )
    assert "answered an HTML page" in str(err)  # one attempt: detection, then /v1/models refused
    assert len(seen) == 3 and all(0 < t <= 3.0 for t in seen)


def test_hung_server_is_given_up_within_the_budget() -> None:
    def hang(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("timed out", request=request)

    seen, err = _timeouts_seen(0.2, hang)
    assert str(err).endswith(": read timeout")
    # a budget below the floor: each request gets the floor, never the full probe timeout
    assert seen and all(t == MIN_PROBE_TIMEOUT_S for t in seen)
    assert MIN_PROBE_TIMEOUT_S < PROBE_TIMEOUT_S


def test_dead_port_is_polled_until_timeout() -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(EndpointError, match="connection refused — is the server running"):
        asyncio.run(resolve_endpoint(EndpointSpec(url=url), ready_timeout=0.2, poll_interval=0.05))


# -- API key -------------------------------------------------------------------------------------------


def test_key_required(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    app, _ = vllm_app(key=SECRET)
    err = resolve_error(app, kind=BackendKind("vllm"))
    assert "refused the request (401" in str(err)
    assert err.hint is not None and "api_key" in err.hint

    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # honoured as lmms-eval does
    app, _ = vllm_app(key=SECRET)
    with caplog.at_level(logging.DEBUG):
        _, ep = resolve(app)
    assert ep.model == LLAVA
    assert ep.headers()["Authorization"] == f"Bearer {SECRET}"
    assert SECRET not in repr(ep) and SECRET not in str(ep) and SECRET not in ep.describe()
    assert SECRET not in caplog.text


def test_spec_masks_key() -> None:
    spec = EndpointSpec(url="http://h:8000/v1", api_key=SecretStr(SECRET), model="m")
    for text in (repr(spec), str(spec), spec.model_dump_json(), str(spec.model_dump())):
        assert SECRET not in text
    assert effective_api_key(spec) is not None
    assert effective_api_key(spec).get_secret_value() == SECRET  # type: ignore[union-attr]


def test_spec_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_BASE", "http%3A//127.0.0.1%3A8000/v3/")
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    spec = spec_from_env(model="m")
    assert spec.url == "http://127.0.0.1:8000/v3"  # URL-decoded, trailing slash stripped (lmms-eval §4.4)
    assert spec.api_key is not None and spec.api_key.get_secret_value() == SECRET
    monkeypatch.delenv("OPENAI_API_BASE")
    with pytest.raises(ConfigError):
        spec_from_env()


def test_spec_rejects_non_url() -> None:
    with pytest.raises(ValidationError):
        EndpointSpec(url="localhost:8000")


@pytest.mark.parametrize(
    ("url", "root", "api"),
    [
        ("http://h:8000", "http://h:8000", None),
        ("http://h:8000/v1", "http://h:8000", "/v1"),
        ("http://h:8000/v3/", "http://h:8000", "/v3"),
        ("http://h:8000/v3/chat/completions", "http://h:8000", "/v3"),
        ("http://h:8000/v3/v1/models", "http://h:8000", "/v3"),
        ("https://gw.example/ovms/v3", "https://gw.example/ovms", "/v3"),
        ("http://h:8000/chat/completions", "http://h:8000", None),
    ],
)
def test_split_url(url: str, root: str, api: str | None) -> None:
    assert split_url(url) == (root, api)
