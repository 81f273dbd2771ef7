"""Classification of every error and answer shape listed in research/servers.md (no network)."""

from __future__ import annotations

import email.utils
import random

import httpx
import orjson
import pytest

from vlmparity.client.classify import Outcome, classify, parse_retry_after, server_message
from vlmparity.client.concurrency import AdaptiveController, FixedController
from vlmparity.client.dispatcher import RetryPolicy
from vlmparity.client.transport import StreamAssembler, encode_body, wants_stream

JSON = {"content-type": "application/json"}


def _answer(content: object, finish: str = "stop", usage: dict[str, int] | None = None) -> bytes:
    doc: dict[str, object] = {
        "object": "chat.completion",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}
        ],
    }
    if usage is not None:
        doc["usage"] = usage
    return orjson.dumps(doc)


# -- answers -------------------------------------------------------------------------------------------


def test_ok_answer_keeps_text_and_usage() -> None:
    body = _answer("Yes", usage={"prompt_tokens": 600, "completion_tokens": 2, "total_tokens": 602})
    cls = classify(200, JSON, body)
    assert cls.outcome is Outcome.OK
    assert (cls.text, cls.finish_reason, cls.prompt_tokens, cls.completion_tokens) == ("Yes", "stop", 600, 2)
    assert not cls.transient
    assert cls.response is not None and cls.response["choices"][0]["message"]["content"] == "Yes"


@pytest.mark.parametrize("content", ["", "   \n\t", None])
def test_empty_content_is_empty(content: object) -> None:
    cls = classify(200, JSON, _answer(content))
    assert cls.outcome is Outcome.EMPTY
    assert not cls.transient


def test_finish_reason_length_keeps_text() -> None:
    cls = classify(200, JSON, _answer("The answer is (B) because", finish="length"))
    assert cls.outcome is Outcome.LENGTH
    assert cls.text == "The answer is (B) because"
    assert not cls.transient


def test_ovms_unary_without_id_is_fine() -> None:
    # OVMS unary bodies have no "id" and no "system_fingerprint" (servers.md 1.6).
    body = (
        b'{"choices":[{"finish_reason":"stop","index":0,"logprobs":null,"message":{"content":"No","role":"assistant"}}],'
        b'"created":1,"model":"m","object":"chat.completion","usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}'
    )
    cls = classify(200, JSON, body)
    assert (cls.outcome, cls.text, cls.completion_tokens) == (Outcome.OK, "No", 1)


# -- HTTP errors: vLLM -----------------------------------------------------------------------------------


def test_vllm_nested_error_400_is_permanent() -> None:
    body = b'{"error":{"message":"This model\'s maximum context length is 4096 tokens. However, your request has 5000 input tokens.","type":"BadRequestError","param":null,"code":400}}'
    cls = classify(400, JSON, body)
    assert cls.outcome is Outcome.HTTP_ERROR
    assert cls.status == 400
    assert not cls.transient
    assert cls.server_message is not None and cls.server_message.startswith(
        "This model's maximum context length"
    )


def test_vllm_flat_error_is_parsed() -> None:
    body = b'{"object":"error","message":"The model `llava` does not exist.","type":"NotFoundError","param":null,"code":404}'
    cls = classify(404, JSON, body)
    assert (cls.outcome, cls.transient, cls.server_message) == (
        Outcome.HTTP_ERROR,
        False,
        "The model `llava` does not exist.",
    )


