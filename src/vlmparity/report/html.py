"""The self-contained HTML comparison report: `render_report(ReportData) -> str`, `write_report`.

One file, no network: CSS and JavaScript inline, charts as inline SVG, images as small JPEG data URLs.
Everything shown is escaped (jinja2 autoescape; data for the script travels as JSON in a
`<script type="application/json">` block and is read with `textContent`). A Content-Security-Policy
allows only data: images and the report's own script (by hash), so even a markup bug could neither
run injected script nor fetch anything.
"""

from __future__ import annotations

import base64
import hashlib
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from markupsafe import Markup

from vlmparity.errors import DataError, VlmparityError
from vlmparity.report import charts
from vlmparity.report.formatting import (
    fmt_confidence,
    fmt_delta,
    fmt_interval,
    fmt_margin,
    fmt_p,
    fmt_p_equivalence,
    fmt_value,
)
from vlmparity.report.model import (
    OUTCOME_CLASSES,
    AnswerView,
    Backend,
    Comparison,
    Disagreement,
    ReportData,
    TaskSummary,
)

REPORT_FILENAME = "report.html"
TEMPLATE = "report.html.j2"
# Only images we made (base64 data URLs of raster formats): anything else could reach the network.
_DATA_URL = re.compile(r"data:image/(jpeg|png|gif|webp);base64,[A-Za-z0-9+/]*={0,2}")

# "Who is right" classes of a disagreement (a partition: the reference is either right or not).
SIDE_REF = "reference_only"
SIDE_CAND = "candidate_only"
SIDE_ALL = "all_right"
SIDE_NONE = "none_right"


# --------------------------------------------------------------------------- formatting


