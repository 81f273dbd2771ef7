"""Terminal/markdown tables: lmms-eval's results table (research §5.4) and the breakdowns it only logs.

Functions take `TaskResult`s and return strings (markdown); print them plainly or through rich.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlmparity.tasks.base import TaskResult, get_task, task_names

NA = "N/A"
UP = "↑"

_OPTIONAL_COLUMNS = ("Stderr_CLT",)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A padded markdown table like pytablewriter's: centred headers, numeric columns right-aligned."""
    cells = [[str(c) for c in row] for row in rows]
    ncol = len(headers)
    right = [bool(cells) and all(_is_number(r[i]) for r in cells if r[i] != "") for i in range(ncol)]
    widths = [max([3, len(headers[i])] + [len(r[i]) for r in cells]) for i in range(ncol)]

    def line(values: Sequence[str]) -> str:
        return "|" + "|".join(values) + "|"

    out = [line([headers[i].center(widths[i]) for i in range(ncol)])]
    out.append(line([("-" * (widths[i] - 1) + ":") if right[i] else "-" * widths[i] for i in range(ncol)]))
    for r in cells:
        out.append(line([r[i].rjust(widths[i]) if right[i] else r[i].ljust(widths[i]) for i in range(ncol)]))
    return "\n".join(out)


def _fmt(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def results_table(results: Sequence[TaskResult], *, n_shot: Mapping[str, int] | None = None) -> str:
    """lmms-eval's printed table: Tasks|Filter|n-shot|Metric| |Value| |Stderr (+Stderr_CLT when known).

    Tasks sorted by name, metrics alphabetically within a task, values `%.4f`. `Stderr_CLT` appears only
    when some row has one (MME: std of the 0/1 question scores, ddof=1, over sqrt(n)).
    """
    rows: list[list[str]] = []
    clts: list[str] = []
    for result in sorted(results, key=lambda r: r.task):
        clt_map: Mapping[str, Any] = result.breakdown.get("stderr_clt", {}) or {}
        shots = str((n_shot or {}).get(result.task, 0))
        for metric in sorted(result.metrics):
            rows.append([result.task, "none", shots, metric, UP, _fmt(result.metrics[metric]), "±", NA])
            clts.append(_fmt(clt_map.get(metric)))
    headers = ["Tasks", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"]
    if any(c != NA for c in clts):
        headers.append(_OPTIONAL_COLUMNS[0])
        rows = [[*r, c] for r, c in zip(rows, clts, strict=True)]
    return markdown_table(headers, rows)


def breakdown_tables(result: TaskResult) -> list[str]:
    """The breakdowns of one task's result, as its task gives them (`Task.breakdown_tables`), rendered."""
    if result.task not in task_names():
        return []
    return [markdown_table(t.headers, t.rows) for t in get_task(result.task).breakdown_tables(result)]


def breakdown_table(result: TaskResult) -> str:
    """The breakdowns of one task's result, one table after another ("" for a task without one)."""
    return "\n\n".join(breakdown_tables(result))


def counts_line(result: TaskResult) -> str:
    """One line of the counts worth knowing (n, random fallbacks, failures, exclusions)."""
    parts = [f"n={result.n}"]
    parts += [f"{k}={v}" for k, v in result.counts.items() if v]
    return f"{result.task}: " + ", ".join(parts)


def render(results: Sequence[TaskResult]) -> str:
    """The full report for a terminal: the lmms-eval table, then each task's breakdown and counts."""
    blocks = [results_table(results)]
    for result in sorted(results, key=lambda r: r.task):
        table = breakdown_table(result)
        if table:
            blocks.append(f"{result.task} breakdown\n\n{table}")
        blocks.append(counts_line(result))
    return "\n\n".join(blocks) + "\n"