def test_vllm_500_is_transient() -> None:
    body = b'{"error":{"message":"EngineCore encountered an issue.","type":"InternalServerError","param":null,"code":500}}'
    cls = classify(500, JSON, body)
    assert cls.transient and cls.server_message == "EngineCore encountered an issue."


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        (
            "At most 1 image(s) may be provided in one prompt. Set `--limit-mm-per-prompt` to increase this limit.",
            1,
        ),
        ("At most 0 image(s) may be provided in one prompt.", 0),
        ("At most 2 image(s) may be provided in one request.", 2),
    ],
)
def test_image_limit_is_unsupported(message: str, limit: int) -> None:
    nested = orjson.dumps(
        {"error": {"message": message, "type": "BadRequestError", "param": "image", "code": 400}}
    )
    flat = orjson.dumps(
        {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": 400}
    )
    for body in (nested, flat):
        cls = classify(400, JSON, body)
        assert cls.outcome is Outcome.UNSUPPORTED
        assert cls.image_limit == limit
        assert not cls.transient
        assert cls.server_message == message


# -- HTTP errors: OVMS -----------------------------------------------------------------------------------


def test_ovms_412_invalid_json() -> None:
    cls = classify(412, JSON, b'{"error":"The file is not valid json - Cannot parse JSON body"}')
    assert (cls.outcome, cls.transient) == (Outcome.HTTP_ERROR, False)
    assert cls.server_message == "The file is not valid json - Cannot parse JSON body"


def test_ovms_404_unknown_model() -> None:
    cls = classify(404, JSON, b'{"error":"Mediapipe graph definition with requested name is not found"}')
    assert (cls.status, cls.transient) == (404, False)
    assert cls.server_message == "Mediapipe graph definition with requested name is not found"


def test_ovms_400_mediapipe_prefix_keeps_tail() -> None:
    body = (
        b'{"error":"Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: '
        b'\\nCalculator::Process() for node \\"llmNode1\\" failed: Message contains restricted <ov_genai_image> tag"}'
    )
    cls = classify(400, JSON, body)
    assert (cls.outcome, cls.transient) == (Outcome.HTTP_ERROR, False)
    assert cls.server_message == "Message contains restricted <ov_genai_image> tag"


def test_ovms_400_prompt_too_long_via_llmexecutor() -> None:
    body = orjson.dumps(
        {
            "error": "Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \n"
            'Calculator::Process() for node "LLMExecutor" failed: Number of prompt tokens: 5000 exceeds model max length: 4096'
        }
    )
    cls = classify(400, JSON, body)
    assert cls.server_message == "Number of prompt tokens: 5000 exceeds model max length: 4096"
    assert not cls.transient


def test_ovms_500_not_loaded_is_transient() -> None:
    cls = classify(500, JSON, b'{"error":"Mediapipe is not loaded yet"}')
    assert (cls.outcome, cls.transient, cls.server_message) == (
        Outcome.HTTP_ERROR,
        True,
        "Mediapipe is not loaded yet",
    )


def test_ovms_text_only_servable_is_unsupported_with_no_images() -> None:
    body = orjson.dumps(
        {
            "error": "Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \n"
            'Calculator::Process() for node "LLMExecutor" failed: This servable supports only text input, but image_url has been provided'
        }
    )
    cls = classify(400, JSON, body)
    assert (cls.outcome, cls.image_limit) == (Outcome.UNSUPPORTED, 0)


# -- proxies, garbage, transport failures ---------------------------------------------------------------


def test_html_proxy_page_is_transient_with_title() -> None:
    body = b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body><center><h1>502 Bad Gateway</h1></center><hr><center>nginx</center></body></html>"
    cls = classify(502, {"content-type": "text/html"}, body)
    assert (cls.outcome, cls.transient, cls.server_message) == (Outcome.HTTP_ERROR, True, "502 Bad Gateway")


def test_html_without_title_gives_first_text() -> None:
    body = b"<!DOCTYPE html><html><body><h1>Service Unavailable</h1><p>try later</p></body></html>"
    cls = classify(503, {}, body)
    assert cls.server_message == "Service Unavailable try later"
    assert cls.transient


def test_html_4xx_is_permanent() -> None:
    body = b"<html><head><title>413 Request Entity Too Large</title></head></html>"
    cls = classify(413, {"content-type": "text/html"}, body)
    assert (cls.transient, cls.server_message) == (False, "413 Request Entity Too Large")


def test_html_200_is_transient_malformed() -> None:
    cls = classify(200, {"content-type": "text/html; charset=utf-8"}, b"<html><title>Login</title></html>")
    assert cls.outcome is Outcome.MALFORMED and cls.transient
    assert cls.server_message is not None and "Login" in cls.server_message


def test_truncated_json_200_is_transient() -> None:
    body = _answer("Yes")[:-10]
    cls = classify(200, JSON, body)
    assert (cls.outcome, cls.transient, cls.status) == (Outcome.MALFORMED, True, 200)


def test_empty_200_body_is_transient() -> None:
    cls = classify(200, JSON, b"")
    assert cls.outcome is Outcome.MALFORMED and cls.transient


@pytest.mark.parametrize(
    ("status", "transient"),
    [(408, True), (429, True), (400, False), (401, False), (422, False), (503, True), (504, True)],
)
def test_status_transience(status: int, transient: bool) -> None:
    assert classify(status, JSON, b'{"error":"x"}').transient is transient


def test_fastapi_detail_is_extracted() -> None:
    assert classify(404, JSON, b'{"detail":"Not Found"}').server_message == "Not Found"
    body = b'{"detail":[{"loc":["body","messages"],"msg":"Field required","type":"missing"}]}'
    assert classify(422, JSON, body).server_message == "body.messages: Field required"


def test_plain_text_error_body() -> None:
    cls = classify(500, {"content-type": "text/plain"}, b"Internal Server Error")
    assert (cls.server_message, cls.transient) == ("Internal Server Error", True)


def test_connection_refused_and_timeout() -> None:
    refused = httpx.ConnectError("All connection attempts failed")
    refused.__cause__ = ConnectionRefusedError(111, "Connect call failed")
    cls = classify(None, None, None, refused)
    assert (cls.outcome, cls.transient, cls.server_message) == (
        Outcome.CONNECTION,
        True,
        "connection refused",
    )
    cls = classify(None, None, None, httpx.ReadTimeout("timed out"))
    assert (cls.outcome, cls.transient, cls.server_message) == (Outcome.TIMEOUT, True, "read timeout")
    cls = classify(
        None, None, None, httpx.RemoteProtocolError("Server disconnected without sending a response.")
    )
    assert cls.outcome is Outcome.CONNECTION and cls.transient


# -- Retry-After ----------------------------------------------------------------------------------------


def test_retry_after_seconds_and_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 0 ") == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0


def test_retry_after_header_is_read_on_429() -> None:
    cls = classify(429, {"Retry-After": "3", "content-type": "application/json"}, b'{"error":"busy"}')
    assert (cls.retry_after_s, cls.transient, cls.server_message) == (3.0, True, "busy")


def test_server_message_helper() -> None:
    assert server_message(JSON, b'{"error":{"message":"boom","code":500}}') == "boom"
    assert server_message(JSON, b"") is None


# -- SSE streams ------------------------------------------------------------------------------------------


def _feed(lines: list[str]) -> StreamAssembler:
    asm = StreamAssembler()
    for line in lines:
        asm.feed_line(line)
    asm.close()
    return asm


def _chunk(delta: dict[str, object], finish: str | None = None) -> str:
    return (
        "data: "
        + orjson.dumps(
            {
                "object": "chat.completion.chunk",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
        ).decode()
    )


def test_stream_vllm_with_usage_chunk() -> None:
    usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}
    lines = [
        _chunk({"role": "assistant", "content": ""}),
        "",
        _chunk({"content": "The"}),
        "",
        _chunk({"content": " answer"}),
        "",
        _chunk({"content": " B"}, finish="stop"),
        "",
        "data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [], "usage": usage}).decode(),
        "",
        "data: [DONE]",
        "",
    ]
    cls = _feed(lines).classify()
    assert (cls.outcome, cls.text, cls.finish_reason) == (Outcome.OK, "The answer B", "stop")
    assert (cls.prompt_tokens, cls.completion_tokens) == (10, 3)


def test_stream_ovms_first_chunk_content_null() -> None:
    lines = [
        _chunk({"role": "assistant", "content": None}),
        "",
        _chunk({"content": "No"}, "stop"),
        "",
        "data: [DONE]",
        "",
    ]
    asm = StreamAssembler()
    firsts = [asm.feed_line(line) for line in lines]
    assert firsts == [False, False, False, True, False, False]  # TTFT marks the first real content only
    cls = asm.classify()
    assert (cls.outcome, cls.text) == (Outcome.OK, "No")


def test_stream_length_and_empty() -> None:
    cls = _feed([_chunk({"content": "abc"}, "length"), "", "data: [DONE]", ""]).classify()
    assert (cls.outcome, cls.text) == (Outcome.LENGTH, "abc")
    cls = _feed([_chunk({"role": "assistant", "content": None}, "stop"), "", "data: [DONE]", ""]).classify()
    assert cls.outcome is Outcome.EMPTY


def test_stream_midstream_error_vllm() -> None:
    err = {"error": {"message": "EngineCore died", "type": "InternalServerError", "param": None, "code": 500}}
    cls = _feed(
        [_chunk({"content": "Ye"}), "", "data: " + orjson.dumps(err).decode(), "", "data: [DONE]", ""]
    ).classify()
    assert (cls.outcome, cls.transient, cls.server_message) == (Outcome.HTTP_ERROR, True, "EngineCore died")


def test_stream_midstream_error_400_code_is_permanent() -> None:
    err = {"error": {"message": "bad", "type": "BadRequestError", "param": None, "code": 400}}
    cls = _feed(["data: " + orjson.dumps(err).decode(), ""]).classify()
    assert cls.outcome is Outcome.HTTP_ERROR and not cls.transient


def test_stream_ovms_appended_plain_error() -> None:
    cls = _feed(
        [
            _chunk({"content": "x"}),
            "",
            '{"error":"Mediapipe execution failed. MP status - INVALID_ARGUMENT: CalculatorGraph::Run() failed: \\nCalculator::Process() for node \\"LLMExecutor\\" failed: Image parsing failed"}',
        ]
    ).classify()
    assert (cls.outcome, cls.server_message) == (Outcome.HTTP_ERROR, "Image parsing failed")


def test_stream_truncated_is_transient() -> None:
    cls = _feed([_chunk({"content": "Ye"}), ""]).classify()
    assert (cls.outcome, cls.transient) == (Outcome.MALFORMED, True)


# -- bodies ----------------------------------------------------------------------------------------------


def test_encode_body_dict_and_bytes_agree() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "temperature": 0.0}
    from_dict = encode_body(body, "llava")
    from_bytes = encode_body(orjson.dumps(body), "llava")
    assert from_dict == from_bytes
    assert orjson.loads(from_dict) == {"model": "llava", **body}
    assert from_dict.startswith(b'{"model":"llava",')
    assert encode_body(b"{}", "m") == b'{"model":"m"}'
    assert orjson.loads(encode_body({"model": "old", "x": 1}, "new")) == {"model": "new", "x": 1}


