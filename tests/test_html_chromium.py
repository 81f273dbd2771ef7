"""The HTML report in a real browser: Debian's headless Chromium driven over the DevTools protocol.

It renders, the disagreement table filters, hostile model output shows as text and runs nothing,
and the page fetches nothing. Needs `apt-get install -y chromium`; skipped without it unless CI=true.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from test_html_report import ALERT_IMG, ALERT_SCRIPT, XSS_IMG, XSS_SCRIPT, make_report_data
from vlmparity.report.html import write_report

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("true", "1", "yes")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--remote-debugging-port=0",
)
TIMEOUT = 60.0
# Set to a path to keep a full-page screenshot of the report (e.g. /tmp/vlmparity-report.png).
SCREENSHOT_ENV = "VLMPARITY_REPORT_SCREENSHOT"


@pytest.fixture(scope="module", autouse=True)
def _need_chromium() -> None:
    if CHROMIUM is None:
        if IN_CI:
            pytest.fail(
                "chromium is not installed (CI must run: apt-get install -y chromium chromium-driver)"
            )
        pytest.skip("chromium is not installed: apt-get install -y chromium (CI=true makes this a failure)")


class Page:
    """A minimal DevTools protocol client for one page target."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.dialogs: list[str] = []

    async def _receive(self) -> dict[str, Any]:
        msg: dict[str, Any] = await asyncio.wait_for(self.ws.receive_json(), TIMEOUT)
        if msg.get("method") == "Page.javascriptDialogOpening":
            # Record it and dismiss it, or the page would block every later command.
            self.dialogs.append(str(msg["params"].get("message")))
            self.next_id += 1
            await self.ws.send_json(
                {"id": self.next_id, "method": "Page.handleJavaScriptDialog", "params": {"accept": True}}
            )
        return msg

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        await self.ws.send_json({"id": mid, "method": method, "params": params})
        while True:
            msg = await self._receive()
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                result: dict[str, Any] = msg.get("result", {})
                return result
            if "method" in msg:
                self.events.append(msg)

    async def wait_event(self, method: str) -> dict[str, Any]:
        for ev in self.events:
            if ev["method"] == method:
                return ev
        while True:
            msg = await self._receive()
            if "method" in msg:
                self.events.append(msg)
                if msg["method"] == method:
                    return msg

    async def js(self, expression: str) -> Any:
        res = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in res:
            raise RuntimeError(f"JS error in {expression!r}: {res['exceptionDetails']}")
        return res["result"].get("value")


