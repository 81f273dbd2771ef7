"""The README's Quick start and `.ci/run` stay in step: two commands, and CI runs the second one."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _quick_start() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block, "the Quick start has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quick_start_is_two_commands_demo_then_tests() -> None:
    install_and_demo, install_and_test = _quick_start()
    assert install_and_demo.endswith("vlmparity demo")
    assert "pip install ." in install_and_demo
    assert install_and_test.endswith("python -m pytest")
    assert "'.[test]'" in install_and_test


def test_ci_runs_the_readme_test_command() -> None:
    _, install_and_test = _quick_start()
    # CI has already made and activated its fresh venv: it runs what follows the README's activation
    tail = install_and_test.split(". .venv/bin/activate && ", 1)[1]
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert tail in ci, f"{tail!r} is not a line of .ci/run"
