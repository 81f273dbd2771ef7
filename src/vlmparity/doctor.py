"""`doctor`: probe one endpoint and report, check by check, how it will behave in an evaluation.

`await run_doctor(spec, timeout=..., request_timeout=...) -> DoctorReport` resolves the endpoint with the
client's own probing (`resolve_endpoint`), then sends a dozen tiny chat requests through
`transport.send_attempt`: 1, 2 and 3 images in one request (the image limit), the same request twice at
temperature 0 (determinism), a fixed and varied `seed` at temperature 1, a stream with `include_usage`,
an unknown model name and a corrupt image (the server's error shape). Every request asks for at most
`MAX_TOKENS` tokens. The report holds the facts (for `--json`) and one `Check` per checklist line; a
failed check means the endpoint cannot be evaluated (exit 3), a warning never fails.
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

import httpx

from vlmparity.client.classify import (
    MAX_REPLY_BYTES,
    Classification,
    classify,
    classify_exception,
    malformed,
    valid_status,
)
from vlmparity.client.endpoint import BackendKind, EndpointSpec, ResolvedEndpoint
from vlmparity.client.probe import PROBE_TIMEOUT_S, _NotReady, _Prober, resolve_endpoint
from vlmparity.client.probe_bodies import IMAGE_COLOURS, chat_body, png_data_url
from vlmparity.client.transport import (
    StreamAssembler,
    capped_lines,
    encode_body,
    make_http_client,
    read_capped,
    send_attempt,
)
from vlmparity.errors import EndpointError

MMMU_MAX_IMAGES = 7  # MMMU-val questions carry image_1 .. image_7
UNKNOWN_MODEL = "vlmparity-doctor-no-such-model"
SEED_SAME = 1234
SEEDS_OTHER = (1235, 1236, 1237, 1238)
MESSAGE_CHARS = 120  # server messages quoted in a checklist line


class Mark(StrEnum):
    """State of one checklist line."""

    OK = "ok"
    WARN = "warn"
    FAIL = "fail"


@dataclass(frozen=True)
class Check:
    """One checklist line: what was checked, what was found, and what to do when it is not OK."""

    id: str
    mark: Mark
    title: str
    detail: str
    fix: str | None = None


@dataclass
class DoctorReport:
    """Everything `doctor` found out about one endpoint; `to_dict()` is the `--json` document."""

    url: str
    checks: list[Check] = field(default_factory=list)
    kind: str | None = None
    server_version: str | None = None
    release: str | None = None  # OVMS: the release range its paths imply
    ovms_paths: dict[str, bool] | None = None  # OVMS: which OpenAI API bases exist
    api_base: str | None = None
    chat_url: str | None = None
    model: str | None = None
    served_models: list[str] | None = None
    max_model_len: int | None = None
    notes: list[str] = field(default_factory=list)
    image_limit: int | None = None  # None: no limit seen up to len(IMAGE_COLOURS) images
    images: dict[str, str] = field(default_factory=dict)  # images per request -> ok | unsupported | error
    deterministic: bool | None = None
    seed: str | None = None  # honoured | ignored | unclear
    streaming: bool | None = None
    stream_done: bool | None = None
    stream_matches_unary: bool | None = None
    usage_unary: bool | None = None
    usage_stream: bool | None = None
    logprobs: bool | None = None  # answers `logprobs: true` with one log-probability per token
    error_shape: str | None = None  # nested | flat | flat-string | detail | other | none
    errors: dict[str, dict[str, Any]] = field(default_factory=dict)
    texts: dict[str, Any] = field(default_factory=dict)  # answers the verdicts were drawn from

    @property
    def evaluable(self) -> bool:
        """False when any check failed: the endpoint cannot be evaluated as it is."""
        return all(c.mark is not Mark.FAIL for c in self.checks)

    @property
    def exit_code(self) -> int:
        """0 when the endpoint can be evaluated (warnings included), 3 when it cannot."""
        return 0 if self.evaluable else 3

    def check(self, check_id: str) -> Check | None:
        """The check with this id, if it was run."""
        return next((c for c in self.checks if c.id == check_id), None)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of the facts and the checks (URL credentials and known secrets masked)."""
        from vlmparity.masking import scrub_obj

        doc = asdict(self)
        doc["checks"] = [{**asdict(c), "mark": c.mark.value} for c in self.checks]
        out = {"url": self.url, "evaluable": self.evaluable, "exit_code": self.exit_code, **doc}
        return scrub_obj(out)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- small helpers


