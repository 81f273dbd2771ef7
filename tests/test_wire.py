"""Issue 11, the wire: every number from a server range-checked, one Retry-After policy, malformed replies,
secrets masked and scrubbed. Expected values are written out by hand from the documented rules, never
computed by the code under test.
"""

from __future__ import annotations

import asyncio
import email.utils
import math
import random
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiohttp import web

from test_client_dispatcher import FakeServer, _answer, _json, body, collect, endpoint, serve
from vlmparity.client import Dispatcher, Outcome, RetryPolicy, classify
from vlmparity.client.classify import (
    MAX_IMAGE_LIMIT,
    MAX_TOKEN_COUNT,
    classify_completion,
    image_limit_from_message,
    parse_retry_after,
    valid_status,
    wire_int,
)
from vlmparity.client.transport import StreamAssembler, read_capped
from vlmparity.masking import (
    forget_all,
    mask_url,
    mask_urls,
    remember,
    scrub_answer,
    scrub_message,
    url_secrets,
)
from vlmparity.store import ResultRecord, SampleRecord, Store

JSON = {"content-type": "application/json"}
FAST = RetryPolicy(max_attempts=3, backoff_base_s=0.01, backoff_max_s=0.02)


@pytest.fixture(autouse=True)
def _no_remembered_secrets() -> Any:
    forget_all()
    yield
    forget_all()


# ----- numbers ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0, 0),
        (7, 7),
        (10**9, 10**9),
        (10**9 + 1, None),  # above the bound given
        (10**19, None),  # above SQLite's 2^63 - 1
        (-1, None),
        (True, None),
        (12.0, None),
        (float("nan"), None),
        (float("inf"), None),
        ("12", 12),
        (" 12 ", 12),
        ("1" * 5000, None),  # int() would refuse it (4300-digit limit)
        ("-3", None),
        ("1e3", None),
        ("١٢", None),  # Arabic-Indic digits: isdigit() but not ASCII
        (None, None),
        ([1], None),
    ],
)
def test_wire_int(value: Any, expected: int | None) -> None:
    assert wire_int(value, hi=10**9) == expected


@pytest.mark.parametrize(
    ("status", "expected"), [(200, 200), (599, 599), (99, None), (600, None), (999, None)]
)
def test_valid_status(status: int, expected: int | None) -> None:
    assert valid_status(status) == expected


@pytest.mark.parametrize(
    ("usage", "prompt", "completion", "ignored"),
    [
        ({"prompt_tokens": 10, "completion_tokens": 1}, 10, 1, None),
        (
            {"prompt_tokens": 10, "completion_tokens": 10**19},
            10,
            None,
            "usage.completion_tokens 10000000000000000000",
        ),
        ({"prompt_tokens": -5, "completion_tokens": 1}, None, 1, "usage.prompt_tokens -5"),
        ({"prompt_tokens": 10, "completion_tokens": 1e300}, 10, None, "usage.completion_tokens 1e+300"),
        ({"prompt_tokens": 10, "completion_tokens": "12"}, 10, None, "usage.completion_tokens '12'"),
        ({"prompt_tokens": True, "completion_tokens": 1}, None, 1, "usage.prompt_tokens True"),
        ("lots", None, None, "usage 'lots'"),
        (None, None, None, None),
    ],
)
def test_token_counts_out_of_range_are_absent_and_noted(
    usage: Any, prompt: int | None, completion: int | None, ignored: str | None
) -> None:
    doc = {"choices": [{"message": {"content": "Yes"}, "finish_reason": "stop"}], "usage": usage}
    cls = classify(200, JSON, orjson.dumps(doc))
    assert cls.outcome is Outcome.OK and cls.text == "Yes"  # the answer itself is kept
    assert (cls.prompt_tokens, cls.completion_tokens) == (prompt, completion)
    if ignored is None:
        assert cls.server_message is None and cls.ignored == ()
    else:
        assert (
            cls.server_message is not None and ignored in cls.server_message
        )  # the raw text, for the report
        assert cls.server_message.startswith("ignored out-of-range or invalid ")