def test_wants_stream() -> None:
    assert wants_stream({"stream": True}) and not wants_stream({"stream": False}) and not wants_stream({})
    assert wants_stream(orjson.dumps({"messages": [], "stream": True}))


def test_wants_stream_on_big_bodies() -> None:
    # a 2 MB image between the keys: the flag is found after it (build_request's order) or before it
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 2_000_000}}
    messages = [{"role": "user", "content": [{"type": "text", "text": 'say "stream":true'}, image]}]
    after = {"messages": messages, "max_tokens": 16, "temperature": 0.0, "stream": True}
    assert wants_stream(orjson.dumps(after))
    assert wants_stream(orjson.dumps({"stream": True, **after}))
    assert wants_stream(b'{"stream": true, "messages": []}')
    # a prompt quoting the key is no flag (its quotes are escaped), nor is stream false
    assert not wants_stream(orjson.dumps({**after, "stream": False}))
    assert not wants_stream(orjson.dumps({"messages": [{"role": "user", "content": '"stream":true'}]}))
    assert not wants_stream(bytearray(orjson.dumps({"messages": messages})))


# -- retry backoff and concurrency controllers (pure) ----------------------------------------------------


def test_backoff_grows_and_is_bounded() -> None:
    policy = RetryPolicy(backoff_base_s=1.0, backoff_max_s=8.0)
    rng = random.Random(0)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 8.0), (9, 8.0)]:
        delay = policy.backoff(attempt, rng)
        assert ceiling / 2 <= delay <= ceiling


