"""Inline SVG charts for the HTML report: grouped bars, a forest plot, histograms.

Each function takes numbers and labels and returns `Markup` holding one `<svg>` element. Every label
goes through `markupsafe.escape`, so untrusted names cannot break out of the markup.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Reference first, then candidates; chosen to stay distinguishable for common colour-vision deficiencies.
PALETTE = ("#2563eb", "#ea580c", "#059669", "#9333ea", "#db2777", "#0891b2", "#ca8a04")
VERDICT_COLOURS = {"equivalent": "#15803d", "not equivalent": "#b91c1c", "inconclusive": "#b45309"}
FONT = 'font-family="system-ui, sans-serif"'


def colour(index: int) -> str:
    """Colour of the backend at `index` (0 = reference)."""
    return PALETTE[index % len(PALETTE)]


def _n(x: float) -> str:
    """A coordinate, short."""
    return f"{x:.1f}".rstrip("0").rstrip(".") if math.isfinite(x) else "0"


def _svg(width: float, height: float, title: str, body: list[str], cls: str) -> Markup:
    head = (
        f'<svg class="{cls}" viewBox="0 0 {_n(width)} {_n(height)}" '
        f'width="{_n(width)}" height="{_n(height)}" role="img" {FONT} font-size="12">'
        f"<title>{escape(title)}</title>"
    )
    return Markup(head + "".join(body) + "</svg>")


def _text(x: float, y: float, text: str, anchor: str = "start", **attrs: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in attrs.items())
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{escape(text)}</text>'


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (about `count` of them)."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low] if math.isfinite(low) else [0.0]
    raw = (high - low) / max(1, count - 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(low / step) * step
    ticks = []
    t = start
    while t <= high + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


# --------------------------------------------------------------------------- grouped bars


def grouped_bars(
    groups: Sequence[str],
    series: Sequence[tuple[str, Sequence[float | None]]],
    *,
    max_value: float,
    tick_fmt: Callable[[float], str],
    value_fmt: Callable[[float], str],
    title: str,
) -> Markup:
    """Horizontal bars: one block per group, one bar per series (backend) inside it."""
    label_w, plot_w, value_w, bar_h, gap = 250.0, 470.0, 70.0, 11.0, 9.0
    legend_h, axis_h = 24.0, 22.0
    nb = max(1, len(series))
    block = nb * bar_h + gap
    width = label_w + plot_w + value_w
    height = legend_h + axis_h + block * len(groups) + 4
    top = legend_h + axis_h
    top_value = max_value if max_value > 0 else 1.0

    body: list[str] = []
    x = 0.0
    for i, (name, _) in enumerate(series):  # legend
        body.append(f'<rect x="{_n(x)}" y="6" width="12" height="12" fill="{colour(i)}"/>')
        body.append(_text(x + 16, 16, name))
        x += 30 + 7 * min(len(name), 28)
    for t in nice_ticks(0, top_value, 5):  # grid and axis labels
        if t > top_value * 1.0001:
            continue
        gx = label_w + plot_w * t / top_value
        body.append(
            f'<line x1="{_n(gx)}" y1="{_n(top - 4)}" x2="{_n(gx)}" y2="{_n(height)}" stroke="#e5e7eb"/>'
        )
        body.append(_text(gx, top - 8, tick_fmt(t), "middle", fill="#6b7280", font_size="10"))
    for g, group in enumerate(groups):
        y0 = top + g * block
        body.append(_text(label_w - 8, y0 + nb * bar_h / 2 + 4, _clip(group, 38), "end"))
        for i, (_, values) in enumerate(series):
            v = values[g] if g < len(values) else None
            y = y0 + i * bar_h
            if v is None or not math.isfinite(v):
                body.append(_text(label_w + 4, y + bar_h - 2, "n/a", fill="#6b7280", font_size="10"))
                continue
            w = plot_w * max(0.0, min(v, top_value)) / top_value
            body.append(
                f'<rect x="{_n(label_w)}" y="{_n(y + 1)}" width="{_n(w)}" height="{_n(bar_h - 2)}" '
                f'fill="{colour(i)}"><title>{escape(series[i][0])}: {escape(value_fmt(v))}</title></rect>'
            )
            body.append(_text(label_w + w + 4, y + bar_h - 2, value_fmt(v), font_size="10"))
    return _svg(width, height, title, body, "chart bars")


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --------------------------------------------------------------------------- forest plot


@dataclass(frozen=True)
class ForestRow:
    """One difference with its interval, drawn on its own scale around 0 with a ±margin band."""

    label: str
    sublabel: str
    delta: float
    low: float | None
    high: float | None
    margin: float
    verdict: str
    fmt: Callable[[float], str]


def forest_plot(rows: Sequence[ForestRow], *, title: str) -> Markup:
    """Forest plot: per row the difference, its interval, the zero line and the ±margin band."""
    label_w, plot_w, text_w, row_h, top = 230.0, 380.0, 260.0, 42.0, 26.0
    width = label_w + plot_w + text_w
    height = top + row_h * len(rows) + 8
    body = [
        _text(label_w + plot_w / 2, 14, "candidate − reference (each row on its own scale)", "middle",
              fill="#6b7280", font_size="11"),
        _text(label_w + plot_w + 12, 14, "difference [interval] · verdict", fill="#6b7280", font_size="11"),
    ]  # fmt: skip
    for r, row in enumerate(rows):
        y0 = top + r * row_h
        mid = y0 + row_h / 2 - 4
        if r % 2 == 0:
            body.append(f'<rect x="0" y="{_n(y0)}" width="{_n(width)}" height="{_n(row_h)}" fill="#f9fafb"/>')
        extent = max(
            [row.margin, abs(row.delta)]
            + [abs(v) for v in (row.low, row.high) if v is not None and math.isfinite(v)]
        )
        half = (extent if extent > 0 else 1.0) * 1.15
        pad = 14.0

        def sx(v: float, half: float = half, pad: float = pad) -> float:
            return label_w + pad + (plot_w - 2 * pad) * (v + half) / (2 * half)

        body.append(_text(8, mid, _clip(row.label, 34), font_weight="600"))
        body.append(_text(8, mid + 14, _clip(row.sublabel, 38), fill="#6b7280", font_size="11"))
        bx0, bx1 = sx(-row.margin), sx(row.margin)
        body.append(
            f'<rect x="{_n(bx0)}" y="{_n(y0 + 5)}" width="{_n(bx1 - bx0)}" height="{_n(row_h - 20)}" '
            f'fill="#dcfce7" stroke="#86efac"><title>equivalence margin ±{escape(row.fmt(row.margin).lstrip("+"))}</title></rect>'
        )
        zx = sx(0)
        body.append(
            f'<line x1="{_n(zx)}" y1="{_n(y0 + 3)}" x2="{_n(zx)}" y2="{_n(y0 + row_h - 13)}" '
            'stroke="#374151" stroke-dasharray="3 2"/>'
        )
        m_txt = row.fmt(row.margin).lstrip("+")
        if bx1 - bx0 >= 120:  # room for three labels under the band
            ticks: tuple[tuple[float, str], ...] = (
                (-row.margin, "−" + m_txt),
                (0.0, "0"),
                (row.margin, "+" + m_txt),
            )
        else:
            ticks = ((0.0, "0 ± " + m_txt),)
        for v, txt in ticks:
            body.append(_text(sx(v), y0 + row_h - 3, txt, "middle", fill="#6b7280", font_size="9"))
        c = VERDICT_COLOURS.get(row.verdict, "#374151")
        interval = " (no interval)"
        if row.low is not None and row.high is not None:
            interval = f" [{row.fmt(row.low)}, {row.fmt(row.high)}]"
            lx, hx = sx(row.low), sx(row.high)
            body.append(
                f'<line x1="{_n(lx)}" y1="{_n(mid)}" x2="{_n(hx)}" y2="{_n(mid)}" stroke="{c}" stroke-width="2"/>'
            )
            for ex in (lx, hx):
                body.append(
                    f'<line x1="{_n(ex)}" y1="{_n(mid - 5)}" x2="{_n(ex)}" y2="{_n(mid + 5)}" stroke="{c}" stroke-width="2"/>'
                )
        body.append(f'<circle cx="{_n(sx(row.delta))}" cy="{_n(mid)}" r="4.5" fill="{c}"/>')
        body.append(_text(label_w + plot_w + 12, mid, row.fmt(row.delta) + interval))
        body.append(
            _text(label_w + plot_w + 12, mid + 14, row.verdict, fill=c, font_size="11", font_weight="600")
        )
    return _svg(width, height, title, body, "chart forest")


# --------------------------------------------------------------------------- histograms


def histograms(
    series: Sequence[tuple[str, Sequence[float]]],
    *,
    unit: str,
    title: str,
    bins: int = 24,
) -> Markup:
    """One histogram per series on shared bins and a shared x axis, with p50 and p95 marked."""
    label_w, plot_w, panel_h, gap, axis_h = 150.0, 600.0, 58.0, 12.0, 26.0
    width = label_w + plot_w + 20
    height = len(series) * (panel_h + gap) + axis_h
    finite = [v for _, vs in series for v in vs if math.isfinite(v)]
    body: list[str] = []
    if not finite:
        body.append(_text(label_w, 20, "no timings recorded", fill="#6b7280"))
        return _svg(width, 30, title, body, "chart hist")
    hi = max(finite)
    lo = 0.0 if min(finite) >= 0 else min(finite)
    ticks = nice_ticks(lo, hi if hi > lo else lo + 1, 6)
    lo, hi = ticks[0], ticks[-1]
    bin_w = (hi - lo) / bins

    def sx(v: float) -> float:
        return label_w + plot_w * (v - lo) / (hi - lo)

    for i, (name, values) in enumerate(series):
        y0 = i * (panel_h + gap)
        vals = sorted(v for v in values if math.isfinite(v))
        counts = [0] * bins
        for v in vals:
            counts[min(bins - 1, int((v - lo) / bin_w))] += 1
        top = max(counts) or 1
        body.append(_text(label_w - 8, y0 + panel_h / 2, _clip(name, 22), "end", font_weight="600"))
        body.append(
            _text(label_w - 8, y0 + panel_h / 2 + 14, f"n={len(vals)}", "end", fill="#6b7280", font_size="10")
        )
        body.append(
            f'<line x1="{_n(label_w)}" y1="{_n(y0 + panel_h)}" x2="{_n(label_w + plot_w)}" '
            f'y2="{_n(y0 + panel_h)}" stroke="#9ca3af"/>'
        )
        for b, cnt in enumerate(counts):
            if cnt == 0:
                continue
            h = (panel_h - 6) * cnt / top
            x = sx(lo + b * bin_w)
            body.append(
                f'<rect x="{_n(x + 0.5)}" y="{_n(y0 + panel_h - h)}" width="{_n(plot_w / bins - 1)}" '
                f'height="{_n(h)}" fill="{colour(i)}" opacity="0.85"><title>'
                f"{escape(_fmt_range(lo + b * bin_w, lo + (b + 1) * bin_w, unit))}: {cnt}</title></rect>"
            )
        if vals:
            for q, dash in ((0.5, ""), (0.95, ' stroke-dasharray="4 2"')):
                qv = _quantile(vals, q)
                qx = sx(qv)
                body.append(
                    f'<line x1="{_n(qx)}" y1="{_n(y0)}" x2="{_n(qx)}" y2="{_n(y0 + panel_h)}" '
                    f'stroke="#111827"{dash}/>'
                )
                body.append(_text(qx + 3, y0 + 10, f"p{round(q * 100)} {qv:.3g} {unit}", font_size="10"))
        else:
            body.append(_text(label_w + 8, y0 + panel_h / 2, "no data", fill="#6b7280"))
    axis_y = len(series) * (panel_h + gap)
    for t in ticks:
        body.append(_text(sx(t), axis_y + 12, f"{t:g}", "middle", fill="#6b7280", font_size="10"))
    body.append(_text(label_w + plot_w / 2, axis_y + 24, unit, "middle", fill="#6b7280", font_size="10"))
    return _svg(width, height, title, body, "chart hist")


def _fmt_range(a: float, b: float, unit: str) -> str:
    return f"{a:.3g}–{b:.3g} {unit}"


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolation quantile of sorted values (numpy's default method)."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