def test_token_bound_is_what_the_docs_say() -> None:
    assert MAX_TOKEN_COUNT == 10**9 and MAX_IMAGE_LIMIT == 10**6


@pytest.mark.parametrize(
    ("message", "limit"),
    [
        ("At most 5 image(s) may be provided in one prompt.", 5),
        ("At most 0 image(s) may be provided in one request.", 0),
        ("At most 1000000 image(s) may be provided in one prompt.", 1000000),
        ("At most 1000001 image(s) may be provided in one prompt.", None),
        ("At most 99999999999999999999 image(s) may be provided in one prompt.", None),
        ("At most " + "9" * 5000 + " image(s) may be provided in one prompt.", None),
    ],
)
def test_image_limit_range(message: str, limit: int | None) -> None:
    assert image_limit_from_message(message) == limit


def test_absurd_image_limit_is_a_permanent_400_with_the_raw_text() -> None:
    msg = "At most 99999999999999999999 image(s) may be provided in one prompt."
    cls = classify(400, JSON, orjson.dumps({"error": {"message": msg, "code": 400}}))
    assert (cls.outcome, cls.status, cls.transient, cls.image_limit) == (Outcome.HTTP_ERROR, 400, False, None)
    assert cls.server_message is not None and "99999999999999999999" in cls.server_message
    assert "ignored: image limit out of range" in cls.server_message


def test_error_code_inside_the_body_is_range_checked() -> None:
    # a 200 carrying an error with code 10^30: not a status, so the error is judged transient (no code)
    cls = classify(200, JSON, orjson.dumps({"error": {"message": "x", "code": 10**18}}))
    assert (cls.outcome, cls.transient) == (Outcome.HTTP_ERROR, True)
    cls = classify(200, JSON, orjson.dumps({"error": {"message": "x", "code": 400}}))
    assert (cls.outcome, cls.transient) == (Outcome.HTTP_ERROR, False)


def test_status_out_of_range_is_malformed_and_absent() -> None:
    cls = classify(999, JSON, orjson.dumps(_answer("Yes")))
    assert (cls.outcome, cls.status, cls.transient) == (Outcome.MALFORMED, None, True)
    assert cls.server_message is not None and "999" in cls.server_message


# ----- Retry-After --------------------------------------------------------------------------------------

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("5", 5.0),
        ("0", 0.0),
        ("86400", 86400.0),  # valid: the dispatcher caps it
        ("1e400", None),
        ("inf", None),
        ("-inf", None),
        ("nan", None),
        ("-5", None),
        ("1e10", None),  # above MAX_RETRY_AFTER_HEADER_S (10^9)
        ("soon", None),
        ("", None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", None),  # ~8000 years: absurd
        (email.utils.formatdate(NOW + 30, usegmt=True), 30.0),
        (email.utils.formatdate(NOW - 30, usegmt=True), 0.0),  # in the past: no wait
        ("Mon, 99 Foo 2020 99:99:99 GMT", None),
    ],
)
def test_parse_retry_after(header: str, seconds: float | None) -> None:
    got = parse_retry_after(header, now=NOW)
    if seconds is None:
        assert got is None
    else:
        assert got is not None and math.isclose(got, seconds, abs_tol=1.0)


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_one_cap_for_every_retryable_status(status: int) -> None:
    cls = classify(status, {**JSON, "retry-after": "86400"}, b'{"error": "busy"}')
    assert cls.transient and cls.retry_after_s == 86400.0
    policy = RetryPolicy()
    assert policy.max_retry_after_s == 120.0  # the documented maximum
    assert policy.honoured_retry_after(cls, 600.0) == 120.0
    assert policy.honoured_retry_after(cls, 7.5) == 7.5  # never longer than one attempt may take
    assert policy.honoured_retry_after(cls, None) == 120.0


def test_retry_after_on_a_permanent_error_is_not_honoured() -> None:
    cls = classify(400, {**JSON, "retry-after": "30"}, b'{"error": "bad"}')
    assert RetryPolicy().honoured_retry_after(cls, 600.0) is None


