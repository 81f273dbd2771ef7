"""Without ../shared/oracles (a user's fresh clone) the oracle tests skip with one line; CI makes that a failure.

Runs pytest in a subprocess on two oracle-reading files with VLMPARITY_ORACLES pointing at a folder that
does not exist, as in a clone with nothing beside it. The real fresh-clone check (a `git clone` into an
empty folder) is .ci/fresh_clone_oracles.sh, which .ci/run calls and the slow test below runs.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FILES = ["tests/test_offline.py", "tests/test_mmmu_official.py"]


def pytest_without_oracles(
    tmp_path: Path, *args: str, require: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "VLMPARITY_REQUIRE_ORACLES"}
    env["VLMPARITY_ORACLES"] = str(tmp_path / "nothing-here")
    if require:
        env["VLMPARITY_REQUIRE_ORACLES"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-rs", *args, *FILES],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def summary(stdout: str) -> dict[str, int]:
    last = [line for line in stdout.splitlines() if line.strip()][-1]
    return {word: int(n) for n, word in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", last)}


def test_oracle_tests_skip_with_one_line_reason_when_absent(tmp_path: Path) -> None:
    proc = pytest_without_oracles(tmp_path, "-m", "oracles")
    assert proc.returncode == 0, proc.stdout[-3000:]
    counts = summary(proc.stdout)
    # test_offline: 2 parametrized predictions + responses + 3 MME folders + 3 CLI = 9; official parser: 2
    assert counts.get("skipped") == 11, proc.stdout[-3000:]
    assert set(counts) <= {"skipped", "deselected"}
    reasons = [line for line in proc.stdout.splitlines() if line.startswith("SKIPPED")]
    assert reasons and all(
        "oracles: no official MME/MMMU files at " + str(tmp_path / "nothing-here") in r for r in reasons
    )


def test_the_other_tests_of_those_files_still_run(tmp_path: Path) -> None:
    proc = pytest_without_oracles(
        tmp_path, "-m", "not oracles and not slow", "-k", "cli_errors or official_parse"
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    counts = summary(proc.stdout)
    assert counts.get("passed", 0) >= 2 and "skipped" not in counts


def test_ci_setting_turns_the_skip_into_a_failure(tmp_path: Path) -> None:
    proc = pytest_without_oracles(tmp_path, "-m", "oracles", "-k", "llava_13b", require=True)
    assert proc.returncode == 1, proc.stdout[-3000:]
    counts = summary(proc.stdout)
    assert counts.get("errors", counts.get("error")) == 2 and "skipped" not in counts
    assert "VLMPARITY_REQUIRE_ORACLES=1 makes this a failure" in proc.stdout


def test_ci_requires_the_oracles_and_checks_a_fresh_clone() -> None:
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    readme_line = next(i for i, line in enumerate(ci) if line.endswith("python -m pytest"))
    require = ci.index("export VLMPARITY_REQUIRE_ORACLES=1  # an oracle test that cannot find ../shared/oracles "
                       "fails instead of skipping")  # fmt: skip
    fresh = ci.index("bash .ci/fresh_clone_oracles.sh python")
    assert require < readme_line < fresh


@pytest.mark.slow
def test_fresh_clone_script(tmp_path: Path) -> None:
    """.ci/fresh_clone_oracles.sh on this checkout's committed state: every oracle test skips, exit 0."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the fresh-clone check clones the committed state")
    proc = subprocess.run(
        ["bash", str(REPO / ".ci" / "fresh_clone_oracles.sh"), sys.executable],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    m = re.search(
        r"\[fresh-clone\] oracle tests: (\d+) selected, (\d+) skipped, 0 failed or errored \(ok\)",
        proc.stdout,
    )
    assert m and int(m.group(1)) == int(m.group(2)) > 0, proc.stdout[-3000:]
