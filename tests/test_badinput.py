"""The bad-input corpus: every case of tests/badinput/cases.yaml, run as a user runs the CLI.

Each case builds one broken thing (a dataset, a server, a config file, a command line), runs
`python -m vlmparity ...` in a subprocess with a timeout, and checks: the exit code, exactly one clear
error line (or click's usage block / doctor's checklist, per the case's `expect`), no traceback anywhere,
and for server cases that every answer the server gave is in the run store — and that rerunning the same
command resumes without sending those again. See the header of cases.yaml for the fields.
"""

from __future__ import annotations

import contextlib
import os
import re
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from badinput_support import CORPUS, DATA, FakeServer, free_port

MANIFEST = yaml.safe_load((CORPUS / "cases.yaml").read_text(encoding="utf-8"))
BASES: dict[str, list[str]] = MANIFEST["bases"]
CASES: list[dict[str, Any]] = MANIFEST["cases"]
KINDS = {"data", "server", "probe", "sim", "config", "cli"}
EXPECTS = {"error", "usage", "checklist", "ok"}
# Cases against a live server take 1-6 s each (a run, then its resume); the rest well under a second.
SLOW_KINDS = {"server", "sim"}
ERROR_PREFIX = "vlmparity: error:"
COMMAND_TIMEOUT_S = 120
EXIT_INTERNAL = 70
# What must never reach the user: Python tracebacks, asyncio's reports of exceptions nobody awaited,
# aiohttp/httpx resources left open, Pillow's multi-line warnings (vlmparity says it in one line).
FORBIDDEN = (
    "Traceback (most recent call last)",
    "exception was never retrieved",
    "Exception ignored in",
    "Unclosed client session",
    "Unclosed connector",
    "internal error",
    "DecompressionBombWarning",
)


def _params() -> Iterator[Any]:
    for case in CASES:
        marks = []
        if case.get("slow") or case["kind"] in SLOW_KINDS:
            marks.append(pytest.mark.slow)
        if case.get("xfail"):
            marks.append(pytest.mark.xfail(reason=case["xfail"], strict=True))
        yield pytest.param(case, id=case["id"], marks=marks)


# ----- the manifest itself -------------------------------------------------------------------------------


def test_manifest_is_well_formed() -> None:
    ids = [c["id"] for c in CASES]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    assert len(CASES) >= 50
    for case in CASES:
        assert case["kind"] in KINDS, case["id"]
        assert case["expect"] in EXPECTS, case["id"]
        assert isinstance(case["exit"], int), case["id"]
        assert ("argv" in case) != ("base" in case), f"{case['id']}: give argv or base"
        if case["expect"] != "ok":
            assert case.get("message"), f"{case['id']}: a failing case names its message"
            assert case["exit"] in (3, 4), f"{case['id']}: errors exit 3 or 4 (README)"
        build = case.get("build", {})
        if "data" in build:
            assert build["data"] in DATA, case["id"]
        for name in case.get("setup", {}):
            assert name in DATA, case["id"]
        if "file" in build:
            assert (CORPUS / build["file"]).is_file(), case["id"]
        if "resume" in case or "store" in case:
            assert "server" in build or "sim" in build, f"{case['id']}: store checks need a server"
        assert all(len(s) >= 8 for s in case.get("secret", [])), f"{case['id']}: secrets are >= 8 chars"


def test_committed_images_are_what_they_claim() -> None:
    """The broken images: the bomb is small on disk but declares 20000x20000; the truncated ones open."""
    import io

    from PIL import Image

    images = CORPUS / "images"
    bomb = (images / "bomb_20000x20000.png").read_bytes()
    assert len(bomb) < 100_000
    assert bomb[16:24] == (20000).to_bytes(4, "big") * 2  # IHDR width, height
    assert (images / "zero_bytes.png").stat().st_size == 0
    for name in ("truncated_body.png", "truncated_body.jpg"):
        with Image.open(io.BytesIO((images / name).read_bytes())) as im:
            assert im.size == (96, 96)  # the header is intact ...
            with pytest.raises(OSError, match="truncated"):
                im.load()  # ... the pixels are not


# ----- running a case --------------------------------------------------------------------------------------


def _command(case: dict[str, Any]) -> list[str]:
    if "argv" in case:
        return list(case["argv"])
    base = list(BASES[case["base"]])
    args = list(case.get("args", []))
    replaced = {a for a in args if a.startswith("-")}
    out: list[str] = []
    skip = False
    for item in base:
        if skip:
            skip = False
            continue
        if item in replaced:
            skip = True  # every option of the bases takes a value
            continue
        out.append(item)
    return out + args


def _fill(text: str, values: dict[str, str], *, regex: bool = False) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", re.escape(value) if regex else value)
    return text


