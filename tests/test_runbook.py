"""Every `vlmparity` command line in the runbook (docs/ovms-vs-vllm.md) is accepted by the CLI.

Each command line of the runbook's code blocks is checked without a real engine:
- its command path (`launch vllm`, `compare`, ...) answers `--help` with exit 0;
- every long option the line uses appears in that help text (values are skipped, so
  `--extra-arg --verbose_response` checks `--extra-arg` only);
- `launch vllm|ovms` lines are run whole with `--dry-run` appended.

So the runbook cannot drift from the CLI (issue 6, acceptance).
"""

from __future__ import annotations

import functools
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
RUNBOOK = REPO / "docs" / "ovms-vs-vllm.md"

_FENCE = re.compile(r"^(?P<indent>[ \t]*)```[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# Wide and plain help output: rich would otherwise cut long option names in narrow terminals.
_HELP_ENV = {**os.environ, "COLUMNS": "400", "NO_COLOR": "1", "TERM": "dumb"}


def code_blocks(markdown: str) -> list[str]:
    """The bodies of the fenced code blocks, dedented (blocks inside list items are indented)."""
    return [textwrap.dedent(m.group("body")) for m in _FENCE.finditer(markdown)]


def command_lines(block: str) -> list[str]:
    """Shell lines of a block whose first word is `vlmparity`, with backslash continuations joined."""
    joined = re.sub(r"[ \t]*\\\n[ \t]*", " ", block)
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line.startswith("$ "):
            line = line[2:]
        if line.split(" ", 1)[0] == "vlmparity":
            out.append(line)
    return out


def runbook_commands() -> list[tuple[int, list[str]]]:
    """Every `vlmparity` command of the runbook with the line its code block starts on, split as a shell would."""
    text = RUNBOOK.read_text(encoding="utf-8")
    out = []
    for m in _FENCE.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        out += [(line, shlex.split(cmd)) for cmd in command_lines(textwrap.dedent(m.group("body")))]
    return out


# Typer (0.29) carries its own copy of click: commands and options are recognised by shape, not by class.


def is_group(cmd: Any) -> bool:
    return isinstance(getattr(cmd, "commands", None), dict)


@functools.cache
def root_command() -> Any:
    import typer.main

    from vlmparity.cli import app

    return typer.main.get_command(app)


def resolve(argv: list[str]) -> tuple[list[str], Any, list[str]]:
    """(command path, its click command, the remaining arguments) of `vlmparity ...` argv."""
    cmd = root_command()
    path: list[str] = []
    rest = argv[1:]
    while rest and is_group(cmd) and rest[0] in cmd.commands:
        cmd = cmd.commands[rest[0]]
        path.append(rest[0])
        rest = rest[1:]
    return path, cmd, rest


def long_options(cmd: Any, args: list[str]) -> list[str]:
    """The long options `args` use, skipping each option's value (which may itself start with --)."""
    known = {
        name: p for p in cmd.params if p.param_type_name == "option" for name in (*p.opts, *p.secondary_opts)
    }
    used = []
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("--"):
            name = token.split("=", 1)[0]
            used.append(name)
            param = known.get(name)
            if param is not None and not param.is_flag and not param.count and "=" not in token:
                i += 1
        i += 1
    return used


@functools.cache
def help_text(path: tuple[str, ...]) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "vlmparity", *path, "--help"],
        capture_output=True,
        text=True,
        env=_HELP_ENV,
        timeout=120,
    )
    return proc.returncode, _ANSI.sub("", proc.stdout + proc.stderr)


NUMBERED = runbook_commands()
COMMANDS = [argv for _, argv in NUMBERED]
IDS = [f"line{line}-{'-'.join(resolve(argv)[0]) or argv[1]}" for line, argv in NUMBERED]
LAUNCHES = [
    (i, c)
    for i, c in zip(IDS, COMMANDS, strict=True)
    if c[1:2] == ["launch"] and c[2:3] in (["vllm"], ["ovms"])
]


def test_the_runbook_shows_the_whole_path_to_a_verdict() -> None:
    paths = {tuple(resolve(c)[0]) for c in COMMANDS}
    for needed in [("launch", "vllm"), ("launch", "ovms"), ("doctor",), ("compare",), ("run",), ("report",),
                   ("launch", "stop")]:  # fmt: skip
        assert needed in paths, f"the runbook has no `vlmparity {' '.join(needed)}` command"
    compares = [c for c in COMMANDS if resolve(c)[0] == ["compare"]]
    assert any(" --limit 250 " in f" {' '.join(c)} " for c in compares), "no compare with --limit 250"
    assert any("--sample" in c and "--seed" in c for c in compares), "no compare with a stratified sample"
    doctored = [c for c in COMMANDS if resolve(c)[0] == ["doctor"]]
    assert any(u.endswith("/v1") for c in doctored for u in c) and any(
        u.endswith("/v3") for c in doctored for u in c
    )


@pytest.mark.parametrize("argv", COMMANDS, ids=IDS)
def test_every_option_is_in_the_help_of_its_command(argv: list[str]) -> None:
    path, cmd, rest = resolve(argv)
    assert path, f"not a vlmparity command: {shlex.join(argv)}"
    assert not is_group(cmd), f"incomplete command (a group): {shlex.join(argv)}"
    code, text = help_text(tuple(path))
    assert code == 0, text
    assert "No such option" not in text and "No such command" not in text
    for option in long_options(cmd, rest):
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text), (
            f"`vlmparity {' '.join(path)}` has no option {option} (runbook: {shlex.join(argv)})"
        )


@pytest.mark.parametrize("argv", [c for _, c in LAUNCHES], ids=[i for i, _ in LAUNCHES])
def test_launch_lines_pass_a_dry_run(argv: list[str], tmp_path: Path) -> None:
    # A home where the runbook's ~/venvs/vllm exists (as a venv whose python is this one); `~` is expanded
    # as the shell would, and files the runbook creates beforehand (a .jinja template) are made here.
    home = tmp_path / "home"
    venv_bin = home / "venvs" / "vllm" / "bin"
    venv_bin.mkdir(parents=True)
    (venv_bin / "python").symlink_to(sys.executable)
    work = tmp_path / "work"
    work.mkdir()
    args = [str(home) + a[1:] if a.startswith("~/") else a for a in argv[1:]]
    for a in args:
        if a.endswith(".jinja") and not a.startswith(("/", "-")):
            (work / a).write_text("{{ bos_token }}{% for m in messages %}{{ m['content'] }}{% endfor %}")
    if "--dry-run" not in args:
        args.append("--dry-run")
    proc = subprocess.run(
        [sys.executable, "-m", "vlmparity", *args],
        capture_output=True,
        text=True,
        cwd=work,
        env={**os.environ, "HOME": str(home), "VLMPARITY_STATE_DIR": str(tmp_path / "state")},
        timeout=120,
    )
    assert proc.returncode == 0, f"{shlex.join(argv)}\n{proc.stderr}"
    assert "No such option" not in proc.stderr
    assert "nothing was started" in proc.stdout
    assert not (tmp_path / "state").exists()  # no server, no state file


def test_extraction_reads_indented_blocks_and_continuations() -> None:
    doc = "text\n\n  ```bash\n  vlmparity run --endpoint a=http://x:1/v1 \\\n    --tasks mme\n  ls\n  ```\n"
    assert [line for b in code_blocks(doc) for line in command_lines(b)] == [
        "vlmparity run --endpoint a=http://x:1/v1 --tasks mme"
    ]
