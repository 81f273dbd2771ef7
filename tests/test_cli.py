"""The command itself: version, help, usage errors."""

from __future__ import annotations

import subprocess
import sys

from vlmparity import __version__


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args], capture_output=True, text=True, timeout=60
    )


def test_version() -> None:
    out = run("--version")
    assert out.returncode == 0
    assert out.stdout.strip() == f"vlmparity {__version__}"


def test_unknown_command_is_a_usage_error() -> None:
    out = run("no-such-command")
    assert out.returncode == 4
    assert "Traceback" not in out.stderr