def _quote(text: str | None) -> str:
    text = " ".join((text or "").split())
    return repr(text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def corrupt_image_url() -> str:
    """Valid base64 of bytes that start like a PNG but are not an image."""
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nnot really a png").decode("ascii")


def error_shape(doc: Any) -> str:
    """The shape of an error body: nested (vLLM >= 0.10.1, OpenAI), flat (vLLM < 0.10.1), flat-string (OVMS)."""
    if not isinstance(doc, dict):
        return "none" if doc is None else "other"
    err = doc.get("error")
    if isinstance(err, dict):
        return "nested"
    if isinstance(err, str):
        return "flat-string"
    if doc.get("object") == "error" or ("message" in doc and "type" in doc):
        return "flat"
    if "detail" in doc:
        return "detail"
    return "other"


SHAPE_TEXT = {
    "nested": '{"error": {"message", "type", "param", "code"}} (vLLM >= 0.10.1, OpenAI)',
    "flat": '{"object": "error", "message", "type", "code"} (vLLM < 0.10.1)',
    "flat-string": '{"error": "<message>"} (OVMS)',
    "detail": '{"detail": ...} (FastAPI default)',
    "other": "an unrecognised JSON body",
    "none": "no JSON body",
}


def judge_determinism(first: str | None, second: str | None) -> bool | None:
    """True when two answers to the same temperature-0 request are equal; None when one is missing."""
    if first is None or second is None:
        return None
    return first == second


def judge_seed(same: tuple[str | None, str | None], others: list[str | None]) -> str:
    """`honoured` (same seed → same text, another seed changed it), `ignored` (same seed, different texts)
    or `unclear` (an answer is missing, or no seed changed the text: sampling may not vary in 8 tokens)."""
    a, b = same
    if a is None or b is None:
        return "unclear"
    if a != b:
        return "ignored"
    if any(t is not None and t != a for t in others):
        return "honoured"
    return "unclear"


def ovms_release(v1_chat: bool, v3_models: bool) -> str:
    """The OVMS release range implied by its paths (research/servers.md §1.1)."""
    if v1_chat:
        return "2026.3 or newer"
    if v3_models:
        return "2025.3 to 2026.2"
    return "2025.2 or older"


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    """'0.10.1rc2' -> (0, 10, 1); None when `text` does not start with a number."""
    match = re.match(r"v?(\d{1,9}(?:\.\d{1,9}){0,7})(?!\d)", (text or "").strip())
    return tuple(int(p) for p in match.group(1).split(".")) if match else None


def _request_headers(spec: EndpointSpec) -> dict[str, str]:
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    key = spec.effective_api_key()
    if key is not None:
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    return headers


# ------------------------------------------------------------------------------ endpoint gate (probing)


class _TracingProber(_Prober):
    """The client's prober, noting which checklist step it is in and what it found so far."""

    def __init__(self, spec: EndpointSpec, client: httpx.AsyncClient, headers: dict[str, str]) -> None:
        super().__init__(spec, client, headers)
        self.step = "reachable"
        self.kind: BackendKind | None = None
        self.served: list[str] | None = None
        self.model: str | None = None

    async def detect(self) -> BackendKind:
        self.kind = await super().detect()
        self.step = "ready"
        return self.kind

    async def models_openai(self, path: str) -> tuple[list[str], int | None] | None:
        self.step = "models"
        listed = await super().models_openai(path)
        if listed is not None:
            self.served = listed[0]
        return listed

    async def models_ovms(self) -> list[str]:
        self.step = "models"
        self.served = await super().models_ovms()
        return self.served

    def choose_model(self, served: list[str]) -> str:
        self.served = served
        self.step = "model"
        self.model = super().choose_model(served)
        return self.model

    async def model_ready_ovms(self, model: str) -> None:
        self.step = "ready"
        await super().model_ready_ovms(model)

    async def chat_path(self, candidates: list[str]) -> str:
        self.step = "chat"
        return await super().chat_path(candidates)


_GATE_ORDER = ("reachable", "backend", "ready", "models", "model", "chat")
_STEP_TITLES = {
    "reachable": "reachable",
    "backend": "backend",
    "ready": "ready",
    "models": "served models",
    "model": "model",
    "chat": "chat path",
}


def _gate_fix(step: str, spec: EndpointSpec, hint: str | None) -> str:
    if step == "reachable":
        return "check the host and port, start the server, or pass --ready-timeout SECONDS to wait while it starts"
    if step == "ready":
        if spec.kind is not BackendKind.AUTO:
            return f"wait for the model to load and raise --ready-timeout, or check --kind {spec.kind.value} (try auto)"
        return "wait for the model to finish loading, then rerun (or raise --ready-timeout)"
    if step == "models":
        return "point the URL at the OpenAI-compatible API port of the server"
    if step == "model":
        return "pass --model with one of the served names"
    if step == "chat":
        return (
            "give the API base URL: http://host:port/v1 (vLLM, OVMS >= 2026.3) or http://host:port/v3 (OVMS)"
        )
    return hint or "check the URL"


async def diagnose(spec: EndpointSpec, err: EndpointError, waited: float) -> DoctorReport:
    """The gate checks of an endpoint that `resolve_endpoint` refused: which step fails, and why.

    Runs the client's prober once more (no waiting) to find the step; the message is the resolver's own
    unless the second look failed differently.
    """
    report = DoctorReport(url=spec.url)
    hint = err.hint
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, follow_redirects=True) as http:
        prober = _TracingProber(spec, http, _request_headers(spec))
        step, message = "endpoint", err.message  # if the second look succeeds, the first failure stands
        try:
            await prober.resolve()
        except _NotReady as nr:
            if nr.connection or prober.step == "reachable":
                step, message = "reachable", err.message
            else:
                step = "ready"
                message = err.message if "not ready" in err.message else nr.reason
        except EndpointError as again:
            # Refused before the backend was known (HTML page, API key): reachable, but not usable.
            step = "backend" if prober.step == "reachable" else prober.step
            message, hint = again.message, again.hint
        if prober.kind is not None and step != "backend":
            report.server_version = await _version_quietly(prober, prober.kind)
    if step == "ready" and "not ready after" not in message and waited >= 1:
        message += f" (waited {waited:.0f} s)"
    report.kind = prober.kind.value if prober.kind else None
    report.served_models = list(prober.served) if prober.served is not None else None
    if step in _GATE_ORDER:
        passed = list(_GATE_ORDER[: _GATE_ORDER.index(step)])
    else:
        passed = [s for s in _GATE_ORDER if s != "chat"] if prober.kind else ["reachable"]
    if step == "ready" and prober.model is not None:  # OVMS: listed, but the model is still loading
        passed = ["reachable", "backend", "models", "model"]
    ok_detail = {
        "reachable": f"{prober.root} answers HTTP",
        "backend": " ".join(filter(None, [_kind_name(prober.kind), report.server_version]))
        if prober.kind
        else "",
        "ready": "the server reports ready",
        "models": ", ".join(prober.served or []) or "(the server lists none)",
        "model": f"{prober.model!r} is served",
    }
    for done in passed:
        if done == "backend" and prober.kind is None:
            continue
        report.checks.append(Check(done, Mark.OK, _STEP_TITLES[done], ok_detail[done]))
    if step == "model" and prober.served and len(prober.served) == 1:
        fix = f"pass --model {prober.served[0]!r}"
    elif hint is not None and "api_key" in hint:  # 401/403 at any step: the client's key hint
        fix = "pass --api-key KEY or set OPENAI_API_KEY"
    else:
        fix = _gate_fix(step, spec, hint)
    report.checks.append(Check(step, Mark.FAIL, _STEP_TITLES.get(step, step), message, fix))
    return report


