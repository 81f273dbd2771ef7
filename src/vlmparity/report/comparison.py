"""A comparison as data for its outputs: the machine-readable verdict (verdict.json) and the HTML
report's `ReportData`.

Pure functions of analyses and loaded runs (`compare.analysis`, `compare.join`); nothing here reads a
store or sends a request (except the few images the report shows). The HTML page itself is drawn by
`report.html` from the `ReportData` built here; the verdict's words come from `report.labels`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from vlmparity.compare import verdict as v
from vlmparity.compare.analysis import (
    POLICY_KEYS,
    WORDING,
    Analysis,
    overall_exit_code,
    task_of,
)
from vlmparity.compare.health import Health
from vlmparity.compare.join import PAIRED_FALLBACK, Joined, LoadedRun, Side
from vlmparity.report.labels import labelled
from vlmparity.report.model import (
    AgreementInfo,
    AnswerView,
    Backend,
    Breakdown,
    Comparison,
    Performance,
    ReportData,
    TaskSummary,
    VerdictSummary,
    thumbnail_data_url,
)
from vlmparity.report.model import Disagreement as Row
from vlmparity.tasks.base import GroupScores

MAX_REPORT_DISAGREEMENTS = 2000  # thumbnails make each row a few kB; beyond this the page gets unwieldy
# Scoring policies by JSON key, with the names tables show.
POLICY_DISPLAY = {"lmms_eval": "lmms-eval", "strict": "strict", "answered": "answered"}


def _metric_record(task: str, r: v.PairedResult, policy: str) -> dict[str, Any]:
    """One judged metric: the paired values of `policy`, the decision interval (ci_low, ci_high at
    `confidence`, the one the verdict is decided on), the bootstrap (a description) and the p-values."""
    record = {k: x for k, x in asdict(r).items() if k != "look"}  # a look's judgement is in its label
    return {"task": task, "values": "paired", "policy": policy, **record, "confidence": r.confidence}


def _health_record(h: Health) -> dict[str, Any]:
    return {
        "endpoint": h.label,
        "n": h.n,
        "outcomes": h.outcomes,
        "failures": h.failures,
        "missing": h.missing,
        "error_rate": h.error_rate,
    }


def json_document(analyses: Sequence[Analysis]) -> dict[str, Any]:
    """The verdict as JSON: overall exit code, and per candidate every metric, agreement and problem."""
    from vlmparity import __version__

    analyses = [labelled(a) for a in analyses]
    s = analyses[0].settings
    candidates = []
    for a in analyses:
        candidates.append(
            {
                "candidate": a.candidate,
                "verdict": a.verdict.verdict,
                "label": a.verdict.label,
                "exit_code": a.exit_code,
                "n_more": a.verdict.n_more,
                "reasons": list(a.verdict.reasons),
                "sequential": dict(a.sequential) if a.sequential is not None else None,
                "metrics": [_metric_record(t.task, r, s.policy) for t in a.tasks for r in t.metrics],
                "other_policy": {
                    "policy": s.other_policy,
                    "verdict": a.other_verdict.verdict if a.other_verdict else None,
                    "label": a.other_verdict.label if a.other_verdict else None,
                    "metrics": [
                        _metric_record(t.task, r, s.other_policy) for t in a.tasks for r in t.other_metrics
                    ],
                },
                # each run's own scores (MMMU: lmms-eval's sequential draw) per named scoring policy
                "scores": a.scores,
                "agreement": {
                    t.task: {
                        "raw": _agreement_record(t.raw_agreement),
                        "parsed": _agreement_record(t.parsed_agreement),
                    }
                    for t in a.tasks
                },
                "tasks": {
                    t.task: {
                        "paired": t.n_pairs,
                        "used": t.n_used,
                        "mismatched_request_hash": list(t.mismatched),
                        "only_reference": len(t.only_reference),
                        "only_candidate": len(t.only_candidate),
                        "skipped": len(t.skipped),
                        "random_fallbacks": {
                            "reference": t.random_fallbacks[0],
                            "candidate": t.random_fallbacks[1],
                        },
                        "disagreements": {
                            k: sum(1 for d in t.disagreements if d.kind == k)
                            for k in sorted({d.kind for d in t.disagreements})
                        },
                    }
                    for t in a.tasks
                },
                "health": {"reference": _health_record(a.health_a), "candidate": _health_record(a.health_b)},
                "infrastructure_problems": list(a.problems),
                "notes": list(a.notes),
            }
        )
    return {
        "tool": "vlmparity",
        "tool_version": __version__,
        "reference": analyses[0].reference,
        "exit_code": overall_exit_code(analyses),
        "settings": {
            "policy": s.policy,
            "alpha": s.alpha,
            "margin_accuracy": s.margin,
            **{f"margin_{metric}": margin for metric, margin in s.margins.items()},
            "max_error_rate": s.max_error_rate,
            "n_boot": s.n_boot,
            "seed": s.seed,
            "random_fallback": PAIRED_FALLBACK,
        },
        "candidates": candidates,
    }


def _agreement_record(a: Any) -> dict[str, Any] | None:
    if a is None:
        return None
    return {"n": a.n, "n_agree": a.n_agree, "rate": a.rate, "low": a.low, "high": a.high}


def performance(run: LoadedRun) -> Performance:
    """Latencies and TTFTs of every stored answer; throughput from run.json, else from the store's times."""
    records = [r for s in run.scores.values() for r in s.records if r is not None]
    lat = [r.latency for r in records if r.latency is not None]
    ttft = [r.ttft for r in records if r.ttft is not None]
    sess = run.session
    if sess.get("sent"):
        return Performance(
            lat, ttft, sess.get("wall_s"), sess.get("req_per_s"), sess.get("output_tokens_per_s")
        )
    # A resumed run's store spans several sessions: the span from the first request to the last answer.
    timed = [r for r in records if r.created and r.latency is not None]
    if not timed:
        return Performance(lat, ttft)
    start = min(r.created - (r.latency or 0.0) for r in timed)
    wall = max(r.created for r in timed) - start
    if wall <= 0:
        return Performance(lat, ttft)
    tokens = sum(r.completion_tokens or 0 for r in timed)
    return Performance(lat, ttft, wall, len(timed) / wall, tokens / wall)