def test_invalid_retry_after_is_noted_in_the_message() -> None:
    cls = classify(503, {**JSON, "retry-after": "1e400"}, b'{"error": "busy"}')
    assert cls.retry_after_s is None
    assert cls.server_message == "busy (ignored out-of-range or invalid Retry-After '1e400')"


def test_backoff_never_overflows() -> None:
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=30.0)
    rng = random.Random(0)
    for attempt in (1, 2, 60, 1025, 10**6):
        delay = policy.backoff(attempt, rng)
        assert 0.0 <= delay <= 30.0


def test_a_day_long_retry_after_on_a_500_is_capped_by_the_timeout() -> None:
    """Every retryable status pauses all sends, for at most the attempt timeout (here 0.3 s)."""

    async def behaviour(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        if n == 1:
            return _json({"error": {"message": "boom", "code": 500}}, 500, headers={"Retry-After": "86400"})
        return _json(_answer("Yes"))

    async def main() -> tuple[list[Any], Dispatcher]:
        fake = FakeServer(behaviour)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root), concurrency=1, retry=FAST, attempt_timeout_s=0.3)
            results = await collect(dispatcher, [("a", body("a"))])
        return results, dispatcher

    results, dispatcher = asyncio.run(asyncio.wait_for(main(), 60))
    assert [(r.outcome, r.attempts) for r in results] == [(Outcome.OK, 2)]
    assert dispatcher.pause_reasons == ["HTTP 500 Retry-After 0.3 s"]


# ----- malformed replies --------------------------------------------------------------------------------


def _doc(**choice: Any) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", **choice}]}


@pytest.mark.parametrize(
    ("doc", "what"),
    [
        (_doc(message={"content": {"text": "Yes"}}), "content is dict"),
        (_doc(message={"content": 42}), "content is int"),
        (_doc(message={"content": True}), "content is bool"),
        (_doc(message={"content": [1, None, "x"]}), "content[0] is int"),
        (_doc(message={"content": [{"type": "text"}]}), "text part without a string text"),
        (_doc(message={"content": [{"text": "Yes"}]}), "content[0] is dict, not a content part"),
        (_doc(message="Yes"), "message is str"),
        (_doc(message=None), "message is missing"),
        (_doc(), "message is missing"),
        ({"object": "chat.completion"}, "no choices"),
        ({"choices": []}, "no choices"),
        ({"choices": {"0": {}}}, "no choices"),
        ({"choices": ["Yes"]}, "choices[0] is str"),
        ([_answer("Yes")], "JSON list, not an object"),
        ("Yes", "JSON str, not an object"),
    ],
)
def test_malformed_completions(doc: Any, what: str) -> None:
    cls = classify(200, JSON, orjson.dumps(doc))
    assert (cls.outcome, cls.transient, cls.text) == (Outcome.MALFORMED, True, None)
    assert not cls.is_answer
    assert cls.server_message is not None and what in cls.server_message


@pytest.mark.parametrize(
    "body_bytes",
    [b"Yes, I think so.", b"", b'{"choices": [', b'{"choices": "Y\xff\xfe"}', b"<html><h1>nginx</h1></html>"],
)
def test_non_json_200_is_malformed(body_bytes: bytes) -> None:
    assert classify(200, JSON, body_bytes).outcome is Outcome.MALFORMED


def test_content_null_is_a_valid_empty_answer() -> None:
    """lmms-eval turns content null into "" (research/lmms-eval.md §4.5): an answer, not a failure."""
    cls = classify_completion(_doc(message={"role": "assistant", "content": None}))
    assert (cls.outcome, cls.transient, cls.is_answer) == (Outcome.EMPTY, False, True)
    missing = classify_completion(_doc(message={"role": "assistant"}))
    assert missing.outcome is Outcome.EMPTY


def test_content_parts_are_an_answer() -> None:
    parts = [
        {"type": "text", "text": "Ye"},
        {"type": "image_url", "image_url": {}},
        {"type": "text", "text": "s"},
    ]
    cls = classify_completion(_doc(message={"content": parts}))
    assert (cls.outcome, cls.text) == (Outcome.OK, "Yes")
    assert classify_completion(_doc(message={"content": []})).outcome is Outcome.EMPTY