def fmt_seconds(value: float | None) -> str:
    """Seconds, three significant digits."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.3g} s"


def fmt_rate(value: float | None) -> str:
    """A throughput figure."""
    return "–" if value is None or not math.isfinite(value) else f"{value:.2f}"


def _fmt_scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    return "–" if value is None else str(value)


def _verdict_class(verdict: str, prefix: str) -> str:
    return prefix + verdict.replace(" ", "-")


def _verdict_note(label: str, verdict: str) -> str:
    """What a label adds to its verdict: "equivalent within ±0.52 pp" -> "within ±0.52 pp",
    "inconclusive: certifies …" -> "certifies …"."""
    if label.startswith(verdict):
        rest = label[len(verdict) :].strip()
        return rest.removeprefix(":").strip().removeprefix("(").removesuffix(")")
    return label


def _unit_of(metric: str) -> str:
    return "points" if metric.endswith("_score") else "fraction"


# --------------------------------------------------------------------------- validation


def validate(data: ReportData) -> None:
    """Raise DataError when the report data is inconsistent (unknown or duplicate backend names)."""
    names = [b.name for b in data.backends]
    if len(set(names)) != len(names):
        raise DataError(f"duplicate backend names in report data: {names}", hint="name each endpoint once")
    if data.reference not in names:
        raise DataError(f"reference {data.reference!r} is not one of the backends {names}")
    for c in data.comparisons:
        if c.candidate not in names or c.candidate == data.reference:
            raise DataError(f"comparison candidate {c.candidate!r} is not a candidate backend")
    for d in data.disagreements:
        unknown = set(d.answers) - set(names)
        if unknown:
            raise DataError(
                f"disagreement {d.task}/{d.sample_id} has answers from unknown backends {sorted(unknown)}"
            )


def safe_image_src(src: str) -> str | None:
    """The data URL if it is a base64 raster image we can show offline, else None."""
    return src if _DATA_URL.fullmatch(src) else None


# --------------------------------------------------------------------------- view model


@dataclass(frozen=True)
class _Assets:
    css: Markup
    js: Markup
    csp: str


@cache
def _assets() -> _Assets:
    root = resources.files("vlmparity.report") / "templates"
    css = (root / "report.css").read_text(encoding="utf-8")
    js = (root / "report.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(js.encode("utf-8")).digest()).decode("ascii")
    csp = (
        "default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
        f"script-src 'sha256-{digest}'; base-uri 'none'; form-action 'none'"
    )
    # Our own static files, never data: marking them safe is what inlines them.
    return _Assets(Markup(css), Markup(js), csp)


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("vlmparity.report", "templates"),
        autoescape=True,  # every template, whatever its extension
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _backend_rows(data: ReportData) -> list[dict[str, Any]]:
    ordered = _ordered_backends(data)
    return [
        {
            "name": b.name,
            "role": "reference" if b.name == data.reference else "candidate",
            "is_reference": b.name == data.reference,
            "kind": b.kind or "–",
            "model": b.model or "–",
            "server_version": b.server_version or "–",
            "url": b.url or "–",
            "run": b.run or "–",
            "colour": charts.colour(i),
        }
        for i, b in enumerate(ordered)
    ]


def _ordered_backends(data: ReportData) -> list[Backend]:
    """Reference first, then the candidates in their given order (colours follow this order)."""
    ref = [b for b in data.backends if b.name == data.reference]
    return ref + data.candidates


def _comparison_view(c: Comparison, colour: str) -> dict[str, Any]:
    metrics = []
    for m in c.metrics:
        metrics.append(
            {
                "task": m.task,
                "metric": m.metric,
                "n": m.n,
                "a": fmt_value(m.a_value, m.unit),
                "b": fmt_value(m.b_value, m.unit),
                "delta": fmt_delta(m.delta, m.unit),
                "ci": fmt_interval(m.ci_low, m.ci_high, m.unit),
                "confidence": fmt_confidence(m.level),
                "boot": fmt_interval(m.boot_low, m.boot_high, m.unit),
                "margin": fmt_margin(m.margin, m.unit),
                "certified": fmt_margin(m.certified_margin, m.unit),
                "disc_ab": m.discordant_ab,
                "disc_ba": m.discordant_ba,
                "p_difference": fmt_p(m.p_difference),
                "difference_test": m.difference_test,
                "p_equivalence": fmt_p_equivalence(m.p_equivalence_holm),
                "p_nonequivalence": fmt_p_equivalence(m.p_nonequivalence_holm),
                "verdict": m.verdict,
                "note": _verdict_note(m.label, m.verdict),
                "tcls": _verdict_class(m.verdict, "t-"),
            }
        )
    boot = c.metrics[0].boot_confidence if c.metrics else 0.95
    return {
        "candidate": c.candidate,
        "colour": colour,
        "label": c.label,
        "tcls": _verdict_class(c.verdict, "t-"),
        "reasons": c.reasons,
        "policy": c.policy,
        "n_used": ", ".join(f"{t}: {n}" for t, n in c.n_used.items()),
        "boot_confidence": f"{boot * 100:g} %",
        "metrics": metrics,
        "agreement": [
            {
                "task": a.task,
                "kind": a.kind,
                "n": a.n,
                "n_agree": a.n_agree,
                "rate": fmt_value(a.rate, "fraction"),
                "ci": f"[{fmt_value(a.low, 'fraction')}, {fmt_value(a.high, 'fraction')}]",
            }
            for a in c.agreement
        ],
    }


def _forest(data: ReportData) -> Markup | None:
    rows = []
    many = len(data.comparisons) > 1
    for c in data.comparisons:
        for m in c.metrics:
            unit = m.unit

            def fmt(v: float, unit: str = unit) -> str:
                return fmt_delta(v, unit)

            sub = f"{m.task} · n={m.n} · {fmt_confidence(m.level)}" + (f" · {c.candidate}" if many else "")
            rows.append(
                charts.ForestRow(m.metric, sub, m.delta, m.ci_low, m.ci_high, m.margin, m.verdict, fmt)
            )
    if not rows:
        return None
    return charts.forest_plot(rows, title="Differences with their decision intervals and equivalence margins")


def _paired_rows(
    t: TaskSummary, names: Sequence[str], reference: str, comparisons: Sequence[Comparison]
) -> list[tuple[str, str, list[str]]]:
    """The values each verdict compared (paired, under its policy), one row per metric and candidate."""
    rows = []
    for c in comparisons:
        for m in c.metrics:
            if m.task != t.name:
                continue
            by_name = {reference: m.a_value, c.candidate: m.b_value}
            values = [fmt_value(by_name.get(b), m.unit) for b in names]
            rows.append((m.metric, f"paired, {c.policy} (verdict vs {c.candidate})", values))
    return rows


def _task_view(
    t: TaskSummary, backends: Sequence[Backend], reference: str = "", comparisons: Sequence[Comparison] = ()
) -> dict[str, Any]:
    names = [b.name for b in backends]
    metric_names: list[str] = []
    policies: list[str] = []
    for b in names:
        for policy, values in t.metrics.get(b, {}).items():
            if policy not in policies:
                policies.append(policy)
            for metric in values:
                if metric not in metric_names:
                    metric_names.append(metric)
    metric_rows = [
        (
            metric,
            policy,
            [
                fmt_value(
                    t.metrics.get(b, {}).get(policy, {}).get(metric),
                    t.metric_units.get(metric, _unit_of(metric)),
                )
                for b in names
            ],
        )
        for metric in metric_names
        for policy in policies
    ]
    metric_rows += _paired_rows(t, names, reference, comparisons)
    chart = None
    bd = t.breakdown
    if bd is not None and bd.values:
        groups = list(bd.values)
        unit = bd.unit

        def fmt(v: float, unit: str = unit) -> str:
            return f"{v * 100:.0f} %" if unit == "fraction" else f"{v:.0f}"

        def fmt_bar(v: float, unit: str = unit) -> str:
            return fmt_value(v, unit)

        series = [(b, [bd.values[g].get(b) for g in groups]) for b in names]
        labels = [f"{g} (n={bd.counts[g]})" if g in bd.counts else g for g in groups]
        chart = charts.grouped_bars(
            labels,
            series,
            max_value=bd.max_value,
            tick_fmt=fmt,
            value_fmt=fmt_bar,
            title=f"{t.name}: per {bd.label}" + (f" (policy {bd.policy})" if bd.policy else ""),
        )
    return {
        "name": t.name,
        "n_samples": t.n_samples,
        "fingerprint": [(k, _fmt_scalar(v)) for k, v in t.fingerprint.items()],
        "plan": [(k, _fmt_scalar(v)) for k, v in t.plan.items()],
        "metric_rows": metric_rows,
        "breakdown_label": bd.label if bd is not None else "",
        "breakdown_policy": bd.policy if bd is not None else "",
        "chart": chart,
    }


def _quantile(values: Sequence[float], q: float) -> float | None:
    vals = sorted(v for v in values if math.isfinite(v))
    if not vals:
        return None
    return charts._quantile(vals, q)


def _perf_rows(backends: Sequence[Backend]) -> list[dict[str, Any]]:
    rows = []
    for i, b in enumerate(backends):
        p = b.performance
        lat = p.latencies_s if p else []
        ttft = p.ttfts_s if p else []
        rows.append(
            {
                "name": b.name,
                "colour": charts.colour(i),
                "n": len(lat),
                "wall": fmt_seconds(p.wall_s if p else None),
                "rps": fmt_rate(p.req_per_s if p else None),
                "tps": fmt_rate(p.output_tokens_per_s if p else None),
                "lat50": fmt_seconds(_quantile(lat, 0.5)),
                "lat95": fmt_seconds(_quantile(lat, 0.95)),
                "ttft50": fmt_seconds(_quantile(ttft, 0.5)),
                "ttft95": fmt_seconds(_quantile(ttft, 0.95)),
            }
        )
    return rows


def _outcome_tables(data: ReportData, backends: Sequence[Backend]) -> list[dict[str, Any]]:
    tasks: list[str] = [t.name for t in data.tasks]
    for b in backends:
        tasks += [t for t in list(b.outcomes) + list(b.random_fallbacks) if t not in tasks]
    tables = []
    for task in tasks:
        if not any(task in b.outcomes or task in b.random_fallbacks for b in backends):
            continue
        extra = sorted({k for b in backends for k in b.outcomes.get(task, {})} - set(OUTCOME_CLASSES))
        classes = list(OUTCOME_CLASSES) + extra
        fallbacks = any(task in b.random_fallbacks for b in backends)
        rows = [
            {
                "name": b.name,
                "colour": charts.colour(i),
                "counts": [b.outcomes.get(task, {}).get(c, 0) for c in classes],
                "fallback": b.random_fallbacks.get(task, 0),
            }
            for i, b in enumerate(backends)
        ]
        tables.append({"task": task, "classes": classes, "rows": rows, "fallbacks": fallbacks})
    return tables


def _right(a: AnswerView | None) -> bool:
    # A failure or an unscored answer counts as not right (the lmms-eval policy).
    return a is not None and a.correct is True


def side_of(d: Disagreement, reference: str, candidates: Sequence[str]) -> str:
    """Which side is right: reference only, a candidate (reference wrong), all, or none."""
    ref_right = _right(d.answers.get(reference))
    cand_right = [_right(d.answers.get(c)) for c in candidates if c in d.answers]
    if ref_right:
        return SIDE_ALL if all(cand_right) else SIDE_REF
    return SIDE_CAND if any(cand_right) else SIDE_NONE


def _parsed_text(parsed: str | list[str] | None) -> str:
    if parsed is None:
        return "–"
    if isinstance(parsed, list):
        return "[" + ", ".join(str(p) for p in parsed) + "]"
    return str(parsed)


def _differs(a: AnswerView | None, b: AnswerView | None) -> bool:
    if a is None or b is None:
        return a is not b
    return _parsed_text(a.parsed) != _parsed_text(b.parsed) or a.correct != b.correct


def _answer_view(a: AnswerView | None) -> dict[str, Any]:
    if a is None:
        return {"mark": "–", "mark_cls": "mark-na", "mark_title": "not in this run", "parsed": "",
                "raw": None, "outcome": "missing", "random_fallback": False}  # fmt: skip
    if a.correct is None:
        mark, cls, title = "–", "mark-na", "not scored"
    elif a.correct:
        mark, cls, title = "✓", "mark-ok", "correct"
    else:
        mark, cls, title = "✗", "mark-bad", "wrong"
    return {
        "mark": mark,
        "mark_cls": cls,
        "mark_title": title,
        "parsed": _parsed_text(a.parsed),
        "raw": a.raw,
        "outcome": a.outcome,
        "random_fallback": a.random_fallback,
    }


def _side_labels(n_candidates: int) -> list[tuple[str, str]]:
    cand = "candidate" if n_candidates == 1 else "a candidate"
    return [
        (SIDE_REF, f"reference right, {cand} wrong"),
        (SIDE_CAND, f"{cand} right, reference wrong"),
        (SIDE_ALL, "all right"),
        (SIDE_NONE, "none right"),
    ]


def _disagreement_view(data: ReportData, backends: Sequence[Backend]) -> dict[str, Any]:
    names = [b.name for b in backends]
    candidates = names[1:]
    rows = []
    groups: dict[str, list[str]] = {}
    side_counts = dict.fromkeys([k for k, _ in _side_labels(1)], 0)
    for d in data.disagreements:
        ref = d.answers.get(data.reference)
        side = side_of(d, data.reference, candidates)
        side_counts[side] += 1
        groups.setdefault(d.task, [])
        if d.group not in groups[d.task]:
            groups[d.task].append(d.group)
        rows.append(
            {
                "task": d.task,
                "sample_id": d.sample_id,
                "group": d.group,
                "prompt": d.prompt,
                "target": d.target,
                "images": [s for s in (safe_image_src(x) for x in d.images) if s is not None],
                "answers": [_answer_view(d.answers.get(n)) for n in names],
                "side": side,
                "differs": " ".join(c for c in candidates if _differs(ref, d.answers.get(c))),
                "fingerprints": sorted(d.fingerprints.items()),
            }
        )
    total = len(rows)
    capped = (
        data.disagreements_total if data.disagreements_total and data.disagreements_total > total else None
    )
    sides = _side_labels(len(candidates))
    return {
        "rows": rows,
        "total": total,
        "capped": capped,
        "tasks": list(groups),
        "sides": sides,
        "side_counts": side_counts,
        "candidates": candidates,
        "js_data": {"groups": {t: sorted(g) for t, g in groups.items()}, "sides": dict(sides)},
    }


def _context(data: ReportData) -> dict[str, Any]:
    backends = _ordered_backends(data)
    backend_rows = _backend_rows(data)
    colours = {b["name"]: b["colour"] for b in backend_rows}
    margins = [(k, fmt_margin(v, _unit_of(k), words=True)) for k, v in data.margins.items()]
    dis = _disagreement_view(data, backends)
    assets = _assets()
    perf_series_lat = [(b.name, b.performance.latencies_s if b.performance else []) for b in backends]
    perf_series_ttft = [(b.name, b.performance.ttfts_s if b.performance else []) for b in backends]
    return {
        "title": data.title,
        "tool_version": data.tool_version,
        "generated_at": data.generated_at,
        "verdict": {
            "label": data.verdict.label or data.verdict.verdict,
            "cls": _verdict_class(data.verdict.verdict, "v-"),
            "reasons": data.verdict.reasons,
        },
        "reference": {"name": data.reference, "colour": colours[data.reference]},
        "candidates": [b.name for b in data.candidates],
        "comparisons": [_comparison_view(c, colours[c.candidate]) for c in data.comparisons],
        "backends": backend_rows,
        "tasks": [_task_view(t, backends, data.reference, data.comparisons) for t in data.tasks],
        "alpha": f"{data.alpha:g}",
        "margins": margins,
        "generation": [(k, _fmt_scalar(v)) for k, v in data.generation.items()],
        "notes": data.notes,
        "forest": _forest(data),
        "perf": _perf_rows(backends),
        "latency_chart": charts.histograms(perf_series_lat, unit="s", title="Request latency per backend"),
        "ttft_chart": charts.histograms(perf_series_ttft, unit="s", title="Time to first token per backend"),
        "outcome_tables": _outcome_tables(data, backends),
        "dis": dis,
        "closeness": data.closeness,
        "js_data": dis["js_data"],
        "css": assets.css,
        "js": assets.js,
        "csp": assets.csp,
    }


# --------------------------------------------------------------------------- public API


def render_report(data: ReportData) -> str:
    """The report as one self-contained HTML document."""
    validate(data)
    return _environment().get_template(TEMPLATE).render(**_context(data))


def write_report(data: ReportData, path: str | os.PathLike[str]) -> Path:
    """Render and write the report atomically; a directory gets `report.html` inside it."""
    target = Path(path)
    if target.is_dir():
        target = target / REPORT_FILENAME
    html = render_report(data)
    # A sibling temporary file created with the usual permissions (mkstemp would make it 0600).
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp.unlink(missing_ok=True)  # left by a crashed process that had our pid
        try:
            with open(tmp, "x", encoding="utf-8") as fh:
                fh.write(html)
            os.replace(tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
    except OSError as exc:
        raise VlmparityError(
            f"cannot write the report to {target}: {exc.strerror or exc}",
            hint="choose a writable place for the report",
            exit_code=3,
        ) from exc
    return target
