"""The command itself: version, help, usage errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_typer_exit_code_is_kept() -> None:
    # `vlmparity tasks --help` exits 0; a command raising typer.Exit(3) must exit 3, which click's
    # non-standalone mode would otherwise turn into a return value and lose.
    import typer

    from vlmparity.cli import app, main

    @app.command("_exit3", hidden=True)
    def _exit3() -> None:
        raise typer.Exit(3)

    try:
        main(["_exit3"])
    except SystemExit as exc:
        assert exc.code == 3
    else:
        raise AssertionError("main() did not exit with the command's code")
    finally:
        app.registered_commands[:] = [c for c in app.registered_commands if c.name != "_exit3"]


def test_ctrl_c_while_importing_the_cli_is_one_line() -> None:
    # A KeyboardInterrupt raised inside the import of the CLI (where a real Ctrl-C lands most of the
    # time before main() runs) is reported like any interruption, not as a traceback.
    code = (
        "import builtins, sys\n"
        "real = builtins.__import__\n"
        "def interrupting(name, *a, **k):\n"
        "    if name == 'typer':\n"
        "        raise KeyboardInterrupt\n"
        "    return real(name, *a, **k)\n"
        "builtins.__import__ = interrupting\n"
        "sys.argv = ['vlmparity', '--version']\n"
        "import runpy\n"
        "runpy.run_module('vlmparity', run_name='__main__')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 130, out.stderr
    assert out.stderr.strip() == "vlmparity: interrupted while starting; nothing was done"


def test_console_script_uses_the_light_entry_point() -> None:
    from importlib.metadata import entry_points

    (script,) = [e for e in entry_points(group="console_scripts") if e.name == "vlmparity"]
    assert script.value == "vlmparity._entry:main"


def test_no_help_shows_a_type_after_a_flag() -> None:
    """Every command's help (every sub-command's too): flags show no `<bool>`, lists their element type.

    The flags are found from the commands' own declarations, independently of the help text."""
    import os
    from typing import Any

    import typer

    from vlmparity.cli import app

    def commands(group: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        out = [(path, group)]
        for name, sub in (getattr(group, "commands", None) or {}).items():  # Typer's own click classes
            out += commands(sub, (*path, name))
        return out

    root = typer.main.get_command(app)
    checked = 0
    for path, command in commands(root, ()):
        out = subprocess.run(
            [sys.executable, "-m", "vlmparity", *path, "--help"],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "250"},
        )
        assert out.returncode == 0, (path, out.stderr)
        assert "<bool>" not in out.stdout and "<list[" not in out.stdout, path
        for param in command.params:
            if getattr(param, "is_flag", False) and not getattr(param, "hidden", False):
                line = next(x for x in out.stdout.splitlines() if f" {param.opts[0]} " in x)
                assert "<" not in line.split(param.opts[0], 1)[1].split("  ", 2)[1], line
                checked += 1
    assert checked >= 10  # --help of each command, --stream, --log-samples, --rerun-errors, --json, ...


def test_tasks_lists_every_metric_results_and_verdicts_hold(
    tmp_path: Path, synth_mme_small: Path, synth_mmmu_small: Path
) -> None:
    """Every metric of a run's results.json and of compare's verdict JSON is in `vlmparity tasks`'s row
    for its task (the metric names are read from those files, not from the task classes)."""
    import json
    import re

    from vlmparity.sim import SimConfig, SimServer

    instant = {"capacity": 16, "base_latency": 0.0, "per_image": 0.0, "per_token": 0.0, "time_scale": 0}
    data = [synth_mme_small, synth_mmmu_small]
    with (
        SimServer(SimConfig(personality="vllm", data=data, load=instant, image_limit=None)) as a,
        SimServer(SimConfig(personality="ovms", data=data, load=instant)) as b,
    ):
        out = run(
            "compare", "-e", f"a={a.url}", "-e", f"b={b.url}", "--tasks", "mme,mmmu_val",
            "--data", f"mme={synth_mme_small}", "--data", f"mmmu_val={synth_mmmu_small}",
            "-o", str(tmp_path / "o"), "--no-report", "--json", str(tmp_path / "verdict.json"),
        )  # fmt: skip
    assert out.returncode in (0, 1, 2), out.stderr
    wanted: dict[str, set[str]] = {"mme": set(), "mmmu_val": set()}
    (results,) = (tmp_path / "o" / "a").glob("*_results.json")
    for task, values in json.loads(results.read_text())["results"].items():
        for key, value in values.items():
            metric = key.split(",")[0]
            if "," in key and "_stderr" not in metric and not isinstance(value, list):  # lists: artifacts
                wanted[task].add(metric)
    verdict = (tmp_path / "verdict.json").read_text()
    for task in wanted:
        for metric in re.findall(rf'"metric": "({task.split("_")[0]}_\w+)"', verdict):
            wanted[task].add(metric)
    assert "mme_acc" in wanted["mme"] and "mme_perception_score" in wanted["mme"]
    assert "mmmu_acc" in wanted["mmmu_val"]
    listed = run("tasks")
    assert listed.returncode == 0
    rows = {line.split("|")[1].strip(): line for line in listed.stdout.splitlines() if line.startswith("|mm")}
    for task, metrics in wanted.items():
        missing = [m for m in sorted(metrics) if not re.search(rf"\b{m}\b", rows[task])]
        assert missing == [], (task, rows[task])