def test_finish_reason_not_a_string_is_absent() -> None:
    cls = classify_completion(_doc(message={"content": "Yes"}, finish_reason={"x": 1}))
    assert (cls.outcome, cls.finish_reason) == (Outcome.OK, None)
    assert cls.server_message is not None and "finish_reason" in cls.server_message


def _stream(*events: bytes) -> StreamAssembler:
    assembler = StreamAssembler()
    for event in events:
        assembler.feed_line("data: " + event.decode())
        assembler.feed_line("")
    assembler.close()
    return assembler


def _delta(content: Any, finish: str | None = None) -> bytes:
    return orjson.dumps({"choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}]})


@pytest.mark.parametrize(
    ("events", "what"),
    [
        ((_delta("Ye"), _delta({"t": 1}, "stop"), b"[DONE]"), "delta.content is dict"),
        ((_delta("Ye"), b"[1, 2]", b"[DONE]"), "stream event is JSON list"),
        ((_delta("Ye"), b"{not json", b"[DONE]"), "invalid JSON in stream event"),
        ((_delta("Ye"),), "stream ended before [DONE]"),
        ((orjson.dumps({"choices": [{"delta": "Yes"}]}), b"[DONE]"), "delta is str"),
    ],
)
def test_malformed_streams(events: tuple[bytes, ...], what: str) -> None:
    cls = _stream(*events).classify()
    assert (cls.outcome, cls.transient) == (Outcome.MALFORMED, True)
    assert cls.server_message is not None and what in cls.server_message


def test_stream_with_huge_usage_keeps_the_answer() -> None:
    usage = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 10**19}})
    cls = _stream(_delta("Yes", "stop"), usage, b"[DONE]").classify()
    assert (cls.outcome, cls.text, cls.prompt_tokens, cls.completion_tokens) == (Outcome.OK, "Yes", 3, None)


def test_malformed_is_retried_then_recorded_never_an_answer() -> None:
    async def behaviour(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        if sample == "heals" and n >= 3:
            return _json(_answer("Yes"))
        return _json({"choices": [{"message": {"content": {"text": "Yes"}}, "finish_reason": "stop"}]})

    async def main() -> tuple[FakeServer, list[Any]]:
        fake = FakeServer(behaviour)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root), concurrency=2, retry=FAST)
            results = await collect(dispatcher, [(s, body(s)) for s in ("heals", "never")])
        return fake, results

    fake, results = asyncio.run(asyncio.wait_for(main(), 60))
    assert dict(fake.calls) == {"heals": 3, "never": 3}
    by_id = {r.sample_id: r for r in results}
    assert (by_id["heals"].outcome, by_id["heals"].text) == (Outcome.OK, "Yes")
    never = by_id["never"]
    assert (never.outcome, never.attempts, never.transient, never.text) == (Outcome.MALFORMED, 3, True, None)


async def _read(headers: dict[str, str], chunks: list[bytes], limit: int) -> bytes | str:
    async def stream() -> Any:
        for chunk in chunks:
            yield chunk

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers=headers, content=stream())

    async with (
        httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client,
        client.stream("POST", "http://x/") as response,
    ):
        return await read_capped(response, limit)


def test_read_capped() -> None:
    assert asyncio.run(_read({}, [b"ab", b"cd"], 4)) == b"abcd"
    assert asyncio.run(_read({}, [b"ab", b"cde"], 4)) == "reply larger than 4 bytes"
    assert asyncio.run(_read({"content-length": "5"}, [b"abcd"], 4)) == "Content-Length '5' out of range 0..4"
    too_long = "9" * 30
    assert asyncio.run(_read({"content-length": too_long}, [b"ab"], 4)).startswith("Content-Length '99999")


# ----- the store can hold whatever reaches it -------------------------------------------------------------


