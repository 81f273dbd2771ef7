"""`vlmparity tasks`: the benchmarks this tool runs, with their default dataset and limits."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `tasks` command to the app."""
    app.command("tasks", help="List the tasks: default dataset, split, metrics, max_tokens.")(tasks)


def tasks() -> None:
    """Print one row per registered task."""
    from vlmparity.report.tables import markdown_table
    from vlmparity.tasks.base import get_task, task_names

    rows = []
    for name in task_names():
        task = get_task(name)
        legacy = ", ".join(getattr(task, "legacy_sources", ()))
        rows.append(
            [
                name,
                task.default_source + (f" (also {legacy})" if legacy else ""),
                task.split,
                ", ".join(getattr(task, "metric_names", ())),
                str(getattr(task, "max_tokens", "")),
            ]
        )
    typer.echo(markdown_table(["Task", "Default source", "Split", "Metrics", "max_tokens"], rows))