async def _version_quietly(prober: _Prober, kind: BackendKind) -> str | None:
    """The server's version if it says (vLLM /version, OVMS /v2 metadata); None on any failure."""
    try:
        if kind in (BackendKind.VLLM, BackendKind.SGLANG):
            return await (prober.version_vllm() if kind is BackendKind.VLLM else prober.version_sglang())
        if kind is BackendKind.OVMS:
            return await prober.version_ovms()
    except (_NotReady, EndpointError):
        return None
    return None


def _kind_name(kind: BackendKind) -> str:
    return {
        BackendKind.VLLM: "vLLM",
        BackendKind.OVMS: "OpenVINO Model Server",
        BackendKind.SGLANG: "SGLang",
        BackendKind.OPENAI: "a generic OpenAI-compatible server",
    }.get(kind, kind.value)


async def _ovms_paths(resolved: ResolvedEndpoint, http: httpx.AsyncClient) -> dict[str, bool]:
    """Which OVMS API bases exist: /v1 chat (2026.3+) and the /v3/models listing (2025.3+)."""
    prober = _Prober(EndpointSpec(url=resolved.root_url), http, resolved.headers())
    found: dict[str, bool] = {"/v3": resolved.chat_url.endswith("/v3/chat/completions")}
    for key, method, path, content in (
        ("/v1", "POST", "/v1/chat/completions", b"{}"),
        ("/v3/models", "GET", "/v3/models", None),
        ("/v3", "POST", "/v3/chat/completions", b"{}"),
    ):
        if found.get(key):
            continue
        try:
            reply = await prober.request(method, path, content=content)
        except _NotReady:
            found[key] = False
            continue
        found[key] = reply.status not in (404, 405) and not reply.html
    return found