@contextlib.asynccontextmanager
async def chromium(profile: Path) -> AsyncIterator[Page]:
    """Start headless Chromium with a throwaway profile and yield a blank page; stop it afterwards."""
    assert CHROMIUM is not None
    proc = subprocess.Popen(
        [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: we stop exactly what we started
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + TIMEOUT
        while not (port_file.is_file() and port_file.read_text().strip()):
            if proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {proc.returncode} before opening DevTools")
            if time.monotonic() > deadline:
                raise RuntimeError("chromium did not open its DevTools port in time")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page_ws = next(t["webSocketDebuggerUrl"] for t in targets if t["type"] == "page")
            async with http.ws_connect(page_ws, max_msg_size=0) as ws:
                yield Page(ws)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


VISIBLE = (
    "Array.from(document.querySelectorAll('#dis-table tbody tr')).filter(r => r.offsetParent !== null).length"
)
COUNT = "document.getElementById('f-count').textContent"


def _select(element_id: str, value: str) -> str:
    return (
        f"(() => {{ const s = document.getElementById({json.dumps(element_id)}); s.value = {json.dumps(value)};"
        " s.dispatchEvent(new Event('change', {bubbles: true})); return s.value; })()"
    )


async def _type(page: Page, text: str) -> None:
    await page.js("(() => { const s = document.getElementById('f-search'); s.focus(); s.select(); })()")
    await page.call("Input.insertText", text=text)  # fires the input event a keystroke would


async def _exercise(report: Path, profile: Path, screenshot: Path) -> dict[str, Any]:
    """Open the report, drive the filters and collect what the assertions need."""
    out: dict[str, Any] = {}
    async with chromium(profile) as page:
        for domain in ("Page", "Runtime", "Network", "Log"):
            await page.call(f"{domain}.enable")
        await page.call(
            "Emulation.setDeviceMetricsOverride", width=1280, height=900, deviceScaleFactor=1, mobile=False
        )
        await page.call("Page.navigate", url=report.as_uri())
        await page.wait_event("Page.loadEventFired")
        # That event may be the initial about:blank's, still loading when Page.enable ran (a slow machine):
        # wait until the report itself is the loaded document.
        loaded = f"location.href === {json.dumps(report.as_uri())} && document.readyState === 'complete'"
        deadline = time.monotonic() + TIMEOUT
        while not await page.js(loaded):
            if time.monotonic() > deadline:
                raise RuntimeError("the report did not finish loading in time")
            await asyncio.sleep(0.05)

        out["title"] = await page.js("document.title")
        out["verdict"] = await page.js("document.getElementById('overall-verdict').textContent")
        out["svg_rendered"] = await page.js(
            "Array.from(document.querySelectorAll('svg.chart')).map(s => Math.round(s.getBoundingClientRect().width))"
        )
        out["thumbs_loaded"] = await page.js(
            "Array.from(document.querySelectorAll('.thumbs img')).map(i => i.naturalWidth)"
        )
        out["initial"] = (await page.js(VISIBLE), await page.js(COUNT))

        await _type(page, "window.__xss")
        out["search_xss"] = (await page.js(VISIBLE), await page.js(COUNT))
        await _type(page, "physics")
        out["search_physics"] = await page.js(VISIBLE)
        await _type(page, "no-such-text-anywhere")
        out["search_none"] = (await page.js(VISIBLE), await page.js(COUNT))
        await _type(page, "")
        await page.call("Input.dispatchKeyEvent", type="keyDown", key="Backspace", code="Backspace",
                        windowsVirtualKeyCode=8)  # fmt: skip
        await page.call("Input.dispatchKeyEvent", type="keyUp", key="Backspace", code="Backspace",
                        windowsVirtualKeyCode=8)  # fmt: skip
        out["search_cleared"] = await page.js(VISIBLE)

        await page.js(_select("f-task", "mmmu_val"))
        out["task_mmmu"] = await page.js(VISIBLE)
        out["groups_mmmu"] = await page.js(
            "Array.from(document.getElementById('f-group').options).map(o => o.value)"
        )
        await page.js(_select("f-group", "Physics"))
        out["group_physics"] = await page.js(VISIBLE)
        await page.js(_select("f-side", "candidate_only"))
        out["physics_candidate_right"] = (await page.js(VISIBLE), await page.js(COUNT))
        await page.js("document.getElementById('f-reset').click()")
        out["reset"] = await page.js(VISIBLE)
        await page.js(_select("f-side", "reference_only"))
        out["side_ref"] = await page.js(VISIBLE)
        out["side_counts"] = await page.js(
            "['reference_only','candidate_only','all_right','none_right']"
            ".map(k => document.getElementById('f-n-' + k).textContent)"
        )
        await page.js(_select("f-task", "mme"))
        out["mme_ref"] = await page.js(VISIBLE)
        await page.js("document.getElementById('f-reset').click()")

        # Hostile model output: shown as text, nothing injected, nothing run.
        out["xss"] = await page.js("typeof window.__xss")
        out["scripts"] = await page.js("document.scripts.length")
        out["img_x"] = await page.js("document.querySelectorAll('img[src=\"x\"]').length")
        out["raw_texts"] = await page.js(
            "Array.from(document.querySelectorAll('pre.raw')).map(p => p.textContent)"
        )
        await asyncio.sleep(0.3)  # an onerror handler would have fired by now
        out["xss_later"] = await page.js("typeof window.__xss")
        out["dialogs"] = list(page.dialogs)

        layout = await page.call("Page.getLayoutMetrics")
        size = layout["cssContentSize"]
        shot = await page.call(
            "Page.captureScreenshot",
            format="png",
            captureBeyondViewport=True,
            clip={"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 6000), "scale": 1},
        )
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        await page.js("1")  # flush pending events
        out["requests"] = [
            e["params"]["request"]["url"] for e in page.events if e["method"] == "Network.requestWillBeSent"
        ]
        out["exceptions"] = [e["params"] for e in page.events if e["method"] == "Runtime.exceptionThrown"]
        out["log_errors"] = [
            e["params"]["entry"]["text"]
            for e in page.events
            if e["method"] == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]
    return out


@pytest.fixture(scope="module")
def browsed(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    root = tmp_path_factory.mktemp("chromium")
    report = write_report(make_report_data(), root / "report.html")
    shot = Path(os.environ.get(SCREENSHOT_ENV) or root / "report.png")
    profile = root / "profile"
    profile.mkdir()
    return asyncio.run(_exercise(report, profile, shot)), shot


def test_renders(browsed: tuple[dict[str, Any], Path]) -> None:
    out, shot = browsed
    assert out["title"] == "vlmparity comparison — not equivalent"
    assert out["verdict"] == "not equivalent"
    assert len(out["svg_rendered"]) == 5 and min(out["svg_rendered"]) > 300
    assert out["thumbs_loaded"] == [160, 160, 160, 80, 80, 160]  # 640x480, 200x200, then 300x600 thumbnails
    assert out["exceptions"] == [] and out["log_errors"] == []
    with Image.open(io.BytesIO(shot.read_bytes())) as img:
        assert img.size[0] > 1200 and img.size[1] > 2000
        assert len(img.convert("RGB").getcolors(maxcolors=100000) or []) > 20  # not a blank page


def test_disagreement_table_filters(browsed: tuple[dict[str, Any], Path]) -> None:
    out, _ = browsed
    assert out["initial"] == (6, "6 of 6 shown")
    assert out["search_xss"] == (2, "2 of 6 shown")  # the two window.__xss payloads
    assert out["search_physics"] == 2
    assert out["search_none"] == (0, "0 of 6 shown")
    assert out["search_cleared"] == 6
    assert out["task_mmmu"] == 4
    assert out["groups_mmmu"] == ["", "Art", "Math", "Physics"]
    assert out["group_physics"] == 2
    assert out["physics_candidate_right"] == (1, "1 of 6 shown")  # the reference timed out there
    assert out["reset"] == 6
    assert out["side_ref"] == 2
    assert out["side_counts"] == ["2", "0", "0", "0"]
    assert out["mme_ref"] == 1


def test_hostile_answers_are_text_and_run_nothing(browsed: tuple[dict[str, Any], Path]) -> None:
    out, _ = browsed
    assert out["xss"] == "undefined" and out["xss_later"] == "undefined"
    assert out["dialogs"] == []
    assert out["scripts"] == 2
    assert out["img_x"] == 0
    raw = out["raw_texts"]
    assert XSS_SCRIPT in raw
    assert "Yes " + XSS_IMG in raw
    assert ALERT_SCRIPT + " B" in raw and ALERT_IMG + " C" in raw


def test_nothing_is_fetched(browsed: tuple[dict[str, Any], Path]) -> None:
    out, _ = browsed
    assert out["requests"], "the navigation itself should be recorded"
    assert all(u.startswith(("file:", "data:")) for u in out["requests"]), out["requests"]