def test_store_writes_out_of_range_integers_as_null(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    run = store.upsert_run("a")
    store.register_samples([SampleRecord("t", "s", 0, "h", 1)])
    store.put_results(
        [
            ResultRecord(
                run.run_id, "t", "s", "h", "ok", text="Yes", completion_tokens=10**19, prompt_tokens=-(2**64)
            )
        ]
    )
    store.set_image_limit(run.run_id, 10**30)
    rec = store.results(run.run_id)[("t", "s")]
    assert (rec.text, rec.completion_tokens, rec.prompt_tokens) == ("Yes", None, None)
    assert store.get_run("a").image_limit is None  # type: ignore[union-attr]
    store.close()
    with sqlite3.connect(tmp_path / "vlmparity.sqlite") as con:
        assert con.execute("SELECT completion_tokens FROM results").fetchone() == (None,)


# ----- secrets ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "masked", "secrets"),
    [
        ("http://user:pw@h:1/v1", "http://user:***@h:1/v1", ["pw"]),
        ("https://tok3n@h/v1", "https://***@h/v1", ["tok3n"]),
        ("http://:pw@h/v1", "http://***@h/v1", ["pw"]),
        ("http://h/v1?api_key=abc&x=1", "http://h/v1?api_key=***&x=1", ["abc"]),
        (
            "http://h/v1?X-Amz-Signature=s1&Token=t2",
            "http://h/v1?X-Amz-Signature=***&Token=***",
            ["s1", "t2"],
        ),
        ("http://h/v1?PASSWORD=p&auth=a&sig=g", "http://h/v1?PASSWORD=***&auth=***&sig=***", ["p", "a", "g"]),
        (
            "http://h/v1?client_secret=c;session_id=d",
            "http://h/v1?client_secret=***;session_id=***",
            ["c", "d"],
        ),
        ("http://h/cb#access_token=q", "http://h/cb#access_token=***", ["q"]),
        ("http://h/v1?model=llava&n=1", "http://h/v1?model=llava&n=1", []),
        ("http://u:p@[::1]:99999/v1", "http://u:***@[::1]:99999/v1", ["p"]),  # a port urllib refuses
        ("http://h:1/v1", "http://h:1/v1", []),
        ("not a url", "not a url", []),
        ("", "", []),
    ],
)
def test_mask_url(url: str, masked: str, secrets: list[str]) -> None:
    assert mask_url(url) == masked
    assert url_secrets(url) == secrets


def test_mask_urls_in_text_keeps_the_sentence() -> None:
    text = "cannot connect to http://u:pw@h:1/v1?token=abcd: refused (see http://x/y?key=zz)."
    assert (
        mask_urls(text)
        == "cannot connect to http://u:***@h:1/v1?token=***: refused (see http://x/y?key=***)."
    )


def test_scrub_message() -> None:
    remember("sk-remembered-0001")
    text = (
        "Incorrect API key sk-given-00001; Authorization: Bearer abcdefgh; basic dXNlcjpwdw==; "
        'api_key="zzz999"; x-api-key: qqqq1111, max_tokens: 4096, remembered sk-remembered-0001 at http://u:p@h/'
    )
    assert scrub_message(text, ["sk-given-00001"]) == (
        "Incorrect API key ***; Authorization: Bearer ***; basic ***; "
        'api_key="***"; x-api-key: ***, max_tokens: 4096, remembered *** at http://u:***@h/'
    )


def test_short_secrets_are_not_hunted_in_text() -> None:
    # "EMPTY" (lmms-eval's customary key), "test" (also MME's split name) cannot be told from words.
    assert scrub_message("the answer is Yes", ["Yes"]) == "the answer is Yes"
    assert scrub_message("split test, key EMPTY", ["test", "EMPTY"]) == "split test, key EMPTY"
    assert scrub_message("key secret", ["secret"]) == "key ***"  # 6 characters: searched for
    assert scrub_answer("EMPTY answer", ["EMPTY"]) == "EMPTY answer"
    assert scrub_answer("key sk-0123456789 here", ["sk-0123456789"]) == "key *** here"
    assert scrub_answer("Yes, the key: value", []) == "Yes, the key: value"  # no pattern guessing in answers