def _gate_checks(report: DoctorReport, resolved: ResolvedEndpoint, spec: EndpointSpec) -> None:
    """Checklist lines of a resolved endpoint: reachable, backend and version, ready, models, model."""
    report.kind = resolved.kind.value
    report.server_version = resolved.server_version
    report.api_base, report.chat_url, report.model = resolved.api_base, resolved.chat_url, resolved.model
    report.served_models = list(resolved.served_models)
    report.max_model_len = resolved.max_model_len
    report.notes = list(resolved.notes)
    report.checks.append(Check("reachable", Mark.OK, "reachable", f"{resolved.root_url} answers HTTP"))

    name = _kind_name(resolved.kind)
    version = f" {resolved.server_version}" if resolved.server_version else ""
    if resolved.kind is BackendKind.OVMS and report.ovms_paths is not None:
        paths = report.ovms_paths
        report.release = ovms_release(paths.get("/v1", False), paths.get("/v3/models", False))
        bases = " and ".join(p for p in ("/v3", "/v1") if paths.get(p))
        listing = "with" if paths.get("/v3/models") else "without"
        detail = (
            f"{name}{version}: serves {bases or '/v3'} {listing} a /v3/models listing, so release "
            f"{report.release}; use {resolved.api_base}"
        )
        if not paths.get("/v1"):
            detail += " (/v1 needs OVMS 2026.3 or newer)"
    elif resolved.kind is BackendKind.VLLM:
        shown = resolved.server_version or "unknown version (no /version)"
        detail = f"{name} {shown} (/version); chat at {resolved.chat_url}"
    else:
        detail = f"{name}{version}; chat at {resolved.chat_url}"
    if resolved.notes:
        report.checks.append(
            Check(
                "backend",
                Mark.WARN,
                "backend",
                f"{detail}; {'; '.join(resolved.notes)}",
                f"use {resolved.api_base} as the base URL (lmms-eval's OPENAI_API_BASE too)",
            )
        )
    elif resolved.kind is BackendKind.OPENAI:
        report.checks.append(
            Check(
                "backend",
                Mark.WARN,
                "backend",
                f"{detail}: neither vLLM nor OVMS was recognised",
                "pass --kind vllm|ovms if it is one of them; the checks below still apply",
            )
        )
    else:
        report.checks.append(Check("backend", Mark.OK, "backend", detail))

    how = {
        BackendKind.OVMS: "/v2/health/ready answered 200 and the model is AVAILABLE",
        BackendKind.VLLM: "/health answered 200",
        BackendKind.SGLANG: "/health answered 200",
    }.get(resolved.kind, "the model listing answers")
    report.checks.append(Check("ready", Mark.OK, "ready", how))
    served = ", ".join(resolved.served_models) or "(the server lists none)"
    report.checks.append(Check("models", Mark.OK, "served models", served))
    if spec.model:
        detail = f"{resolved.model!r} is served"
    else:
        detail = f"using {resolved.model!r}, the only served model (pass --model to choose)"
    report.checks.append(Check("model", Mark.OK, "model", detail))