def _vlmparity(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *argv],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=COMMAND_TIMEOUT_S,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def _check_output(
    case: dict[str, Any], proc: subprocess.CompletedProcess[str], values: dict[str, str]
) -> None:
    """Exit code, the one clear line (or usage block / checklist), and nothing that looks like a crash."""
    both = proc.stdout + proc.stderr
    shown = f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n--- stderr\n{proc.stderr[-3000:]}"
    for marker in FORBIDDEN:
        assert marker not in both, f"{marker!r} in the output\n{shown}"
    assert proc.returncode != EXIT_INTERNAL, shown
    assert proc.returncode == case["exit"], shown
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(ERROR_PREFIX)]
    assert ERROR_PREFIX not in proc.stdout, shown
    message = re.compile(_fill(case.get("message", ""), values, regex=True))
    expect = case["expect"]
    if expect == "error":
        assert len(errors) == 1, shown
        assert lines[-1] == errors[0], f"the error line is not the last one\n{shown}"
        assert "\n" not in errors[0]
        assert message.search(errors[0]), f"{message.pattern!r} not in {errors[0]!r}"
    elif expect == "usage":
        assert not errors, shown
        assert any(line.startswith("Usage:") for line in lines), shown
        usage_errors = [line for line in lines if line.startswith("Error:")]
        assert len(usage_errors) == 1 and message.search(usage_errors[0]), shown
    elif expect == "checklist":
        assert not errors, shown
        assert any(message.search(line) for line in proc.stdout.splitlines()), shown
    else:
        assert not errors, shown
    if "note" in case:
        note = re.compile(_fill(case["note"], values, regex=True))
        notes = [line for line in lines if note.search(line)]
        assert len(notes) == 1, f"{note.pattern!r}: {len(notes)} matching line(s)\n{shown}"


def _check_no_secret(case: dict[str, Any], proc: subprocess.CompletedProcess[str], tmp: Path) -> None:
    """`secret`: values that must appear nowhere: stdout, stderr, nor any file the command wrote."""
    for secret in case.get("secret", []):
        assert secret not in proc.stdout and secret not in proc.stderr, f"{secret!r} printed"
        for path in tmp.rglob("*"):
            if path.is_file():
                assert secret.encode() not in path.read_bytes(), f"{secret!r} written to {path}"


def _store_rows(out: Path) -> list[tuple[str, str, str, str | None, int]]:
    db = out / "vlmparity.sqlite"
    if not db.exists():
        return []
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as con:
        try:
            return con.execute(
                "SELECT sample_id, request_hash, outcome, text, transient FROM results ORDER BY sample_id"
            ).fetchall()
        except sqlite3.OperationalError:  # a damaged store the case was about (no results table)
            return []


def _check_store(rows: list[tuple[str, str, str, str | None, int]], expected: dict[str, int]) -> None:
    counts = Counter(outcome for _, _, outcome, _, _ in rows)
    assert dict(counts) == expected, f"outcomes in the store: {dict(counts)}, expected {expected}"


def _check_answered_stored(server: FakeServer, rows: list[tuple[str, str, str, str | None, int]]) -> None:
    """Every answer the server gave is in the store as `ok`: nothing acknowledged was lost."""
    stored_ok = {h for _, h, outcome, text, _ in rows if outcome == "ok" and text}
    missing = [h[:12] for h in server.answered if h not in stored_ok]
    assert not missing, f"answered but not stored ok: {missing}; store: {[r[:1] + r[2:3] for r in rows]}"


@contextlib.contextmanager
def _server(build: dict[str, Any], values: dict[str, str]) -> Iterator[Any]:
    if "server" in build:
        spec = build["server"]
        with FakeServer(spec["mode"], good=spec.get("good", 3)) as fake:
            values.update(url=fake.url, root=fake.root, port=str(fake.port))
            yield fake
    elif "sim" in build:
        from vlmparity.sim import SimConfig, SimServer

        settings = {"data": [values["data"]], **build["sim"]}
        with SimServer(SimConfig.model_validate(settings)) as sim:
            values.update(url=sim.base_url, root=sim.url, port=str(sim.port))
            yield sim
    else:
        yield None


@pytest.mark.parametrize("case", list(_params()))
def test_case(case: dict[str, Any], tmp_path: Path) -> None:
    build = case.get("build", {})
    dead = free_port()
    values = {
        "tmp": str(tmp_path),
        "out": str(tmp_path / "out"),
        "dead": f"http://127.0.0.1:{dead}/v1",
        "deadport": str(dead),
        "corpus": str(CORPUS),
    }
    if "data" in build:
        values["data"] = str(DATA[build["data"]](tmp_path / "data"))
    if "file" in build:
        values["file"] = str(CORPUS / build["file"])
    for name, where in case.get("setup", {}).items():
        DATA[name](Path(_fill(where, values)))
    env = {
        **os.environ,
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "PYTHONIOENCODING": "utf-8",
        **case.get("env", {}),
    }
    env.pop("VLMPARITY_DEBUG", None)
    with _server(build, values) as server:
        argv = [_fill(a, values) for a in _command(case)]
        proc = _vlmparity(argv, env)
        _check_output(case, proc, values)
        _check_no_secret(case, proc, tmp_path)
        out = Path(values["out"])
        rows = _store_rows(out)
        if isinstance(server, FakeServer):
            _check_answered_stored(server, rows)
        if "store" in case:
            _check_store(rows, case["store"])
        if "resume" in case:
            assert isinstance(server, FakeServer), "resume needs a FakeServer"
            done = {h for _, h, outcome, _, _ in rows if outcome == "ok"}
            retry = {h for _, h, outcome, _, transient in rows if transient}
            server.mode = "good"
            server.hashes.clear()
            again = _vlmparity(argv, env)
            resume = case["resume"]
            _check_output({**case, "exit": resume.get("exit", 0)}, again, values)
            _check_no_secret(case, again, tmp_path)
            resent = set(server.hashes)
            assert not resent & done, "the rerun sent again samples whose answer was stored"
            if resume.get("exit", 0) == 0:
                # exactly the transient failures (and nothing stored for good) are sent again
                assert resent == retry, f"resent {len(resent)}, transient failures {len(retry)}"
            rows = _store_rows(out)
            _check_answered_stored(server, rows)
            _check_store(rows, resume["store"])
