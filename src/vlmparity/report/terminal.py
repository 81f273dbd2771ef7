"""What `vlmparity compare` prints for one candidate: the paired metrics table, the details, the top
disagreements and the verdict line.

Pure functions of analyses (`compare.analysis`); the words of the verdict come from `report.labels`,
every number from `report.formatting`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vlmparity.compare.analysis import WORDING, Analysis, Disagreement, task_of, top_disagreements
from vlmparity.compare.health import Health
from vlmparity.compare.join import Joined, LoadedRun, Side
from vlmparity.report.formatting import (
    fmt_confidence,
    fmt_delta,
    fmt_interval,
    fmt_margin,
    fmt_p,
    fmt_p_equivalence,
    fmt_value,
)
from vlmparity.report.labels import metric_label
from vlmparity.report.tables import markdown_table
from vlmparity.store import ANSWERED

SAMPLE_ID_WIDTH = 48

POLICY_TEXT = {
    "answered": "answered: the samples both endpoints answered (MME: whole images); failures are gated by "
    "--max-error-rate",
    "strict": "strict: every paired sample, a failure counts as a wrong answer",
}

SEQUENTIAL_LEGEND = (
    "interval of Δ (sequential, --sequential): each metric at the look that decided it, Δ ± √((c·se)² + u²) "
    "with c the look's O'Brien-Fleming-type boundary (conf. = 1 − 2·(1 − Φ(c))): inside ±margin = "
    "equivalent. not equivalent = a difference shown at the look's Hwang–Shih–DeCani (γ = −4) boundary "
    "(z under no difference, "
    "weighted Bonferroni across the metrics) with Δ beyond the margin.\np Δ≠0: test of no difference "
    "(McNemar exact; z-test for MME's clustered metrics), unadjusted. p |Δ|≥margin: the fixed-size TOST "
    "p-value of the look's data, a description."
)


def values_line(analysis: Analysis) -> str:
    """What the two value columns are: paired values under the verdict's policy (named), not a run's own."""
    s = analysis.settings
    return (
        f"values: paired, policy {s.policy} (the samples the verdict uses; MMMU letters for answers without "
        "one drawn per sample); each run's own scores per policy: its run output and the report"
    )


LEGEND = (
    "interval of Δ: the interval the verdict is decided on, at the confidence shown (alpha, Holm-adjusted "
    "across the metrics): inside ±margin = equivalent, wholly outside = not equivalent, across an edge = "
    "inconclusive.\np Δ≠0: test of no difference (McNemar exact; z-test for MME's clustered metrics), "
    "unadjusted, a description only. p |Δ|≥margin: equivalence (TOST) p-value, Holm-adjusted: equivalent "
    "when below alpha."
)


def metric_order(task: str) -> list[str]:
    """A task's metrics in the order tables list them: its lmms-eval headline metrics (alphabetically, as
    lmms-eval prints them), then the ones the comparison adds (question accuracies), in the specs' order."""
    specs = task_of(task).metric_specs()
    own = sorted(s.name for s in specs if s.lmms_eval)
    return own + [s.name for s in specs if not s.lmms_eval]


def _metric_rank(order: Sequence[str], metric: str) -> int:
    return order.index(metric) if metric in order else len(order)