# ------------------------------------------------------------------------------- behaviour (requests)


@dataclass(frozen=True)
class _StreamResult:
    classification: Classification
    sse: bool = False
    done: bool = False
    usage: dict[str, Any] | None = None
    events: int = 0


def _usage_ok(usage: Any) -> bool:
    """Both token counts present and in range (`classify.usage_counts`)."""
    from vlmparity.client.classify import usage_counts

    prompt, completion, _ = usage_counts(usage)
    return prompt is not None and completion is not None


def _failure_text(cls: Classification) -> str:
    status = f"HTTP {cls.status}" if cls.status else cls.outcome.value
    return f"{status}: {_quote(cls.server_message)}" if cls.server_message else status


class _Behaviour:
    """The request-sending checks against a resolved endpoint."""

    def __init__(self, resolved: ResolvedEndpoint, http: httpx.AsyncClient, timeout: float) -> None:
        self.resolved = resolved
        self.http = http
        self.timeout = timeout
        self.headers = resolved.headers()
        self.report: DoctorReport | None = None

    async def send(self, body: dict[str, Any], *, model: str | None = None) -> tuple[Classification, float]:
        payload = encode_body(body, model or self.resolved.model)
        attempt = await send_attempt(
            self.http,
            self.resolved.chat_url,
            payload,
            headers=self.headers,
            stream=False,
            timeout=self.timeout,
        )
        return attempt.classification, attempt.latency_s

    async def stream(self, body: dict[str, Any]) -> _StreamResult:
        """A streamed request read event by event (send_attempt does not say whether [DONE] came)."""
        payload = encode_body(
            {**body, "stream": True, "stream_options": {"include_usage": True}}, self.resolved.model
        )
        try:
            async with asyncio.timeout(self.timeout):
                async with self.http.stream(
                    "POST", self.resolved.chat_url, content=payload, headers=self.headers
                ) as response:
                    ctype = response.headers.get("content-type", "")
                    if response.status_code != 200 or "event-stream" not in ctype:
                        raw = await read_capped(response)
                        if isinstance(raw, str):
                            return _StreamResult(malformed(raw, status=valid_status(response.status_code)))
                        return _StreamResult(classify(response.status_code, response.headers, raw))
                    assembler = StreamAssembler()
                    events = 0
                    async for line in capped_lines(response, MAX_REPLY_BYTES):
                        if line is None:
                            return _StreamResult(malformed(f"stream larger than {MAX_REPLY_BYTES} bytes"))
                        events += line.startswith("data:")
                        assembler.feed_line(line)
                    assembler.close()
        except (httpx.HTTPError, OSError, TimeoutError) as exc:
            return _StreamResult(classify_exception(exc))
        return _StreamResult(assembler.classify(), True, assembler.done, assembler.usage, events)

    # -- checks ----------------------------------------------------------------------------------------

    async def run(self, report: DoctorReport) -> None:
        first = await self.chat(report)
        if first is None:
            return
        again, _ = await self.send(chat_body(1))  # the same request again, right after the first
        await self.images(report)
        self.determinism(report, first, again)
        await self.seed(report)
        await self.streaming(report, first)
        await self.errors(report)
        await self.logprobs(report)

    async def logprobs(self, report: DoctorReport) -> None:
        """The start-up probe of `vlmparity run`: does the endpoint give per-token log-probabilities?"""
        from vlmparity.client.logprobs import probe_logprobs

        support = await probe_logprobs(self.resolved, timeout_s=self.timeout, client=self.http)
        report.logprobs = support.supported
        if support.supported:
            detail = "one log-probability per generated token: `compare` reports token-level closeness"
            report.checks.append(Check("logprobs", Mark.OK, "log-probabilities", detail))
        else:
            report.checks.append(
                Check(
                    "logprobs",
                    Mark.WARN,
                    "log-probabilities",
                    f"not available: {support.reason}; runs with this endpoint send no `logprobs` and "
                    "`compare` reports no token-level closeness",
                    "nothing needed for accuracy; serve a build that returns logprobs for closeness figures",
                )
            )

    async def chat(self, report: DoctorReport) -> Classification | None:
        """One image, temperature 0; returns the answer (None: chat does not work, a failed check)."""
        first, latency = await self.send(chat_body(1))
        report.texts["one_image"] = first.text
        if not first.is_answer:
            report.images["1"] = first.outcome.value
            if first.image_limit == 0:
                detail = f"the model takes no images: {_failure_text(first)}"
                fix = "serve a vision-language model (this one is text-only)"
            else:
                detail = f"a one-image request to {self.resolved.chat_url} failed: {_failure_text(first)}"
                fix = "check the server log; the model must accept a base64 PNG image_url part"
            report.checks.append(Check("chat", Mark.FAIL, "chat", detail, fix))
            return None
        report.images["1"] = "ok"
        report.usage_unary = _usage_ok((first.response or {}).get("usage"))
        report.checks.append(
            Check(
                "chat",
                Mark.OK,
                "chat",
                f"{self.resolved.chat_url} answered a one-image request in {_ms(latency)}: {_quote(first.text)}",
            )
        )
        return first

    async def images(self, report: DoctorReport) -> None:
        """2, then 3 images in one request (1 was the chat check): the first refusal gives the limit."""
        limit: int | None = None
        refusal: Classification | None = None
        for n in range(2, len(IMAGE_COLOURS) + 1):
            cls, _ = await self.send(chat_body(n))
            if cls.is_answer:
                report.images[str(n)] = "ok"
                continue
            report.images[str(n)] = cls.outcome.value
            refusal = cls
            if cls.image_limit is not None:
                limit = cls.image_limit
            elif cls.status is not None and 400 <= cls.status < 500:
                limit = n - 1
            break
        report.image_limit = limit
        self._image_check(report, limit, refusal)

    def _image_check(self, report: DoctorReport, limit: int | None, refusal: Classification | None) -> None:
        tried = len(IMAGE_COLOURS)
        if refusal is None:
            report.checks.append(
                Check(
                    "images",
                    Mark.OK,
                    "images per request",
                    f"1, 2 and {tried} images accepted in one request (no limit seen; MMMU needs up to "
                    f"{MMMU_MAX_IMAGES})",
                )
            )
            return
        if limit is None:
            n = max(int(k) for k in report.images)
            report.checks.append(
                Check(
                    "images",
                    Mark.WARN,
                    "images per request",
                    f"{n} images in one request failed without a limit message ({_failure_text(refusal)}); "
                    "the limit is unclear",
                    "check the server log, then rerun doctor",
                )
            )
            return
        if self.resolved.kind is BackendKind.VLLM or refusal.image_limit is not None:
            restart = f"restart vLLM with --limit-mm-per-prompt '{{\"image\": {MMMU_MAX_IMAGES}}}'"
        else:
            restart = "raise the server's image limit per request"
        report.checks.append(
            Check(
                "images",
                Mark.WARN,
                "images per request",
                f"at most {limit} image{'s' if limit != 1 else ''} per request ({_failure_text(refusal)}): "
                f"MMMU questions with more images will be recorded `unsupported` under --multi-image error",
                f"{restart} (MMMU questions have up to {MMMU_MAX_IMAGES} images), or run with "
                "--multi-image merge or skip",
            )
        )

    def determinism(self, report: DoctorReport, first: Classification, again: Classification) -> None:
        second = again.text if again.is_answer else None
        report.texts["one_image_again"] = second
        report.deterministic = judge_determinism(first.text, second)
        if report.deterministic:
            report.checks.append(
                Check(
                    "determinism",
                    Mark.OK,
                    "determinism",
                    f"temperature 0: the same request twice gave the same text {_quote(first.text)}",
                )
            )
        elif report.deterministic is None:
            report.checks.append(
                Check(
                    "determinism",
                    Mark.WARN,
                    "determinism",
                    f"could not check: the repeated request failed ({_failure_text(again)})",
                    "rerun doctor; check the server log",
                )
            )
        else:
            report.checks.append(
                Check(
                    "determinism",
                    Mark.WARN,
                    "determinism",
                    f"temperature 0 is not deterministic: {_quote(first.text)} then {_quote(second)}; "
                    "runs will differ by noise, not only by engine",
                    "check the server's sampling defaults (vLLM --generation-config vllm) and whether its "
                    "kernels depend on batch size; compare runs with --seed parity and expect noise",
                )
            )

    async def seed(self, report: DoctorReport) -> None:
        prompt = "Write a few words about colours."

        async def answer(seed: int) -> tuple[str | None, Classification]:
            cls, _ = await self.send(chat_body(0, temperature=1.0, seed=seed, text=prompt))
            return (cls.text if cls.is_answer else None), cls

        a, cls_a = await answer(SEED_SAME)
        b, cls_b = await answer(SEED_SAME)
        others: list[str | None] = []
        if a is not None and a == b:
            for seed in SEEDS_OTHER:  # stop at the first seed that changes the text
                text, _ = await answer(seed)
                others.append(text)
                if text is not None and text != a:
                    break
        report.seed = judge_seed((a, b), others)
        report.texts["seed"] = {"same": [a, b], "others": others}
        if report.seed == "honoured":
            mark, detail, fix = (
                Mark.OK,
                f"honoured: at temperature 1 seed {SEED_SAME} twice gave the same text, another seed a "
                "different one",
                None,
            )
        elif report.seed == "ignored":
            mark = Mark.WARN
            detail = (
                f"ignored: at temperature 1 seed {SEED_SAME} twice gave different texts ({_quote(a)}, "
                f"{_quote(b)})"
            )
            fix = "sampled runs (temperature > 0) are not reproducible here; evaluate at temperature 0"
        else:
            failed = next((c for c in (cls_a, cls_b) if not c.is_answer), None)
            why = (
                f"a seeded request failed ({_failure_text(failed)})"
                if failed is not None
                else f"{len(others) + 1} seeds all gave the same text at temperature 1"
            )
            mark, detail = Mark.WARN, f"unclear: {why}"
            fix = "nothing to do for temperature-0 runs; for sampled runs check the server's seed support"
        report.checks.append(Check("seed", mark, "seed", detail, fix))

    async def streaming(self, report: DoctorReport, first: Classification) -> None:
        result = await self.stream(chat_body(1))
        cls = result.classification
        report.streaming = result.sse and cls.is_answer
        report.stream_done = result.done if result.sse else None
        report.usage_stream = _usage_ok(result.usage) if result.sse else None
        if cls.is_answer and first.text is not None:
            report.stream_matches_unary = cls.text == first.text
        report.texts["stream"] = cls.text
        if not result.sse:
            if cls.is_answer:
                detail = "the server answered stream: true with a plain JSON body, not server-sent events"
            else:
                detail = f"a streamed request failed: {_failure_text(cls)}"
            report.checks.append(
                Check("streaming", Mark.WARN, "streaming", detail, "run without --stream (the default)")
            )
        elif not cls.is_answer:
            report.checks.append(
                Check(
                    "streaming",
                    Mark.WARN,
                    "streaming",
                    f"the stream broke: {_failure_text(cls)}",
                    "run without --stream (the default)",
                )
            )
        elif not result.done:
            report.checks.append(
                Check(
                    "streaming",
                    Mark.WARN,
                    "streaming",
                    f"{result.events} SSE events but no closing data: [DONE]",
                    "run without --stream (the default)",
                )
            )
        elif report.stream_matches_unary is False:
            report.checks.append(
                Check(
                    "streaming",
                    Mark.WARN,
                    "streaming",
                    f"SSE works ({result.events} events, data: [DONE]) but the streamed text "
                    f"{_quote(cls.text)} differs from the unary answer {_quote(first.text)}",
                    "compare runs made the same way: all unary (the default) or all --stream",
                )
            )
        else:
            report.checks.append(
                Check(
                    "streaming",
                    Mark.OK,
                    "streaming",
                    f"SSE works: {result.events} events ending with data: [DONE], same text as the unary answer",
                )
            )
        self._usage_check(report, first)

    def _usage_check(self, report: DoctorReport, first: Classification) -> None:
        missing = []
        if not report.usage_unary:
            missing.append("unary answers")
        if report.usage_stream is False:
            missing.append("streams with stream_options.include_usage")
        if missing:
            report.checks.append(
                Check(
                    "usage",
                    Mark.WARN,
                    "usage",
                    f"no token usage in {' nor in '.join(missing)}",
                    "token counts and tokens/s will be missing from reports; nothing else depends on them",
                )
            )
            return
        where = "unary answers" + (" and in streams (include_usage)" if report.usage_stream else "")
        report.checks.append(
            Check(
                "usage",
                Mark.OK,
                "usage",
                f"present in {where}: {first.prompt_tokens} prompt + {first.completion_tokens} completion "
                "tokens for one image",
            )
        )

    async def errors(self, report: DoctorReport) -> None:
        unknown, _ = await self.send(chat_body(1), model=UNKNOWN_MODEL)
        corrupt_body = chat_body(1)
        corrupt_body["messages"][0]["content"][0]["image_url"]["url"] = corrupt_image_url()
        corrupt, _ = await self.send(corrupt_body)
        for key, cls in (("unknown_model", unknown), ("corrupt_image", corrupt)):
            report.errors[key] = {
                "status": cls.status,
                "outcome": cls.outcome.value,
                "shape": error_shape(cls.response) if not cls.is_answer else None,
                "message": cls.server_message,
            }
        shapes = [e["shape"] for e in report.errors.values() if e["shape"] not in (None, "none")]
        report.error_shape = shapes[0] if shapes else "none"
        problems: list[str] = []
        if unknown.is_answer:
            problems.append(f"a request for model {UNKNOWN_MODEL!r} was answered: the server ignores `model`")
        if corrupt.is_answer:
            problems.append("a corrupt image was answered instead of refused")
        elif corrupt.status is None or corrupt.status >= 500:
            problems.append(
                f"a corrupt image gave {_failure_text(corrupt)}: such samples will be retried as transient"
            )
        if len(set(shapes)) > 1:
            problems.append(f"two error shapes seen ({', '.join(sorted(set(shapes)))})")
        expected = self._expected_vllm_shape()
        if expected is not None and report.error_shape not in (expected, "none"):
            problems.append(
                f"{report.error_shape} errors are unexpected for vLLM {self.resolved.server_version} "
                f"({expected} expected)"
            )
        parts = []
        for key, label in (("unknown_model", "unknown model"), ("corrupt_image", "corrupt image")):
            err = report.errors[key]
            if err["outcome"] in ("ok", "empty", "length"):
                parts.append(f"{label} → answered")
            else:
                parts.append(f"{label} → {err['status'] or err['outcome']} {_quote(err['message'])}")
        detail = f"{SHAPE_TEXT.get(report.error_shape, report.error_shape)}; {'; '.join(parts)}"
        if problems:
            report.checks.append(
                Check(
                    "errors",
                    Mark.WARN,
                    "errors",
                    f"{detail}; {'; '.join(problems)}",
                    "vlmparity reads every known shape; check the server version and configuration",
                )
            )
        else:
            report.checks.append(Check("errors", Mark.OK, "errors", detail))

    def _expected_vllm_shape(self) -> str | None:
        if self.resolved.kind is not BackendKind.VLLM:
            return None
        version = _version_tuple(self.resolved.server_version)
        if version is None:
            return None
        return "flat" if version < (0, 10, 1) else "nested"