def _plans_used(run: LoadedRun) -> str:
    """' (plan #2)', or per task when they differ; '' for a store without recorded plans."""
    ids = {t: c.plan_id for t, c in run.choices.items() if c.plan_id is not None}
    if not ids:
        return ""
    if len(set(ids.values())) == 1:
        return f" (plan #{next(iter(ids.values()))})"
    return " (" + ", ".join(f"{t} plan #{i}" for t, i in ids.items()) + ")"


def backend(run: LoadedRun) -> Backend:
    """One endpoint of the report: identity, speed, outcome classes and MMMU random fallbacks."""
    from vlmparity.masking import mask_url

    rec = run.ref.run
    return Backend(
        name=run.label,
        kind=rec.kind,
        model=rec.model,
        server_version=rec.server_version,
        url=mask_url(rec.url) or None,  # stores written before masking covered every secret
        run=str(run.ref.directory) + _plans_used(run),
        performance=performance(run),
        outcomes={t: dict(s.outcomes) for t, s in run.scores.items()},
        # tasks that have a random fallback (MMMU) count it in their results
        random_fallbacks={
            t: s.random_fallbacks
            for t, s in run.scores.items()
            if "random_fallback" in s.lmms_eval.result.counts
        },
    )


def _own_groups(run: LoadedRun, task: str, policy: str) -> GroupScores | None:
    """One run's own value per group (MME category score, MMMU subject accuracy, as its task gives them)
    under a named policy, with the questions behind each (from the run's own scoring)."""
    score = run.scores.get(task)
    if score is None:
        return None
    policies = getattr(score, "policies", None) or (score.parity, score.excluded)
    keyed = {POLICY_KEYS.get(p.policy, p.policy): p for p in policies}
    pol = keyed.get(policy)
    if pol is None or not pol.n:
        return None
    return task_of(task).group_scores(pol.result, score.samples)


