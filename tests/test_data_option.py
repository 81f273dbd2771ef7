"""`--data` (issue 12 item 6): a path that is not there fails at once without contacting the Hugging Face
Hub; an unreachable Hub is one line after a single attempt, not a page of retries; an unknown task key
names the known tasks. CLI subprocesses; the "Hub" is a loopback listener (HF_ENDPOINT)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_support import HubListener, closed_port_url
from vlmparity.data.sources import looks_like_path


@pytest.fixture
def hub() -> Iterator[HubListener]:
    listener = HubListener()
    yield listener
    listener.close()


def vlmparity(*args: str, cwd: Path, hub_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_ENDPOINT": hub_url, "HF_HOME": str(cwd / ".hf-home")}
    env.pop("HF_HUB_OFFLINE", None)
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env=env,
    )


DEAD_ENDPOINT = "a=http://127.0.0.1:9/v1"  # never reached: the data is checked first


@pytest.mark.parametrize("given", ["./nope", "data/nope", "data/mme/nope/", "~/vlmparity-no-such-dir", "ABS"])
def test_a_missing_path_fails_at_once_without_the_hub(tmp_path: Path, hub: HubListener, given: str) -> None:
    (tmp_path / "data").mkdir()  # 'data/nope': its first folder exists, so it is a path, not owner/name
    if given == "ABS":
        given = str(tmp_path / "gone")
    out = vlmparity(
        "run", "-e", DEAD_ENDPOINT, "--tasks", "mme", "--data", f"mme={given}", "-o", "o", cwd=tmp_path,
        hub_url=hub.url,
    )  # fmt: skip
    assert out.returncode == 3
    assert out.stderr.splitlines() == [
        f"vlmparity: error: dataset folder {given!r} does not exist (pass a folder of parquet files, a "
        "parquet file or a Hugging Face dataset id (owner/name))"
    ]
    assert hub.connections == 0


@pytest.mark.parametrize("where", ["listener", "closed"])
def test_an_unreachable_hub_is_one_line_after_one_attempt(
    tmp_path: Path, hub: HubListener, where: str
) -> None:
    """The default data (lmms-eval's hub id) with no Hub: a single probe, then the local cache only."""
    url = hub.url if where == "listener" else closed_port_url()
    out = vlmparity("run", "-e", DEAD_ENDPOINT, "--tasks", "mme", "-o", "o", cwd=tmp_path, hub_url=url)
    assert out.returncode == 3
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(
        f"vlmparity: error: dataset 'lmms-lab-encoder/MME' is not cached and the Hugging Face Hub ({url}) "
        "cannot be reached"
    )
    assert "then pass --data mme=DIR" in lines[0]
    if where == "listener":
        assert hub.connections == 1  # one attempt, no retry loop


def test_an_unknown_task_key_names_the_known_tasks(tmp_path: Path, hub: HubListener) -> None:
    for tasks in ("mmmu_val", "mme,mmmu_val"):
        out = vlmparity(
            "run", "-e", DEAD_ENDPOINT, "--tasks", tasks, "--data", f"mmmu={tmp_path}", "-o", "o", cwd=tmp_path,
            hub_url=hub.url,
        )  # fmt: skip
        assert out.returncode == 4
        assert out.stderr.splitlines() == [
            f"vlmparity: error: --data 'mmmu={tmp_path}': unknown task 'mmmu' "
            "(known tasks: mme, mmmu_val (--data TASK=SOURCE))"
        ]
    # compare and report read --data the same way
    out = vlmparity("report", str(tmp_path), "--data", "mmmu=x", cwd=tmp_path, hub_url=hub.url)
    assert out.returncode == 4 and "unknown task 'mmmu'" in out.stderr
    assert hub.connections == 0


def test_what_looks_like_a_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "here").mkdir()
    paths = ["/x/y", "./x", "../x", "~/x", "x\\y", "a/b/c", "a/b/", "x.parquet", "data/mme", "here"]
    hub_ids = ["lmms-lab/MME", "lmms-lab-encoder/MMMU", "someone/data.set"]
    assert [p for p in paths if not looks_like_path(p)] == []
    assert [h for h in hub_ids if looks_like_path(h)] == []
