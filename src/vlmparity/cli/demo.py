"""`vlmparity demo`: the whole tool in about a minute, offline: two simulated engines, a run, a verdict."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

DEMO_HELP = (
    "Try vlmparity offline in about a minute: start a vLLM-like and an OVMS-like simulated server on "
    "loopback (the candidate answers a few percent of the questions differently), generate a small "
    "synthetic MME + MMMU-val set, run both endpoints, compare them, and write report.html (--keep also "
    "keeps the data and runs to try `vlmparity compare` on). "
    "Exits 0 whatever the verdict (it is a demonstration), non-zero only if something broke."
)


def register(app: typer.Typer) -> None:
    """Add the `demo` command to the app."""
    app.command("demo", help=DEMO_HELP)(demo)


def demo(
    out: Path = typer.Option(
        Path("vlmparity-demo"),
        "--out",
        "-o",
        help="Folder for report.html and verdict.json (and, with --keep, the data and runs). A previous "
        "demo's folder is cleared; any other non-empty folder is refused.",
    ),
    n_mme: int = typer.Option(280, "--n-mme", help="Synthetic MME questions (two per image)."),
    n_mmmu: int = typer.Option(150, "--n-mmmu", help="Synthetic MMMU-val questions."),
    keep: bool = typer.Option(
        False,
        "--keep",
        help="Keep the generated data and the run store in OUT/data and OUT/runs (to try `vlmparity "
        "compare OUT/runs`); without it they are scratch, removed at the end.",
    ),
    top: int = typer.Option(5, "--top", help="Disagreements to list."),
) -> None:
    """Run the demo and print the verdict and where the report is."""
    from vlmparity.cli.run import PlainProgress, RichProgress, interrupt_as_error
    from vlmparity.demo import DemoSettings, run_demo
    from vlmparity.report.terminal import render_terminal

    started = time.perf_counter()
    settings = DemoSettings(out=out, n_mme=n_mme, n_mmmu=n_mmmu, keep=keep)
    progress = RichProgress() if sys.stderr.isatty() else PlainProgress()

    def step(text: str) -> None:
        typer.echo(f"demo: {text}", err=True)

    # the simulators are stopped on the way out; the folder is cleared by the next demo
    from vlmparity import interrupt

    with (
        interrupt.handling(),
        interrupt_as_error(
            f"interrupted; the demo stopped (its files are in {out})", hint="rerun to start over"
        ),
        progress,
    ):
        result = run_demo(settings, progress=progress, step=step)
    typer.echo("")
    typer.echo(render_terminal(result.analysis, top))
    if result.closeness is not None:
        from vlmparity.report.closeness import terminal_text

        typer.echo(terminal_text(result.closeness, top))
    for s in result.outcome.sessions:
        from vlmparity.report.run_summary import summary_line

        typer.echo(summary_line(s))
    elapsed = time.perf_counter() - started
    report = result.report.resolve()
    typer.echo(f"\nreport: {report}")
    typer.echo(f"verdict JSON: {result.verdict_json.resolve()}")
    if keep:
        runs = (result.out / "runs").resolve()
        typer.echo(f"runs kept in {runs}: try `vlmparity compare {runs}`")
    else:
        typer.echo(
            "the generated data and runs were scratch and are removed; `vlmparity demo --keep` keeps them "
            "to try `vlmparity compare` on"
        )
    typer.echo(f"demo finished in {elapsed:.0f} s (the verdict is informational: exit 0)")
    typer.echo(f"open the report: {open_command(report)}  (or {report.as_uri()} in a browser)")


def open_command(path: Path) -> str:
    """The shell command that opens `path` in the default browser on this platform."""
    import shlex

    if sys.platform == "darwin":
        return f"open {shlex.quote(str(path))}"
    if sys.platform.startswith("win"):
        return f'start "" "{path}"'
    return f"xdg-open {shlex.quote(str(path))}"