def _task_summary(task: str, runs: Sequence[LoadedRun], analyses: Sequence[Analysis]) -> TaskSummary:
    ref = runs[0]
    plan = ref.plans[task]
    record = {
        k: x for k, x in plan.plan.to_dict().items() if k not in ("ids", "strata") and x not in ("", {})
    }
    record["groups"] = len(plan.plan.strata)
    # backend -> policy display name -> metric -> value: each run's own scores, every policy named
    metrics: dict[str, dict[str, dict[str, float]]] = {}
    for a in analyses:
        for label, tasks in a.scores.items():
            if task in tasks and label not in metrics:
                metrics[label] = {POLICY_DISPLAY.get(k, k): vals for k, vals in tasks[task].items()}
    spec_units = {spec.name: spec.unit for spec in task_of(task).metric_specs()}
    units = {
        m: spec_units.get(m) or _unit_of(m) for per in metrics.values() for vals in per.values() for m in vals
    }
    policy = analyses[0].settings.policy
    values: dict[str, dict[str, float]] = {}
    counts: dict[str, int] = {}
    shape: GroupScores | None = None
    for run in runs:
        groups = _own_groups(run, task, policy)
        shape = shape or groups
        for group, (value, n) in (groups.values if groups else {}).items():
            values.setdefault(group, {})[run.label] = value
            counts.setdefault(group, n)
    breakdown = None
    if values and shape is not None:
        rank = {g: i for i, g in enumerate(shape.rank)}
        values = {g: values[g] for g in sorted(values, key=lambda g: (rank.get(g, len(rank)), g))}
        breakdown = Breakdown(
            shape.label, shape.unit, shape.max_value, values, counts, policy=POLICY_DISPLAY[policy]
        )
    n = max((t.n_pairs for a in analyses for t in a.tasks if t.task == task), default=0)
    return TaskSummary(task, n, dict(plan.fingerprint), record, metrics, units, breakdown)


def _unit_of(metric: str) -> str:
    """The unit of an lmms-eval metric no spec of its task names: a score in points, else a fraction."""
    return "points" if metric.endswith("_score") else "fraction"


def _answer_view(side: Side) -> AnswerView:
    parsed: str | list[str] | None
    if isinstance(side.parsed, list | tuple):
        parsed = [str(x) for x in side.parsed]
    else:
        parsed = None if side.parsed is None else str(side.parsed)
    return AnswerView(
        raw=side.text,
        parsed=parsed if side.answered else None,
        correct=side.correct if side.answered else None,
        outcome=side.outcome,
        random_fallback=side.random_fallback,
    )


def report_disagreements(
    analyses: Sequence[Analysis], joins: Sequence[Joined], limit: int = MAX_REPORT_DISAGREEMENTS
) -> tuple[list[Any], int]:
    """One row per sample some candidate answered differently (parsed answer or failure), every
    backend's answer in it; capped at `limit` rows (regressions first). Returns rows and the total."""
    from vlmparity.tasks.base import get_task

    # Which samples disagree anywhere, with the most serious kind seen (for ordering under the cap).
    rank = {k: i for i, k in enumerate(("regression", "improvement", "failure", "other answer"))}
    worst: dict[tuple[str, str], int] = {}
    order: dict[tuple[str, str], int] = {}
    for a in analyses:
        for d in a.disagreements:
            if d.kind == WORDING:
                continue
            key = (d.task, d.sample_id)
            order.setdefault(key, d.sample.doc_id)
            worst[key] = min(worst.get(key, len(rank)), rank[d.kind])
    keys = sorted(worst, key=lambda k: (worst[k], k[0], order[k]))
    total = len(keys)
    keep = set(keys[:limit])
    answers: dict[tuple[str, str], dict[str, Any]] = {}
    samples: dict[tuple[str, str], Any] = {}
    for j in joins:
        for t in j.tasks:
            for p in t.pairs:
                key = (t.task, p.sample.id)
                if key not in keep:
                    continue
                samples.setdefault(key, p.sample)
                row = answers.setdefault(key, {})
                row.setdefault(j.reference.label, _answer_view(p.a))
                row[j.candidate.label] = _answer_view(p.b)
    _load_shown_images(samples, joins)
    thumbs: dict[str, str] = {}
    tasks: dict[str, Any] = {}
    rows = []
    for key in sorted(keep, key=lambda k: (k[0], order[k])):
        sample = samples[key]
        task = tasks.setdefault(sample.task, get_task(sample.task))
        images = []
        for img in sample.images:
            if img.key not in thumbs:
                thumbs[img.key] = thumbnail_data_url(img.data)
            images.append(thumbs[img.key])
        rows.append(
            Row(
                task=sample.task,
                sample_id=sample.id,
                group=sample.group,
                prompt=task.prompt(sample).text,
                target=str(sample.target),
                images=images,
                answers=answers[key],
            )
        )
    return rows, total


def _load_shown_images(samples: dict[tuple[str, str], Any], joins: Sequence[Joined]) -> None:
    """Give the shown samples their images: runs are loaded without image bytes (see `load_run`)."""
    from vlmparity.runner import load_images

    plans = {t: p for j in joins for t, p in j.reference.plans.items()}
    by_task: dict[str, list[Any]] = {}
    for sample in samples.values():
        if sample.omitted_images:
            by_task.setdefault(sample.task, []).append(sample)
    for task, todo in by_task.items():
        for sample in load_images(plans[task], todo):
            samples[(task, sample.id)] = sample