def test_backoff_does_not_touch_global_random() -> None:
    random.seed(42)
    expected = [random.random() for _ in range(3)]
    random.seed(42)
    policy = RetryPolicy()
    policy.backoff(1, random.Random(7))
    assert [random.random() for _ in range(3)] == expected


def test_adaptive_slow_start_then_halves_once_per_window() -> None:
    ctl = AdaptiveController(initial=4, maximum=64)
    ok = classify(200, JSON, _answer("Yes"))
    for _ in range(4):  # slow start: +1 per answer while the limit is in use and latency is at its floor
        ctl.on_attempt(ok, 0.1, in_flight=ctl.limit)
    assert ctl.limit == 8
    busy = classify(429, JSON, b'{"error":"busy"}')
    ctl.on_attempt(busy, 0.1, in_flight=8)
    assert ctl.limit == 4
    ctl.on_attempt(busy, 0.1, in_flight=7)  # same burst: no second halving within the window
    assert ctl.limit == 4
    # after slow start: +1/limit per answer: 4 + 1/4 + 1/4.25 + 1/4.49 + 1/4.71 = 4.92, then 5.12
    for _ in range(4):
        ctl.on_attempt(ok, 0.1, in_flight=ctl.limit)
    assert ctl.limit == 4
    ctl.on_attempt(ok, 0.1, in_flight=ctl.limit)
    assert ctl.limit == 5
    reasons = [change.reason for change in ctl.history]
    assert "overload: HTTP 429" in reasons


