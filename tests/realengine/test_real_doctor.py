"""`vlmparity doctor` against a real vLLM (CPU build) serving the tiny random LLaVA (build_tiny_llava.py).

CI starts the server with `.ci/real_vllm.sh up` (`--limit-mm-per-prompt '{"image": 1}'`) and exports
VLMPARITY_VLLM_URL; without it every test here is skipped. Expected values are vLLM's documented and measured
behaviour (../shared/research/real-vllm.md §B: the limit-1 400, greedy output identical across requests,
nested errors, 404 for an unknown model, 400 for an undecodable image, SSE ending with [DONE]).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from vlmparity.client import EndpointSpec
from vlmparity.doctor import DoctorReport, run_doctor

URL = os.environ.get("VLMPARITY_VLLM_URL", "").rstrip("/")
MODEL = os.environ.get("VLMPARITY_VLLM_MODEL", "tiny-llava")

pytestmark = [
    pytest.mark.realengine,
    pytest.mark.skipif(
        not URL, reason="needs a real vLLM: set VLMPARITY_VLLM_URL (.ci/real_vllm.sh up does)"
    ),
]


@pytest.fixture(scope="module")
def report() -> DoctorReport:
    return asyncio.run(run_doctor(EndpointSpec(url=URL, model=MODEL), timeout=60))


def test_doctor_reports_vllm_and_the_tiny_model(report: DoctorReport) -> None:
    assert report.exit_code == 0, [c for c in report.checks if c.mark != "ok"]
    assert report.kind == "vllm"
    assert report.model == MODEL and MODEL in (report.served_models or [])
    assert report.chat_url is not None and report.chat_url.endswith("/v1/chat/completions")


def test_doctor_reports_image_limit_one(report: DoctorReport) -> None:
    assert report.image_limit == 1
    assert report.images == {"1": "ok", "2": "unsupported"}
    images = report.check("images")
    assert images is not None and images.mark == "warn"
    assert "At most 1 image(s) may be provided in one prompt." in images.detail


def test_doctor_reports_greedy_determinism_and_nested_errors(report: DoctorReport) -> None:
    assert report.deterministic is True
    assert report.error_shape == "nested"
    assert report.errors["unknown_model"]["status"] == 404
    assert report.errors["corrupt_image"]["status"] == 400
    assert report.errors["corrupt_image"]["message"].startswith("Failed to load image")


def test_doctor_reports_streaming_and_usage(report: DoctorReport) -> None:
    assert report.streaming is True and report.stream_done is True
    assert report.usage_unary is True and report.usage_stream is True


def test_doctor_command_exit_code_and_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vlmparity", "doctor", URL, "--model", MODEL, "--timeout", "60"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
    lines = out.stdout.splitlines()
    assert any(line.startswith("✓ backend: vLLM ") for line in lines)
    assert any(line.startswith("! images per request: at most 1 image per request") for line in lines)
    assert any(line.startswith("✓ determinism: ") for line in lines)