def report_data(
    analyses: Sequence[Analysis], joins: Sequence[Joined], *, title: str = "vlmparity comparison"
) -> ReportData:
    """The HTML report's data for one reference and its candidates (analyses[i] from joins[i])."""
    from vlmparity import __version__

    if not analyses or len(analyses) != len(joins):
        raise ValueError("one analysis per joined candidate is needed")
    analyses = [labelled(a) for a in analyses]
    ref = joins[0].reference
    runs = [ref, *(j.candidate for j in joins)]
    comparisons = []
    for a in analyses:
        tasks = [t.task for t in a.tasks for _ in t.metrics]
        agreement = []
        for t in a.tasks:
            if t.raw_agreement is not None:
                agreement.append(AgreementInfo.from_stats(t.task, "raw", t.raw_agreement))
            if t.parsed_agreement is not None:
                agreement.append(AgreementInfo.from_stats(t.task, "parsed", t.parsed_agreement))
        comparisons.append(
            Comparison.from_verdict(
                a.candidate,
                a.verdict,
                tasks,
                agreement,
                policy=POLICY_DISPLAY.get(a.settings.policy, a.settings.policy),
                n_used={t.task: t.n_used for t in a.tasks},
            )
        )
        if a.problems:
            comparisons[-1].exit_code = a.exit_code
            comparisons[-1].reasons = [*a.problems, *comparisons[-1].reasons]
    worst = max(analyses, key=lambda a: _severity(a.verdict.verdict))
    problems = [p for a in analyses for p in a.problems]
    if len(analyses) == 1:
        label = worst.verdict.label
    else:
        label = "; ".join(f"{a.candidate}: {a.verdict.label}" for a in analyses)
    if problems:
        label += " — infrastructure failure, see the notes"
    reasons = [*problems, *(f"{a.candidate}: {r}" for a in analyses for r in a.verdict.reasons)]
    summary = VerdictSummary(worst.verdict.verdict, label, overall_exit_code(analyses), reasons)
    task_names = list(dict.fromkeys(t.task for a in analyses for t in a.tasks))
    rows, total = report_disagreements(analyses, joins)
    s = analyses[0].settings
    margins: dict[str, float] = {}
    for a in analyses:
        for t in a.tasks:
            for r in t.metrics:
                margins.setdefault(r.metric, r.margin)
    notes = _report_notes(analyses)
    return ReportData(
        reference=ref.label,
        backends=[backend(r) for r in runs],
        verdict=summary,
        comparisons=comparisons,
        tasks=[_task_summary(name, runs, analyses) for name in task_names],
        disagreements=rows,
        disagreements_total=total if total > len(rows) else None,
        alpha=s.alpha,
        margins=margins,
        generation=dict(ref.ref.run.config.get("generation") or {}),
        title=title,
        tool_version=__version__,
        generated_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        notes=notes,
    )


def _severity(verdict: str) -> int:
    return {v.EQUIVALENT: 0, v.INCONCLUSIVE: 1, v.NOT_EQUIVALENT: 2}.get(verdict, 1)


def _report_notes(analyses: Sequence[Analysis]) -> list[str]:
    s = analyses[0].settings
    out = []
    if s.policy == "answered":
        out.append(
            "Verdict policy: answered. Samples either endpoint failed are left out of the statistics "
            "(MME: the whole image); failures are judged by the error-rate gate "
            f"(--max-error-rate {100 * s.max_error_rate:g}%)."
        )
    else:
        out.append("Verdict policy: strict. A failed request counts as a wrong answer.")
    out.append(
        "The summary's values are paired values: the mean over the samples the verdict's policy uses, with "
        "an MMMU answer that has no option letter given a letter drawn per sample (identical answers pair "
        "identically). Each run's own scores under every policy (lmms-eval's sequential MMMU draw) are in "
        "the per-task tables below."
    )
    for a in analyses:
        other = a.other_verdict
        failed = a.health_a.failures + a.health_b.failures + a.health_a.missing + a.health_b.missing
        if other is not None and failed:
            out.append(
                f"{a.candidate}: under the {s.other_policy} policy the verdict would be {other.label}."
            )
        out += [f"{a.candidate}: {n}" for n in a.notes]
        out += [f"{a.candidate}: infrastructure failure: {p}" for p in a.problems]
    return out