def _clip(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def parsed_text(value: Any) -> str:
    """A parsed answer for display: "—" for none, lists joined."""
    if value is None:
        return "—"
    if isinstance(value, list | tuple):
        return ", ".join(parsed_text(x) for x in value) or "—"
    return str(value)


def answer_text(side: Side) -> str:
    """A parsed answer for the terminal, or the failure class when there is no answer."""
    if not side.answered:
        return f"({side.outcome})"
    mark = "✓" if side.correct else "✗"
    fallback = " (random)" if side.random_fallback else ""
    return f"{parsed_text(side.parsed)}{fallback} {mark}"


def metrics_table(analysis: Analysis) -> str:
    """The side-by-side table: both values, Δ, its interval, margin, discordant counts, p-values, verdict."""
    rows = []
    for t in analysis.tasks:
        order = metric_order(t.task)
        for r in sorted(t.metrics, key=lambda r: _metric_rank(order, r.metric)):
            rows.append(
                [
                    t.task,
                    r.metric,
                    fmt_value(r.a_value, r.unit),
                    fmt_value(r.b_value, r.unit),
                    fmt_delta(r.delta, r.unit),
                    fmt_interval(r.ci_low, r.ci_high, r.unit),
                    fmt_confidence(r.level),
                    fmt_margin(r.margin, r.unit),
                    f"{r.discordant_ab}/{r.discordant_ba}",
                    fmt_p(r.p_difference),
                    fmt_p_equivalence(r.p_equivalence_holm),
                    metric_label(r),
                ]
            )
    headers = [
        "Task",
        "Metric",
        f"{analysis.reference} (ref)",
        analysis.candidate,
        "Δ",
        "interval of Δ",
        "conf.",
        "margin",
        "lost/gained",
        "p Δ≠0",
        "p |Δ|≥margin",
        "verdict",
    ]
    return markdown_table(headers, rows)


def verdict_line(analysis: Analysis, *, exit_code: bool = True) -> str:
    """The overall verdict of one candidate (with the exit code `compare` gives it)."""
    text = f"VERDICT {analysis.candidate} vs {analysis.reference}: {analysis.verdict.label}"
    if analysis.problems:
        text += " — but the comparison is not trustworthy: infrastructure failure"
    return f"{text} (exit {analysis.exit_code})" if exit_code else text


def _health_text(h: Health) -> str:
    fails = ", ".join(f"{k}={n}" for k, n in h.outcomes.items() if k not in ANSWERED)
    text = f"{h.label}: {h.n - h.failures - h.missing}/{h.n} answered"
    if fails:
        text += f" ({fails}; error rate {100 * h.error_rate:.1f}%)"
    return text


def detail_lines(analysis: Analysis) -> list[str]:
    """Agreement per task, health per endpoint, the policy and the other policy's verdict, notes."""
    s = analysis.settings
    lines = []
    for t in analysis.tasks:
        parts = [f"{t.task}: {t.n_pairs} paired samples"]
        if t.n_used != t.n_pairs:
            parts.append(f"{t.n_used} used by the verdict")
        if t.raw_agreement is not None:
            parts.append(f"raw answers agree {fmt_value(t.raw_agreement.rate, 'fraction')}")
        if t.parsed_agreement is not None:
            parts.append(f"parsed answers agree {fmt_value(t.parsed_agreement.rate, 'fraction')}")
        lines.append(", ".join(parts))
    lines.append(f"{_health_text(analysis.health_a)}; {_health_text(analysis.health_b)}")
    how = "Holm across the metrics" if analysis.sequential is None else "group-sequential (see the legend)"
    lines.append(f"verdict policy: {POLICY_TEXT.get(s.policy, s.policy)}; alpha {s.alpha:g}, {how}")
    other = analysis.other_verdict
    failures = analysis.health_a.failures + analysis.health_b.failures
    failures += analysis.health_a.missing + analysis.health_b.missing
    if other is not None and failures:
        lines.append(f"under the {s.other_policy} policy the verdict would be: {other.label}")
    lines += [f"note: {n}" for n in analysis.notes]
    lines += [f"INFRASTRUCTURE: {p}" for p in analysis.problems]
    return lines


def disagreements_table(items: Sequence[Disagreement], reference: str, candidate: str) -> str:
    """Sample id, kind, gold, and both endpoints' parsed answers (✓/✗) of the given disagreements."""
    rows = [
        [
            d.task,
            _clip(d.sample_id, SAMPLE_ID_WIDTH),
            d.kind,
            _clip(str(d.sample.target), 16),
            answer_text(d.a),
            answer_text(d.b),
        ]
        for d in items
    ]
    return markdown_table(["Task", "Sample", "Kind", "Gold", reference, candidate], rows)


def render_terminal(analysis: Analysis, top: int = 10) -> str:
    """Everything `vlmparity compare` prints for one candidate."""
    blocks = [
        f"{analysis.candidate} vs {analysis.reference} (reference)",
        values_line(analysis)
        + "\n\n"
        + metrics_table(analysis)
        + "\n"
        + (LEGEND if analysis.sequential is None else SEQUENTIAL_LEGEND),
    ]
    blocks.append("\n".join(detail_lines(analysis)))
    items = analysis.disagreements
    shown = top_disagreements(items, top)
    counted = [d for d in items if d.kind != WORDING]
    if shown:
        title = f"top {len(shown)} of {len(counted)} disagreements (regressions first)"
        blocks.append(title + "\n" + disagreements_table(shown, analysis.reference, analysis.candidate))
    elif top > 0:
        blocks.append("no disagreement in parsed answers")
    blocks.append(verdict_line(analysis))
    return "\n\n".join(blocks) + "\n"


def plan_lines(joins: Sequence[Joined]) -> list[str]:
    """What `compare`/`report` say about the plans they use: one line per run (the analysis notes when
    the reference's and a candidate's plans of a task differ: only the samples both planned are compared)."""
    runs: dict[int, LoadedRun] = {}
    for j in joins:
        for r in (j.reference, j.candidate):
            runs.setdefault(id(r), r)
    lines = []
    for r in runs.values():
        if not r.choices:
            continue
        several = len(r.ref.plans) > 1
        what = ", ".join(f"{t} {c.describe()}" for t, c in r.choices.items())
        more = f" (of {len(r.ref.plans)} in {r.ref.directory}; choose with --plan)" if several else ""
        lines.append(f"plans: {r.label}: {what}{more}")
    return lines
