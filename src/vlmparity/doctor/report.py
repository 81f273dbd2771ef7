"""Doctor's findings: the checklist lines (`Check`, `Mark`), the report (`DoctorReport`, its `--json`
document) and the pure judgements the checks are drawn from (error shapes, determinism, seed)."""

from __future__ import annotations

import base64
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from vlmparity.backends import error_shapes
from vlmparity.masking import scrub_obj

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
        doc = asdict(self)
        doc["checks"] = [{**asdict(c), "mark": c.mark.value} for c in self.checks]
        out = {"url": self.url, "evaluable": self.evaluable, "exit_code": self.exit_code, **doc}
        return scrub_obj(out)  # type: ignore[no-any-return]


# ---------------------------------------------------------------------------------------- small helpers


def quote(text: str | None) -> str:
    """A server's text as quoted in a checklist line: one line, at most MESSAGE_CHARS."""
    text = " ".join((text or "").split())
    return repr(text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…")


def ms(seconds: float) -> str:
    """Seconds as whole milliseconds."""
    return f"{seconds * 1000:.0f} ms"


def corrupt_image_url() -> str:
    """Valid base64 of bytes that start like a PNG but are not an image."""
    return "data:image/png;base64," + base64.b64encode(b"\x89PNG\r\n\x1a\nnot really a png").decode("ascii")


def error_shape(doc: Any) -> str:
    """The name of an error body's shape, from the registered backend profiles: nested (vLLM >= 0.10.1,
    OpenAI), flat (vLLM < 0.10.1), flat-string (OVMS), detail (FastAPI); `other`, or `none` without a body."""
    if not isinstance(doc, dict):
        return "none" if doc is None else "other"
    return next((s.name for s in error_shapes() if s.matches(doc)), "other")


def shape_text(name: str) -> str:
    """How the checklist describes an error shape."""
    known = {s.name: s.text for s in error_shapes()}
    known.update({"other": "an unrecognised JSON body", "none": "no JSON body"})
    return known.get(name, name)


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