# ---------------------------------------------------------------------------------------------- entry


async def run_doctor(
    spec: EndpointSpec,
    *,
    timeout: float = 30.0,
    request_timeout: float = 120.0,
    connect_timeout: float | None = None,
) -> DoctorReport:
    """Probe `spec` (waiting up to `timeout` s for readiness, and up to `connect_timeout` s for a server
    that refuses connections: None waits as long as for readiness, 0 not at all) and run every check;
    never raises for the endpoint's own failures (they become failed checks)."""
    start = time.monotonic()
    try:
        resolved = await resolve_endpoint(spec, ready_timeout=timeout, connect_timeout=connect_timeout)
    except EndpointError as err:
        return await diagnose(spec, err, time.monotonic() - start)
    report = DoctorReport(url=spec.url)
    async with make_http_client(2) as http:
        if resolved.kind is BackendKind.OVMS:
            report.ovms_paths = await _ovms_paths(resolved, http)
        _gate_checks(report, resolved, spec)
        await _Behaviour(resolved, http, request_timeout).run(report)
    return report


__all__ = [
    "Check",
    "DoctorReport",
    "Mark",
    "chat_body",
    "diagnose",
    "error_shape",
    "judge_determinism",
    "judge_seed",
    "ovms_release",
    "png_data_url",
    "run_doctor",
]