def test_dispatcher_scrubs_the_key_from_messages_and_answers() -> None:
    key = "sk-wire-unit-0123456789"

    async def behaviour(sample: str, n: int, request: web.Request) -> web.StreamResponse:
        got = request.headers["Authorization"]
        if sample == "err":
            return _json({"error": {"message": f"bad key {got}", "code": 400}}, 400)
        return _json(_answer(f"Yes. Key {got.removeprefix('Bearer ')}"))

    async def main() -> list[Any]:
        fake = FakeServer(behaviour)
        async with serve(fake) as (root, _):
            dispatcher = Dispatcher(endpoint(root, api_key=key), concurrency=1, retry=FAST)
            return await collect(dispatcher, [(s, body(s)) for s in ("err", "ans")])

    results = {r.sample_id: r for r in asyncio.run(asyncio.wait_for(main(), 60))}
    assert results["err"].server_message == "bad key Bearer ***"
    assert results["ans"].text == "Yes. Key ***"
    assert results["ans"].outcome is Outcome.OK


def test_error_line_is_scrubbed(capsys: pytest.CaptureFixture[str]) -> None:
    from vlmparity.cli import error_line

    remember("sk-line-0123456789")
    error_line("endpoint http://u:pw@h/v1 said: key sk-line-0123456789\nsecond line")
    err = capsys.readouterr().err
    assert err == "vlmparity: error: endpoint http://u:***@h/v1 said: key *** second line\n"


def test_endpoint_config_remembers_its_secrets() -> None:
    from vlmparity.config import parse_endpoints

    parse_endpoints(["a=http://u:url-pass-0001@h:1/v1?api_key=q-0000001"], api_key="sk-opt-000001")
    text = "x url-pass-0001 y q-0000001 z sk-opt-000001"
    assert scrub_message(text) == "x *** y *** z ***"


def test_mask_argv_masks_user_only_tokens_and_query_secrets() -> None:
    from vlmparity.config import mask_argv

    argv = ["run", "-e", "a=http://tok-00001@h/v1", "-e", "b=http://h/v1?api_key=k-000001"]
    assert mask_argv(argv) == ["run", "-e", "a=http://***@h/v1", "-e", "b=http://h/v1?api_key=***"]


def test_version_tuple_of_a_hostile_version_string() -> None:
    from vlmparity.backends import version_tuple as _version_tuple

    assert _version_tuple("0.10.1rc2") == (0, 10, 1)
    assert _version_tuple("9" * 5000) is None  # no int() of 5000 digits


# ----- probing ------------------------------------------------------------------------------------------


def test_probe_ignores_an_absurd_max_model_len() -> None:
    from badinput_support import FakeServer as ThreadServer
    from vlmparity.client import EndpointSpec, resolve_endpoint

    with ThreadServer("models_huge_len") as server:
        resolved = asyncio.run(resolve_endpoint(EndpointSpec(url=server.url), ready_timeout=10))
    assert (resolved.model, resolved.max_model_len) == ("fake-vlm", None)


def test_probe_refuses_an_oversized_reply(monkeypatch: pytest.MonkeyPatch) -> None:
    from badinput_support import FakeServer as ThreadServer
    from vlmparity.client import EndpointSpec, probe, resolve_endpoint
    from vlmparity.errors import EndpointError

    monkeypatch.setattr(probe, "PROBE_MAX_BYTES", 10)  # every reply of this server is longer
    with (
        ThreadServer("good") as server,
        pytest.raises(EndpointError, match=r"malformed reply: .*out of range 0\.\.10"),
    ):
        asyncio.run(resolve_endpoint(EndpointSpec(url=server.url, kind="vllm"), ready_timeout=10))


def test_an_unnamed_endpoint_is_named_without_its_credentials() -> None:
    from vlmparity.client import EndpointSpec

    assert EndpointSpec(url="http://user:pw-0001@h:8000/v1").display_name == "h:8000"
    assert EndpointSpec(url="http://tok-0001@h:8000/v1").display_name == "h:8000"
