"""Rendering of token-level closeness (compare/closeness.py): terminal lines, JSON-ready views, the report's
section and its |Δ logprob| histogram (inline SVG in report/charts.py's style).

Formatting only: every figure comes from `compare.closeness`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from markupsafe import Markup

from vlmparity.compare.closeness import Closeness, Fingerprint, TaskCloseness
from vlmparity.report.charts import _n, _svg, _text, colour

# Histogram bins of |Δ logprob|: exactly 0, then one per decade from 1e-8 up to >= 1.
DECADES = tuple(range(-8, 1))


def _g(x: float | None) -> str:
    return "—" if x is None else f"{x:.2g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def task_line(t: TaskCloseness) -> str:
    d = t.deltas
    return (
        f"  {t.task:<10} tokens agree {_pct(t.token_agreement)} ({t.n_token_agree}/{t.n_compared})  "
        f"|Δ logprob| median {_g(d.median)} p95 {_g(d.p95)} max {_g(d.max)}  "
        f"prompt-token mismatch {_pct(t.prompt_mismatch_share)}"
    )


def fingerprint_text(f: Fingerprint) -> str:
    """`kind · cause (evidence) — fingerprint summary`, one line."""
    head = f"{f.kind} · {f.cause}" if f.kind else "same text"
    evidence = f" ({f.evidence})" if f.evidence else ""
    summary = f.summary()
    return head + evidence + (f" — {summary}" if summary else "")


def terminal_text(c: Closeness, top: int = 10) -> str:
    """The closeness block printed under the accuracy verdict (never part of it)."""
    lines = [
        f"Numerical closeness ({c.candidate} vs {c.reference}; not part of the verdict): {c.statement_text}"
    ]
    if c.overall.n_compared:
        lines += [task_line(t) for t in c.tasks]
    if c.causes:
        lines.append("  likely cause: " + "; ".join(f"{x.cause} ({x.evidence})" for x in c.causes))
    else:
        lines.append("  likely cause: none found")
    rows = c.disagreements
    if rows and top > 0:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(c.overall.kinds.items()))
        lines.append(f"  differing answers: {len(rows)} ({kinds}); first {min(top, len(rows))}:")
        for f in rows[:top]:
            lines.append(f"    {f.task} {f.sample_id}: {fingerprint_text(f)}")
    return "\n".join(lines)


def _bin_of(x: float) -> int:
    """0 for exactly 0, else 1 + decade index (values below 1e-8 join the first decade)."""
    if x <= 0:
        return 0
    k = math.floor(math.log10(x))
    k = min(max(k, DECADES[0]), DECADES[-1])
    return 1 + DECADES.index(k)


def delta_histogram(series: Sequence[tuple[str, Sequence[float]]], *, title: str) -> Markup | None:
    """Bars per decade of |Δ logprob| for each candidate (share of its agreeing-prefix tokens)."""
    series = [(name, values) for name, values in series if len(values)]
    if not series:
        return None
    labels = ["0", *(f"1e{k}" for k in DECADES[:-1]), "≥1"]
    shares = []
    for _, values in series:
        counts = [0] * len(labels)
        for v in values:
            counts[_bin_of(v)] += 1
        shares.append([c / len(values) for c in counts])
    width, height, left, bottom, top = 640.0, 220.0, 44.0, 40.0, 24.0
    plot_w, plot_h = width - left - 10, height - top - bottom
    group_w = plot_w / len(labels)
    bar_w = group_w * 0.8 / len(series)
    body = [_text(left, 14, title, font_weight="600")]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = top + plot_h * (1 - tick)
        body.append(
            f'<line x1="{_n(left)}" x2="{_n(width - 10)}" y1="{_n(y)}" y2="{_n(y)}" stroke="#e5e7eb"/>'
        )
        body.append(_text(left - 4, y + 4, f"{tick:.0%}", "end", fill="#6b7280"))
    for i, label in enumerate(labels):
        x0 = left + i * group_w + group_w * 0.1
        for j, (name, _) in enumerate(series):
            share = shares[j][i]
            h = plot_h * share
            x = x0 + j * bar_w
            body.append(
                f'<rect x="{_n(x)}" y="{_n(top + plot_h - h)}" width="{_n(bar_w)}" height="{_n(h)}" '
                f'fill="{colour(j + 1)}"><title>{name}: {share:.1%} of tokens in [{label})</title></rect>'
            )
        body.append(_text(left + (i + 0.5) * group_w, top + plot_h + 14, label, "middle", fill="#374151"))
    body.append(_text(left + plot_w / 2, height - 6, "|Δ logprob| per agreeing token (decade)", "middle"))
    return _svg(width, height, title, body, "chart closeness-hist")


def report_view(items: Sequence[Closeness]) -> dict[str, Any] | None:
    """The report's closeness section (None when no comparison carries any closeness figure)."""
    if not items:
        return None
    comparisons = []
    for c in items:
        comparisons.append(
            {
                "candidate": c.candidate,
                "statement": c.statement,
                "statement_text": c.statement_text,
                "causes": [{"cause": x.cause, "evidence": x.evidence} for x in c.causes],
                "rows": [
                    {
                        "task": t.task,
                        "compared": t.n_compared,
                        "agreement": _pct(t.token_agreement),
                        "median": _g(t.deltas.median),
                        "p95": _g(t.deltas.p95),
                        "max": _g(t.deltas.max),
                        "first_median": _g(t.first_deltas.median),
                        "prompt_mismatch": _pct(t.prompt_mismatch_share),
                        "kinds": ", ".join(f"{k} {n}" for k, n in sorted(t.kinds.items())) or "—",
                    }
                    for t in [*c.tasks, c.overall]
                ],
            }
        )
    chart = delta_histogram(
        [(c.candidate, [d for f in c.fingerprints for d in f.deltas]) for c in items],
        title="|Δ logprob| over the agreeing tokens (share per decade)",
    )
    return {"comparisons": comparisons, "chart": chart}


def row_fingerprints(items: Sequence[Closeness]) -> dict[tuple[str, str], dict[str, str]]:
    """(task, sample_id) -> candidate -> the fingerprint line, for the disagreement browser."""
    out: dict[tuple[str, str], dict[str, str]] = {}
    for c in items:
        for f in c.fingerprints:
            if f.kind is not None or f.prompt_diff or (f.compared and not f.tokens_agree):
                out.setdefault((f.task, f.sample_id), {})[c.candidate] = fingerprint_text(f)
    return out
