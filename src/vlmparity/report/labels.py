"""The words of a verdict: each judged metric's label and the reasons of the overall verdict.

`compare` returns numbers (`compare.verdict.PairedResult`, `Verdict`); the texts every output shows
(terminal, verdict.json, the HTML report) are written here, in the one number format
(`report.formatting`). A metric judged at a sequential look (`PairedResult.look`) says so.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from vlmparity.compare.verdict import (
    EQUIVALENT,
    INCONCLUSIVE,
    NOT_EQUIVALENT,
    LookJudgement,
    PairedResult,
    Verdict,
)
from vlmparity.report.formatting import fmt_delta, fmt_margin

if TYPE_CHECKING:
    from vlmparity.compare.analysis import Analysis


def metric_label(r: PairedResult) -> str:
    """The verdict text of a judged metric: what it certifies and, if inconclusive, what would settle it."""
    if r.look is not None:
        return _look_label(r, r.look)
    within = fmt_margin(r.certified_margin, r.unit, words=True)
    if r.verdict == EQUIVALENT:
        return f"{EQUIVALENT} within {within}"
    if r.verdict == NOT_EQUIVALENT:
        nearest = r.ci_low if r.delta > 0 else r.ci_high
        side = "higher" if r.delta > 0 else "lower"
        return f"{NOT_EQUIVALENT}: at least {fmt_delta(abs(nearest), r.unit, words=True).lstrip('+')} {side}"
    margin = fmt_margin(r.margin, r.unit, words=True)
    head = f"{INCONCLUSIVE}: certifies {within}, not {margin}"
    if abs(r.delta) >= r.margin:
        head = f"{INCONCLUSIVE}: Δ {fmt_delta(r.delta, r.unit, words=True)} is beyond {margin}, not provably"
    if r.n_more is not None:
        tail = f"need ~{r.n_more} more samples"
        if r.remaining is not None:
            tail += (
                f" ({r.remaining} remain)" if r.n_more < r.remaining else f" (all {r.remaining} remaining)"
            )
        return f"{head}; {tail}"
    if r.full_margin is not None:
        total = round(r.available * r.task_per_metric) if r.available is not None else 0
        if r.remaining == 0:
            return f"{head}; every sample of the data set ({total}) is compared already"
        return (
            f"{head}; out of reach even with all {total} samples of the data set (they would certify "
            f"about {fmt_margin(r.full_margin, r.unit, words=True)})"
        )
    return f"{head}; the observed difference is too close to the margin to settle"


def _look_label(r: PairedResult, j: LookJudgement) -> str:
    """A metric as a sequential look judged it (`compare.sequential.examine`)."""
    where = f"look {j.look + 1}/{j.looks}"
    certified = fmt_margin(r.certified_margin, r.unit, words=True)
    margin = fmt_margin(r.margin, r.unit, words=True)
    if j.state == EQUIVALENT:
        return f"{EQUIVALENT} within {certified} ({where})"
    if j.state == NOT_EQUIVALENT:
        return (
            f"{NOT_EQUIVALENT}: Δ {fmt_delta(r.delta, r.unit, words=True)} beyond {margin}, a difference at "
            f"z = {j.z:.2f} >= {j.bound:.2f} ({where})"
        )
    if j.look == j.looks - 1:
        return (
            f"{INCONCLUSIVE}: certifies {certified}, not {margin}, and no difference beyond it is shown "
            f"(z = {j.z:.2f} < {j.bound:.2f}) at the last look"
        )
    return f"open at {where}"


def labelled_result(r: PairedResult) -> PairedResult:
    """The metric with its label written."""
    return replace(r, label=metric_label(r))


def labelled_verdict(verdict: Verdict) -> Verdict:
    """The verdict with every metric's label and its reasons ("metric: label" of the deciding metrics)."""
    metrics = tuple(labelled_result(r) for r in verdict.metrics)
    reasons = tuple(f"{r.metric}: {r.label}" for r in metrics if r.verdict == verdict.verdict)
    return replace(verdict, metrics=metrics, reasons=reasons)


def labelled(analysis: Analysis) -> Analysis:
    """The analysis with the words of both policies' verdicts and of every task's metrics written."""
    other = analysis.other_verdict
    tasks = tuple(
        replace(
            t,
            metrics=tuple(labelled_result(r) for r in t.metrics),
            other_metrics=tuple(labelled_result(r) for r in t.other_metrics),
        )
        for t in analysis.tasks
    )
    return replace(
        analysis,
        verdict=labelled_verdict(analysis.verdict),
        other_verdict=labelled_verdict(other) if other is not None else None,
        tasks=tasks,
    )
