"""One number format for every output (terminal, verdict labels, HTML report).

Accuracies are fractions shown as percentages ("85.00 %"), their differences and margins in
percentage points ("+1.25 pp", "±1.00 pp"); MME scores and their differences in score points
("1523.40", "+12.50", with `words=True` "±20.00 points"). p-values with four decimals.
"""

from __future__ import annotations

import math

FRACTION = "fraction"


def _bad(value: float | None) -> bool:
    return value is None or not math.isfinite(value)


def fmt_value(value: float | None, unit: str) -> str:
    """A metric value: an accuracy as a percentage, a score in points."""
    if value is None or _bad(value):
        return "–"
    return f"{100 * value:.2f} %" if unit == FRACTION else f"{value:.2f}"


def fmt_delta(value: float | None, unit: str, *, words: bool = False) -> str:
    """A signed difference: percentage points (pp) for accuracies, points for scores."""
    if value is None or _bad(value):
        return "–"
    if unit == FRACTION:
        return f"{100 * value:+.2f} pp"
    return f"{value:+.2f} points" if words else f"{value:+.2f}"


def fmt_interval(low: float | None, high: float | None, unit: str) -> str:
    """[low, high] in the units of `fmt_delta`, without the unit."""
    if low is None or high is None or _bad(low) or _bad(high):
        return "–"
    k = 100.0 if unit == FRACTION else 1.0
    return f"[{k * low:+.2f}, {k * high:+.2f}]"


def fmt_margin(value: float | None, unit: str, *, words: bool = False) -> str:
    """±margin in the metric's unit."""
    if value is None or _bad(value):
        return "–"
    if unit == FRACTION:
        return f"±{100 * value:.2f} pp"
    return f"±{value:.2f} points" if words else f"±{value:.2f}"


def fmt_p(p: float | None) -> str:
    """A p-value, four decimals ("< 0.0001" below)."""
    if p is None or _bad(p):
        return "–"
    return "< 0.0001" if p < 0.0001 else f"{p:.4f}"


def fmt_confidence(level: float) -> str:
    """The coverage 1 - 2 level of a decision interval at one-sided `level`, e.g. "97.5 %"."""
    return f"{100 * (1 - 2 * level):.4g} %"


def fmt_p_equivalence(p: float | None) -> str:
    """An equivalence p-value: 1 means no level below 0.5 certifies, shown as "≥ 0.5"."""
    if p is not None and math.isfinite(p) and p >= 0.5:
        return "≥ 0.5"
    return fmt_p(p)
