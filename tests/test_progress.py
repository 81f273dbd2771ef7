"""The run's progress sinks draw what the engine counts (runner.Counters), line by line or as a bar."""

from __future__ import annotations

import pytest

from vlmparity.cli.run import PlainProgress, RichProgress
from vlmparity.runner import Counters, NullProgress, ProgressSink


def test_plain_progress_ends_with_the_last_counters(capsys: pytest.CaptureFixture[str]) -> None:
    with PlainProgress() as sink:
        sink.begin("vllm", 12)
        sink.update("vllm", Counters(done=2, errors=0, in_flight=4, concurrency=4))
        sink.update("vllm", Counters(done=9, errors=2, in_flight=1, concurrency=8, connection_failures=3))
        sink.end("vllm")
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "vllm: sending 12 request(s)",
        "vllm: 9/12 done, 2 error(s), 3 connection failure(s)",
    ]


def test_rich_progress_shows_in_flight_limit_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with RichProgress() as sink:
        sink.begin("ovms", 10)
        sink.update("ovms", Counters(done=5, errors=1, in_flight=3, concurrency=6))
        sink.update("unknown endpoint", Counters(done=1, errors=0, in_flight=0, concurrency=1))  # ignored
        sink.end("ovms")
    err = capsys.readouterr().err
    assert "in flight 3/6" in err and "1 error(s)" in err and "unknown endpoint" not in err


def test_every_sink_is_a_progress_sink() -> None:
    sinks: list[ProgressSink] = [NullProgress(), PlainProgress(), RichProgress()]
    for sink in sinks:
        sink.update("x", Counters(done=0, errors=0, in_flight=0, concurrency=0))
