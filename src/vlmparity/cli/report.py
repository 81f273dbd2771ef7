"""`vlmparity report`: regenerate the HTML comparison report from run stores (no request is sent)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import typer

REPORT_HELP = (
    "Write the HTML comparison report (report.html: verdict, per-category bars, differences with "
    "intervals, latency, outcome classes, every disagreement with its image) from finished run folders. "
    "Reads the run stores only; sends no request."
)


def register(app: typer.Typer) -> None:
    """Add the `report` command to the app."""
    from vlmparity.cli.compare import verdict_parameters, with_parameters

    kw = inspect.Parameter.KEYWORD_ONLY
    params = [
        inspect.Parameter(
            "run_dirs",
            kw,
            default=typer.Argument(..., metavar="RUN_DIR", help="`vlmparity run --output-path` folders."),
            annotation=list[Path],
        ),
        inspect.Parameter(
            "out",
            kw,
            default=typer.Option(
                None, "--out", "-o", help="Report file or folder (default: <first run folder>/report.html)."
            ),
            annotation=Path | None,
        ),
        inspect.Parameter(
            "data",
            kw,
            default=typer.Option(
                [],
                "--data",
                metavar="TASK=SOURCE",
                help="Where a run's data is now, when it moved or was given as a relative path.",
            ),
            annotation=list[str],
        ),
        *verdict_parameters(),
    ]
    app.command("report", help=REPORT_HELP)(with_parameters(report, params))


def report(**options: Any) -> None:
    """Load, join, analyse and write report.html; print the verdict line and the path."""
    from vlmparity.cli.compare import data_overrides, settings_from, write_html
    from vlmparity.compare.analysis import analyse
    from vlmparity.compare.join import load_joins, parse_plan_picks
    from vlmparity.lock import check_not_written
    from vlmparity.report.terminal import plan_lines, verdict_line

    settings = settings_from(options)
    dirs = [Path(d) for d in options["run_dirs"]]
    for folder in dirs:
        check_not_written(folder)
    joins = load_joins(
        dirs,
        reference=options.get("reference"),
        candidates=list(options.get("candidate") or []),
        data=data_overrides(options.get("data") or []),
        plans=parse_plan_picks(options.get("plan") or []),
    )
    for line in plan_lines(joins):
        typer.echo(line)
    adjust = None
    if len(dirs) == 1:  # a folder a sequential comparison stopped early: its looks, its verdict
        from vlmparity.compare.looks import replay

        replayed = replay(dirs[0], joins, settings)
        if replayed is not None:
            joins, adjust = replayed
    analyses = [analyse(j, settings) for j in joins]
    if adjust is not None:
        analyses = [adjust(a, j) for a, j in zip(analyses, joins, strict=True)]
    for a in analyses:
        typer.echo(verdict_line(a, exit_code=False))
    from vlmparity.compare.closeness import closeness

    close = [closeness(j) for j in joins]
    path = write_html(analyses, joins, options.get("out") or dirs[0] / "report.html", close)
    typer.echo(f"report: {path}")