def test_adaptive_does_not_grow_on_slow_answers_or_idle_limit() -> None:
    ctl = AdaptiveController(initial=4, maximum=64)
    ok = classify(200, JSON, _answer("Yes"))
    ctl.on_attempt(ok, 1.0, in_flight=4)
    assert ctl.limit == 5
    ctl.on_attempt(ok, 1.0, in_flight=1)  # the limit is not in use: no growth
    assert ctl.limit == 5
    ctl.on_attempt(ok, 5.0, in_flight=5)  # 5x the floor: queueing, shrink by 10 %
    assert ctl.limit == 4


def test_adaptive_long_answers_are_not_congestion_but_queueing_is() -> None:
    ctl = AdaptiveController(initial=4, maximum=64)
    ok = classify(200, JSON, _answer("Yes"))
    for _ in range(4):
        ctl.on_attempt(ok, 0.1, in_flight=ctl.limit)
    ctl.on_attempt(classify(429, JSON, b"{}"), 0.1, in_flight=8)  # 8 -> 4, slow start over
    assert ctl.limit == 4
    # Heterogeneous answers (short 0.1 s, long 5 s) without queueing: the fastest recent answer is at
    # the floor, so the limit keeps growing: 4 + 1/4 + 1/4.25 + ... over 8 answers = 5.69.
    for latency in [0.1, 5.0] * 4:
        ctl.on_attempt(ok, latency, in_flight=ctl.limit)
    assert ctl.limit == 5
    # Queueing: every answer is slow. Growth goes on until the window (last `limit` answers) holds only
    # slow ones (5.69 -> 6.36 after 4 answers), then one 10 % cut per window: 5.72, 5.15, 4.63, 4.17.
    for _ in range(20):
        ctl.on_attempt(ok, 5.0, in_flight=ctl.limit)
    assert ctl.limit == 4
    assert [c.reason for c in ctl.history].count("latency above floor") >= 1


