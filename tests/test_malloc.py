"""glibc malloc tuning: set where it applies, left alone where the user tunes it (the effect on peak RSS
is measured by bench/scale.py --two-speeds, not asserted here)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"


def _tune(env: dict[str, str]) -> str:
    code = "from vlmparity._malloc import tune_malloc; print(tune_malloc())"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_sets_the_mmap_threshold_on_glibc() -> None:
    assert _tune({}) == "True"


def test_leaves_malloc_alone_when_the_user_tunes_it() -> None:
    assert _tune({"MALLOC_ARENA_MAX": "2"}) == "False"


def test_the_cli_tunes_malloc_before_running_a_command(monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmparity import _malloc
    from vlmparity.cli import main

    calls: list[str] = []
    monkeypatch.setattr(_malloc, "tune_malloc", lambda: calls.append("tuned") or True)
    try:
        main(["--version"])
    except SystemExit as done:
        assert done.code in (0, None)
    assert calls == ["tuned"]
