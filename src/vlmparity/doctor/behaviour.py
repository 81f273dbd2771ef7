"""Doctor's behaviour checks: the tiny chat requests sent to a resolved endpoint (one image, the image limit,
determinism at temperature 0, seed, streaming and usage, error shapes, log-probabilities), each judged into
one checklist line."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import httpx

from vlmparity.backends import backend_profiles, get_backend
from vlmparity.client.classify import (
    MAX_REPLY_BYTES,
    Classification,
    classify,
    classify_exception,
    malformed,
    usage_counts,
    valid_status,
)
from vlmparity.client.endpoint import ResolvedEndpoint
from vlmparity.client.logprobs import probe_logprobs
from vlmparity.client.probe_bodies import IMAGE_COLOURS, chat_body
from vlmparity.client.transport import StreamAssembler, capped_lines, encode_body, read_capped, send_attempt
from vlmparity.doctor.report import (
    Check,
    DoctorReport,
    Mark,
    corrupt_image_url,
    error_shape,
    judge_determinism,
    judge_seed,
    ms,
    quote,
    shape_text,
)
from vlmparity.tasks.base import get_task, task_names

UNKNOWN_MODEL = "vlmparity-doctor-no-such-model"
SEED_SAME = 1234
SEEDS_OTHER = (1235, 1236, 1237, 1238)


def max_images() -> int:
    """The most images one question of any registered task carries (MMMU-val: 7)."""
    return max((get_task(name).max_images for name in task_names()), default=1)


def _restart_advice(resolved: ResolvedEndpoint, refusal: Classification, n: int) -> str:
    """How to raise the image limit to `n`: the option of the endpoint's kind, else of the kind whose
    wording the refusal has, else in general."""
    own = get_backend(resolved.kind)
    worded = [
        p
        for p in backend_profiles()
        if refusal.server_message and any(r.search(refusal.server_message) for r in p.image_limit_patterns)
    ]
    for profile in (own, *worded):
        option = profile.raise_image_limit(n)
        if option is not None:
            return f"restart {profile.title} with {option}"
    return "raise the server's image limit per request"


@dataclass(frozen=True)
class _StreamResult:
    classification: Classification
    sse: bool = False
    done: bool = False
    usage: dict[str, Any] | None = None
    events: int = 0


def _usage_ok(usage: Any) -> bool:
    """Both token counts present and in range (`classify.usage_counts`)."""
    prompt, completion, _ = usage_counts(usage)
    return prompt is not None and completion is not None


def _failure_text(cls: Classification) -> str:
    status = f"HTTP {cls.status}" if cls.status else cls.outcome.value
    return f"{status}: {quote(cls.server_message)}" if cls.server_message else status


class Behaviour:
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
                f"{self.resolved.chat_url} answered a one-image request in {ms(latency)}: {quote(first.text)}",
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
                    f"{max_images()})",
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
        most = max_images()
        restart = _restart_advice(self.resolved, refusal, most)
        report.checks.append(
            Check(
                "images",
                Mark.WARN,
                "images per request",
                f"at most {limit} image{'s' if limit != 1 else ''} per request ({_failure_text(refusal)}): "
                f"MMMU questions with more images will be recorded `unsupported` under --multi-image error",
                f"{restart} (MMMU questions have up to {most} images), or run with "
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
                    f"temperature 0: the same request twice gave the same text {quote(first.text)}",
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
                    f"temperature 0 is not deterministic: {quote(first.text)} then {quote(second)}; "
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
                f"ignored: at temperature 1 seed {SEED_SAME} twice gave different texts ({quote(a)}, "
                f"{quote(b)})"
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
                    f"{quote(cls.text)} differs from the unary answer {quote(first.text)}",
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
        profile = get_backend(self.resolved.kind)
        check = profile.expected_error_shape
        expected = check(self.resolved.server_version) if check is not None else None
        if expected is not None and report.error_shape not in (expected, "none"):
            problems.append(
                f"{report.error_shape} errors are unexpected for {profile.title} {self.resolved.server_version} "
                f"({expected} expected)"
            )
        parts = []
        for key, label in (("unknown_model", "unknown model"), ("corrupt_image", "corrupt image")):
            err = report.errors[key]
            if err["outcome"] in ("ok", "empty", "length"):
                parts.append(f"{label} → answered")
            else:
                parts.append(f"{label} → {err['status'] or err['outcome']} {quote(err['message'])}")
        detail = f"{shape_text(report.error_shape)}; {'; '.join(parts)}"
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
