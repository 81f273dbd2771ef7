"""Terminal/markdown tables: lmms-eval's results table (research §5.4) and the breakdowns it only logs.

Functions take `TaskResult`s and return strings (markdown); print them plainly or through rich.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from vlmparity.tasks.base import TaskResult

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


def mme_breakdown_table(result: TaskResult) -> str:
    """Per MME category: images, acc, acc_plus and score (acc + acc_plus), then the two sums."""
    from vlmparity.tasks.mme import COGNITION, COGNITION_METRIC, PERCEPTION, PERCEPTION_METRIC

    categories: Mapping[str, Mapping[str, Any]] = result.breakdown.get("categories", {})
    order = [c for c in (*PERCEPTION, *COGNITION) if c in categories]
    order += [c for c in categories if c not in order]
    rows: list[list[str]] = []
    for cat in order:
        c = categories[cat]
        kind = "perception" if c["metric"] == PERCEPTION_METRIC else "cognition"
        rows.append(
            [cat, kind, str(c["images"]), f"{c['acc']:.2f}", f"{c['acc_plus']:.2f}", f"{c['score']:.2f}"]
        )
    for metric, label in ((PERCEPTION_METRIC, "Perception"), (COGNITION_METRIC, "Cognition")):
        if metric in result.metrics:
            rows.append([f"**{label}**", "", "", "", "", f"{result.metrics[metric]:.2f}"])
    return markdown_table(["Category", "Type", "Images", "acc", "acc_plus", "Score"], rows)


def mmmu_breakdown_table(result: TaskResult) -> str:
    """lmms-eval's printed MMMU results: each domain's overall, its subjects, then Overall."""
    printable: Mapping[str, Mapping[str, Any]] = result.breakdown.get("printable_results", {})
    rows: list[list[str]] = []
    for name, v in printable.items():
        label = f"**{name}**" if name.startswith("Overall") else f"  {name}"
        rows.append([label, str(v["num"]), f"{v['acc']:.5f}"])
    return markdown_table(["Subject", "Num", "Acc"], rows)


def breakdown_table(result: TaskResult) -> str:
    """The breakdown of one task's result ("" for a task without one)."""
    if result.task == "mme":
        return mme_breakdown_table(result)
    if result.task.startswith("mmmu"):
        return mmmu_breakdown_table(result)
    return ""


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