def test_adaptive_slow_start_ends_at_the_first_queueing_without_a_cut() -> None:
    ctl = AdaptiveController(initial=16, maximum=64)
    ok = classify(200, JSON, _answer("Yes"))
    for _ in range(4):  # the server's first wave: at the floor, doubling per round trip
        ctl.on_attempt(ok, 0.5, in_flight=ctl.limit)
    assert ctl.limit == 20
    ctl.on_attempt(ok, 0.7, in_flight=ctl.limit)  # 1.4x the floor: jitter, slow start goes on
    assert ctl.limit == 21
    ctl.on_attempt(ok, 0.8, in_flight=ctl.limit)  # 1.6x the floor: queueing has begun; no cut (< 2x)
    assert ctl.limit == 21
    assert ctl.history[-1].reason == "slow start ends: queueing"
    for _ in range(22):  # additive from here: +1/limit per answer, about +1 per round trip (21.0 -> 22.02)
        ctl.on_attempt(ok, 0.8, in_flight=ctl.limit)
    assert ctl.limit == 22
    # a short floor: the absolute slack (50 ms) keeps scheduling jitter from ending slow start
    fast = AdaptiveController(initial=16, maximum=64)
    fast.on_attempt(ok, 0.01, in_flight=16)
    fast.on_attempt(ok, 0.04, in_flight=17)  # 4x the floor but only 30 ms more
    assert fast.limit == 18 and all(c.reason != "slow start ends: queueing" for c in fast.history)


def test_adaptive_timeouts_and_503_back_off_but_400_does_not() -> None:
    ctl = AdaptiveController(initial=8, maximum=64)
    ctl.on_attempt(classify(400, JSON, b'{"error":"bad"}'), 0.1, in_flight=8)
    assert ctl.limit == 8
    ctl.on_attempt(classify(None, None, None, httpx.ReadTimeout("t")), 600.0, in_flight=8)
    assert ctl.limit == 4
    ctl2 = AdaptiveController(initial=8, maximum=64)
    ctl2.on_attempt(classify(503, JSON, b'{"error":"x"}'), 0.1, in_flight=8)
    assert ctl2.limit == 4


def test_adaptive_respects_bounds() -> None:
    ctl = AdaptiveController(initial=2, minimum=1, maximum=3)
    ok = classify(200, JSON, _answer("Yes"))
    for _ in range(10):
        ctl.on_attempt(ok, 0.1, in_flight=ctl.limit)
    assert ctl.limit == 3
    busy = classify(429, JSON, b"{}")
    for _ in range(20):
        ctl.on_attempt(busy, 0.1, in_flight=0)
    assert ctl.limit == 1


def test_fixed_controller() -> None:
    ctl = FixedController(6)
    ctl.on_attempt(classify(429, JSON, b"{}"), 0.1, in_flight=6)
    assert ctl.limit == 6
    with pytest.raises(ValueError):
        FixedController(0)


def test_an_error_keeps_its_body_as_received_for_the_lmms_eval_failure_text() -> None:
    body = b'{"error": {"message": "At most 1 image(s) may be provided in one prompt.", "code": 400}}'
    cls = classify(400, {"content-type": "application/json"}, body)
    assert cls.error_body == body.decode()
    assert classify(502, {"content-type": "text/html"}, b"<html>bad</html>").error_body == "<html>bad</html>"
    ok = b'{"choices": [{"message": {"content": "Yes"}, "finish_reason": "stop"}]}'
    assert classify(200, {}, ok).error_body is None
