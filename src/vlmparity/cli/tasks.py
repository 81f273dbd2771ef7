"""`vlmparity tasks`: the benchmarks this tool runs, with their default dataset and limits."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the `tasks` command to the app."""
    app.command(
        "tasks",
        help="List the tasks: default dataset, split, metrics (lmms-eval's and those `compare` judges), max_tokens.",
    )(tasks)


def tasks() -> None:
    """Print one row per registered task."""
    from vlmparity.report.tables import markdown_table
    from vlmparity.tasks.base import get_task, task_names

    rows = []
    for name in task_names():
        task = get_task(name)
        legacy = ", ".join(task.legacy_sources)
        rows.append(
            [
                name,
                task.default_source + (f" (also {legacy})" if legacy else ""),
                task.split,
                ", ".join(task.metric_names),
                ", ".join(spec.name for spec in task.metric_specs()),
                str(task.max_tokens),
            ]
        )
    headers = [
        "Task",
        "Default source",
        "Split",
        "Metrics (results.json)",
        "Compared (verdict)",
        "max_tokens",
    ]
    typer.echo(markdown_table(headers, rows))
    typer.echo(
        "\nmme_acc is MME's question accuracy (lmms-eval reports MME as the two scores); `run` prints every "
        "task's question accuracy beside its metrics, under both failure policies."
    )
