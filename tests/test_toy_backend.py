"""Issue 13 acceptance: a backend kind defined in this file alone is detected and used by `doctor` and `run`.

The toy kind has its own health path (`/toy/healthz`), its own version route (`/toy/about`), its own error
body (`{"fault": {"text": ...}}`) and its own wording of an image limit ("toy takes at most N picture(s) per
request", raised with `--max-pictures N`). It is registered in-process with `register_backend`; nothing
outside this file knows it. A fake server on 127.0.0.1 speaks that dialect: only its own health path, errors
only in its own shape, chat completions that refuse more than `PICTURE_LIMIT` images, an unknown model and an
unreadable picture. Every expected value below is what the fake server was told to do.
"""

from __future__ import annotations

import base64
import io
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from vlmparity.backends import (
    BackendProfile,
    ErrorShape,
    ProbeSession,
    openai_like,
    register_backend,
    unregister_backend,
)
from vlmparity.cli import main
from vlmparity.store import Store

KIND = "toy"
TITLE = "Toy Server"
HEALTH = "/toy/healthz"
BUILD = "toy-build-42"
MODEL = "toy-vision-1"
ANSWER = "A"
PICTURE_LIMIT = 1
LIMIT_TEXT = f"toy takes at most {PICTURE_LIMIT} picture(s) per request"
UNREADABLE_TEXT = "toy cannot read that picture"
READY_TEXT = "/toy/healthz answered 200"
MMMU_QUESTIONS = 60  # the conftest's small synthetic MMMU split (SYNTH_SMALL_MMMU)


# ----------------------------------------------------------------------------------- the toy's profile


def _fault_text(doc: Any) -> str | None:
    fault = doc.get("fault") if isinstance(doc, dict) else None
    text = fault.get("text") if isinstance(fault, dict) else None
    return text if isinstance(text, str) else None


async def _identify(session: ProbeSession) -> bool:
    reply = await session.get(HEALTH)
    doc = reply.json()
    return reply.status == 200 and isinstance(doc, dict) and doc.get("toy") is True


async def _version(session: ProbeSession) -> str | None:
    doc = (await session.request("GET", "/toy/about")).json()
    build = doc.get("build") if isinstance(doc, dict) else None
    return build if isinstance(build, str) else None


FAULT = ErrorShape(
    name="fault",
    text='{"fault": {"text"}} (toy)',
    order=50,
    matches=lambda doc: isinstance(doc, dict) and isinstance(doc.get("fault"), dict),
    message=_fault_text,
)

TOY = BackendProfile(
    kind=KIND,
    title=TITLE,
    resolve=openai_like(KIND, health=HEALTH, listing=("/v1",), chat=("/v1",), version=_version),
    identify=_identify,
    detect_order=50,
    version=_version,
    ready_text=READY_TEXT,
    error_shapes=(FAULT,),
    image_limit_patterns=(re.compile(r"toy takes at most (\d+) picture\(s\) per request"),),
    image_limit_option="--max-pictures {n}",
)


@pytest.fixture
def toy_kind() -> Iterator[BackendProfile]:
    register_backend(TOY)
    try:
        yield TOY
    finally:
        unregister_backend(KIND)


# ----------------------------------------------------------------------------------- the fake server


@dataclass
class Seen:
    """What the fake server was asked: every GET path, and the question text of every chat it refused or
    answered."""

    gets: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    answered: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _readable(url: str) -> bool:
    try:
        with Image.open(io.BytesIO(base64.b64decode(url.split("base64,", 1)[1]))) as img:
            img.load()
    except Exception:
        return False
    return True


class ToyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    seen: Seen

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _fault(self, status: int, text: str) -> None:
        self._send(status, {"fault": {"text": text}})

    def do_GET(self) -> None:
        with self.seen.lock:
            self.seen.gets.append(self.path)
        if self.path == HEALTH:
            self._send(200, {"toy": True})
        elif self.path == "/toy/about":
            self._send(200, {"build": BUILD})
        elif self.path == "/v1/models":
            self._send(200, {"object": "list", "data": [{"id": MODEL, "object": "model"}]})
        else:
            self._fault(404, f"toy has no {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path != "/v1/chat/completions":
            self._fault(404, f"toy has no {self.path}")
            return
        if not body.get("messages"):
            self._fault(400, "toy needs messages")
            return
        if body.get("model") != MODEL:
            self._fault(404, f"toy serves no model {body.get('model')!r}")
            return
        parts = [p for m in body["messages"] if isinstance(m["content"], list) for p in m["content"]]
        images = [p["image_url"]["url"] for p in parts if p.get("type") == "image_url"]
        text = " ".join(p["text"] for p in parts if p.get("type") == "text")
        if len(images) > PICTURE_LIMIT:
            with self.seen.lock:
                self.seen.refused.append(text)
            self._fault(400, LIMIT_TEXT)
            return
        if not all(_readable(u) for u in images):
            self._fault(400, UNREADABLE_TEXT)
            return
        with self.seen.lock:
            self.seen.answered.append(text)
        self._send(
            200,
            {
                "id": "toy-1",
                "object": "chat.completion",
                "model": MODEL,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": ANSWER}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
            },
        )


@pytest.fixture
def toy_server() -> Iterator[tuple[str, Seen]]:
    seen = Seen()
    handler = type("Handler", (ToyHandler,), {"seen": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    capsys.readouterr()
    code: int | str | None = 0
    try:
        main(list(args))
    except SystemExit as exc:
        code = exc.code
    out = capsys.readouterr()
    assert "Traceback" not in out.err, out.err
    return (code if isinstance(code, int) else 0), out.out


# ----------------------------------------------------------------------------------- the tests


def test_doctor_detects_the_toy_kind_and_reads_its_errors(
    toy_kind: BackendProfile, toy_server: tuple[str, Seen], capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = toy_server
    code, out = _cli(capsys, "doctor", url + "/v1", "--json")
    doc = json.loads(out)
    checks = {c["id"]: c for c in doc["checks"]}
    assert code == 0 and doc["evaluable"] is True, doc["checks"]
    assert doc["kind"] == KIND and doc["server_version"] == BUILD  # detected, not named
    assert HEALTH in seen.gets and "/health" not in seen.gets  # readiness asked on the toy's own path
    assert checks["backend"]["mark"] == "ok" and checks["backend"]["detail"].startswith(f"{TITLE} {BUILD}")
    assert checks["ready"]["detail"] == READY_TEXT
    assert doc["model"] == MODEL and doc["chat_url"] == url + "/v1/chat/completions"
    # the refusals' messages are read out of the toy's own error shape
    unknown = doc["errors"]["unknown_model"]
    assert (unknown["status"], unknown["shape"]) == (404, "fault")
    assert unknown["message"] == "toy serves no model 'vlmparity-doctor-no-such-model'"
    corrupt = doc["errors"]["corrupt_image"]
    assert (corrupt["status"], corrupt["shape"], corrupt["message"]) == (400, "fault", UNREADABLE_TEXT)
    assert doc["error_shape"] == "fault" and checks["errors"]["mark"] == "ok"
    # the toy's image-limit wording gives the limit, and the toy's own option is advised
    assert doc["image_limit"] == PICTURE_LIMIT and doc["images"]["2"] == "unsupported"
    assert LIMIT_TEXT in checks["images"]["detail"]
    assert checks["images"]["fix"].startswith(f"restart {TITLE} with --max-pictures ")

    code, text = _cli(capsys, "doctor", url + "/v1")  # the checklist shows the extracted message
    assert code == 0
    errors = next(line for line in text.splitlines() if line.startswith("✓ errors: "))
    assert "unknown model → 404 \"toy serves no model 'vlmparity-doctor-no-such-model'\"" in errors
    assert '"text": ' not in errors  # the message, not the raw body


def test_doctor_with_kind_toy_named(
    toy_kind: BackendProfile, toy_server: tuple[str, Seen], capsys: pytest.CaptureFixture[str]
) -> None:
    url, seen = toy_server
    code, out = _cli(capsys, "doctor", url, "--kind", KIND, "--json")
    doc = json.loads(out)
    assert code == 0 and doc["kind"] == KIND
    assert "/v2/health/ready" not in seen.gets and "/version" not in seen.gets  # named: nothing detected


def test_run_uses_the_toy_kind_and_stores_its_messages(
    toy_kind: BackendProfile,
    toy_server: tuple[str, Seen],
    synth_mmmu_small: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, seen = toy_server
    out = tmp_path / "out"
    code, _ = _cli(
        capsys,
        "run", "-e", f"t={url}/v1", "--kind", KIND, "--tasks", "mmmu_val",
        "--data", f"mmmu_val={synth_mmmu_small}", "-o", str(out),
    )  # fmt: skip
    assert code == 0  # refusals are outcomes of a completed run
    assert HEALTH in seen.gets
    refused_questions = set(seen.refused)
    assert refused_questions, "the small MMMU split has questions with several images"
    with Store.open(out, create=False) as st:
        run = st.get_run("t")
        assert run is not None
        assert (run.kind, run.server_version, run.model) == (KIND, BUILD, MODEL)
        results = st.results(run.run_id)
    assert len(results) == MMMU_QUESTIONS
    refused = [r for r in results.values() if r.outcome != "ok"]
    answered = [r for r in results.values() if r.outcome == "ok"]
    assert len(refused) == len(refused_questions)
    # the toy's wording is read as an image limit; its message is stored as the server said it
    assert {(r.outcome, r.status, r.server_message) for r in refused} == {("unsupported", 400, LIMIT_TEXT)}
    assert {r.text for r in answered} == {ANSWER}
    assert len(answered) == MMMU_QUESTIONS - len(refused_questions)


def test_an_unregistered_kind_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _ = _cli(capsys, "doctor", "http://127.0.0.1:9/v1", "--kind", KIND)
    assert code == 4


def test_the_registry_takes_the_toy_kind_and_gives_it_back(toy_kind: BackendProfile) -> None:
    from vlmparity.backends import backend_kinds, get_backend
    from vlmparity.config import parse_endpoints

    assert backend_kinds() == ("vllm", "ovms", "sglang", "openai", KIND)  # built-ins first, then added
    assert get_backend(KIND) is TOY
    (ep,) = parse_endpoints(["t=http://127.0.0.1:9/v1"], kinds=[KIND])
    assert ep.kind == KIND
    register_backend(TOY)  # the same profile again: no-op
    with pytest.raises(ValueError, match="already registered"):
        register_backend(BackendProfile(kind="vllm", title="another", resolve=TOY.resolve))
    with pytest.raises(ValueError, match="lower-case identifier"):
        register_backend(BackendProfile(kind="auto", title="detect", resolve=TOY.resolve))


def test_without_the_toy_kind_config_refuses_it() -> None:
    from vlmparity.config import parse_endpoints
    from vlmparity.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        parse_endpoints(["t=http://127.0.0.1:9/v1"], kinds=[KIND])
    assert err.value.one_line() == (
        "unknown --kind 'toy' for 't' (choose one of auto, vllm, ovms, sglang, openai)"
    )
