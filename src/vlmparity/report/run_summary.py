"""What a run leaves behind and prints: `run.json` provenance, each endpoint's lmms-eval files, the
both-policies table and the one-line speed summary per endpoint.

Never writes a secret: the configuration is the masked public one and the command line is masked.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmparity.report import lmms_output
from vlmparity.report.formatting import fmt_value
from vlmparity.report.tables import markdown_table
from vlmparity.store import STORE_FILENAME

if TYPE_CHECKING:
    from vlmparity.config import RunConfig
    from vlmparity.runner import EndpointRun, RunState, SessionStats, TaskPlan, TaskScore
    from vlmparity.store import PlanRecord

RUN_JSON = "run.json"


def _endpoint_record(ep: EndpointRun) -> dict[str, Any]:
    from vlmparity.masking import mask_url, scrub_obj

    r = ep.resolved
    return scrub_obj(  # type: ignore[no-any-return]
        {
            "name": ep.name,
            "url": mask_url(r.url),
            "chat_url": mask_url(r.chat_url),
            "kind": str(r.kind.value),
            "server_version": r.server_version,
            "model": r.model,
            "served_models": list(r.served_models),
            "max_model_len": r.max_model_len,
            "probe_notes": list(r.notes),
            "image_limit": ep.limit,  # found by the start-up probe (it decides --multi-image skip|merge)
            "image_limit_refused": ep.learned_limit,  # the smallest "At most N image(s)" refusal seen
        }
    )


def _plan_record(plan: TaskPlan) -> dict[str, Any]:
    record = plan.plan.to_dict()
    record.pop("ids", None)  # the fingerprint and the store identify the samples
    return {"source": plan.source, "fingerprint": dict(plan.fingerprint), "plan": record}


def _scores_record(scores: Sequence[TaskScore]) -> dict[str, Any]:
    return {s.task: lmms_output.policies_record(s) for s in scores}


def plan_summary(p: PlanRecord) -> dict[str, Any]:
    """One invocation's plan as run.json lists it."""
    return {
        "plan_id": p.plan_id,
        "created": p.created,
        "status": p.status,
        "endpoints": list(p.endpoints),
        "completed": list(p.completed),
        "stamp": p.stamp,
        "tasks": {t: dict(spec) for t, spec in p.tasks.items()},
    }


def session_record(s: SessionStats) -> dict[str, Any]:
    """Speed figures of one endpoint in this invocation."""
    lat = sorted(s.latencies)
    return {
        "sent": s.sent,
        "not_sent": s.not_sent,
        "errors": s.errors,
        "retries": s.retries,
        "wall_s": round(s.wall_s, 3),
        "req_per_s": round(s.sent / s.wall_s, 3) if s.wall_s > 0 else None,
        "latency_p50_s": _quantile(lat, 0.5),
        "latency_p95_s": _quantile(lat, 0.95),
        "ttft_p50_s": _quantile(sorted(s.ttfts), 0.5),
        "output_tokens": s.output_tokens,
        "output_tokens_per_s": round(s.output_tokens / s.wall_s, 3) if s.wall_s > 0 else None,
    }


def _quantile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    if len(values) == 1:
        return round(values[0], 4)
    return round(statistics.quantiles(values, n=100, method="inclusive")[round(q * 100) - 1], 4)


def write_run_json(state: RunState) -> Path:
    """Write `run.json` (provenance, plans, results summary); rewritten at the end of each invocation.

    `failure`: the one-line reason an invocation stopped early (status "failed"; answers already stored
    are kept and the next invocation resumes from them); `interrupted`: the signal that stopped it
    (status "interrupted", the signal's name under "signal").

    `run.json` describes the latest invocation (`plan_id`); `plans` lists every invocation's plan kept in
    the store (a folder reused with other tasks or samples keeps each), `compare`/`report` pick from them.
    """
    from vlmparity import __version__
    from vlmparity.config import mask_argv
    from vlmparity.masking import MIN_SECRET_CHARS, scrub_obj

    config, plans, errors = state.config, state.plans, state.errors
    public = config.public()
    doc: dict[str, Any] = {
        "tool": "vlmparity",
        "tool_version": __version__,
        "command": mask_argv(list(state.argv), state.secrets),
        "started": state.started,
        "finished": state.finished,
        "status": (
            "interrupted"
            if state.interrupted is not None
            else "failed"
            if state.failure is not None
            else "running"
            if state.finished is None
            else ("incomplete" if errors else "complete")
        ),
        "endpoints": [_endpoint_record(ep) for ep in state.endpoints],
        "tasks": {p.task.name: _plan_record(p) for p in plans},
        "generation": public["generation"],
        "generation_by_task": {
            p.task.name: lmms_output.gen_kwargs_for(p, public["generation"]) for p in plans
        },
        "images": {"format": config.options.image_format, "png_compress_level": config.options.png_level},
        "options": public["options"],
        "configured_endpoints": public["endpoints"],
        "store": STORE_FILENAME,
    }
    if state.plan_id is not None:
        doc["plan_id"] = state.plan_id
    if state.plans_made is not None:
        doc["plans"] = [plan_summary(p) for p in state.plans_made]
    if state.scores is not None:
        doc["results"] = {name: _scores_record(s) for name, s in state.scores.items()}
    if state.sessions is not None:
        doc["sessions"] = {s.endpoint: session_record(s) for s in state.sessions}
    if state.files is not None:
        doc["files"] = {k: list(v) for k, v in state.files.items()}
    if errors:
        doc["errors"] = dict(errors)
    if state.failure is not None:
        doc["failure"] = state.failure
    if state.interrupted is not None:
        doc["signal"] = state.interrupted
    path = Path(config.options.output_path) / RUN_JSON
    lmms_output.write_results_json(path, scrub_obj(doc, state.secrets))
    text = path.read_text(encoding="utf-8")
    # belt and braces: a secret must never reach the disk (shorter ones cannot be told from other text)
    if any(s and len(s) >= MIN_SECRET_CHARS and s in text for s in state.secrets):
        path.unlink()
        raise RuntimeError("refusing to write run.json: it would contain a secret")
    return path


def write_endpoint_outputs(
    config: RunConfig,
    plans: Sequence[TaskPlan],
    ep: EndpointRun,
    scores: Sequence[TaskScore],
    *,
    stamp: str,
    started: float,
    finished: float,
) -> list[Path]:
    """Write `<endpoint>/<stamp>_results.json` and, with --log-samples, one samples file per task."""
    from vlmparity.masking import scrub_obj

    out_dir = Path(config.options.output_path)
    generation = config.public()["generation"]
    outputs = [lmms_output.task_output(s, p, generation) for s, p in zip(scores, plans, strict=True)]
    limit = config.plan.limit
    doc = lmms_output.results_document(
        outputs,
        model=ep.resolved.model,
        model_args=f"model={ep.resolved.model},base_url={_public_url(ep.resolved.chat_url)}",
        gen_kwargs=generation,
        limit=float(limit) if limit is not None else None,
        start_time=started,
        end_time=finished,
        tool_version=_tool_version(),
        resolved_cli_args={"tasks": list(config.tasks), "endpoint": ep.name},
        vlmparity={
            "endpoint": _endpoint_record(ep),
            "tasks": {o.task: dict(o.extra) for o in outputs},
            "plan": {p.task.name: _plan_record(p)["plan"] for p in plans},
        },
    )
    # Samples files first, results.json last: each file is written atomically, so a kill in between
    # leaves no results.json whose samples files are missing (a results.json means a complete set).
    paths = []
    if config.options.log_samples:
        for score, plan in zip(scores, plans, strict=True):
            path = lmms_output.samples_path(out_dir, ep.name, stamp, plan.task.name)
            paths.append(lmms_output.write_samples_jsonl(path, lmms_output.sample_lines(score, plan.task)))
    paths.append(
        lmms_output.write_results_json(
            lmms_output.results_path(out_dir, ep.name, stamp), scrub_obj(doc, patterns=False)
        )
    )
    return paths


def _public_url(url: str) -> str:
    from vlmparity.masking import mask_url

    return mask_url(url)


def _tool_version() -> str:
    from vlmparity import __version__

    return __version__


# ----- terminal text ---------------------------------------------------------------------------------


def _fmt_metric(value: float, metric: str) -> str:
    # one format everywhere (report.formatting): scores in points, accuracies as percentages
    return fmt_value(value, "points" if metric.endswith("_score") else "fraction")


def _fmt_interval(iv: Any, metric: str) -> str:
    if iv is None:
        return ""
    return f"[{_fmt_metric(iv.low, metric)}, {_fmt_metric(iv.high, metric)}]"


def policies_table(scores: Sequence[TaskScore]) -> str:
    """The three scoring policies side by side per metric (lmms-eval, strict, answered), each with its
    95 % interval and the questions it scored."""
    from vlmparity.runner import POLICY_LABELS

    rows = []
    for s in sorted(scores, key=lambda x: x.task):
        pols = s.policies
        for metric in sorted(s.lmms_eval.result.metrics):
            row = [s.task, metric]
            for pol in pols:
                value = pol.result.metrics.get(metric) if pol.n else None  # nothing left to score
                row += [
                    _fmt_metric(value, metric) if value is not None else "N/A",
                    _fmt_interval(pol.intervals.get(metric), metric),
                    str(pol.n),
                ]
            rows.append(row)
        if s.lmms_eval.accuracy is not None:
            row = [s.task, "question accuracy"]
            for pol in pols:
                acc = pol.accuracy
                row += [
                    _fmt_metric(acc.estimate, "acc") if acc else "N/A",
                    _fmt_interval(acc, "acc"),
                    str(pol.n),
                ]
            rows.append(row)
    headers = ["Task", "Metric"]
    for name in ("lmms_eval", "strict", "answered"):
        headers += [POLICY_LABELS[name], "95% CI", "n"]
    return markdown_table(headers, rows)


def outcomes_line(score: TaskScore) -> str:
    """Counts of every outcome class, skips, merges and random fallbacks (tasks that have one) for one task."""
    parts = [f"{k}={v}" for k, v in sorted(score.outcomes.items())]
    if score.skipped:
        parts.append(f"skipped={score.skipped}")
    if score.merged:
        parts.append(f"merged={score.merged}")
    if "random_fallback" in score.lmms_eval.result.counts:  # a task with a random fallback (MMMU)
        parts.append(f"random_fallback={score.random_fallbacks}")
    return f"{score.endpoint} {score.task}: " + ", ".join(parts)


def summary_line(s: SessionStats) -> str:
    """One line per endpoint: wall time, req/s, p50/p95 latency, TTFT, output tokens/s."""
    r = session_record(s)
    if s.sent == 0 and s.not_sent == 0:
        return f"{s.endpoint}: nothing to send, every answer was already in the store"

    def sec(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}s"

    parts = [
        f"{s.endpoint}: {s.sent} requests in {s.wall_s:.1f}s",
        f"{r['req_per_s'] or 0:.2f} req/s",
        f"latency p50 {sec(r['latency_p50_s'])} p95 {sec(r['latency_p95_s'])}",
    ]
    if r["ttft_p50_s"] is not None:
        parts.append(f"TTFT p50 {sec(r['ttft_p50_s'])}")
    parts.append(f"{r['output_tokens_per_s'] or 0:.1f} output tok/s")
    if s.errors:
        parts.append(f"{s.errors} errors")
    if s.not_sent:
        parts.append(f"{s.not_sent} not sent")
    if s.retries:
        parts.append(f"{s.retries} retries")
    return ", ".join(parts)


class RunFiles:
    """The files of a `vlmparity run` (`runner.RunOutputs`): run.json and each endpoint's lmms-eval files."""

    def check(self, config: RunConfig) -> None:
        check_endpoint_folders(config)

    def stamp(self, config: RunConfig, started: float) -> str:
        names = [e.name for e in config.endpoints]
        return lmms_output.free_stamp(config.options.output_path, names, started)

    def run_summary(self, state: RunState) -> Path:
        return write_run_json(state)

    def endpoint_files(
        self,
        config: RunConfig,
        plans: Sequence[TaskPlan],
        endpoint: EndpointRun,
        scores: Sequence[TaskScore],
        *,
        stamp: str,
        started: float,
        finished: float,
    ) -> list[Path]:
        return write_endpoint_outputs(
            config, plans, endpoint, scores, stamp=stamp, started=started, finished=finished
        )


def run_outputs() -> RunFiles:
    """The writers `vlmparity run` hands to `runner.run` (`outputs=`)."""
    return RunFiles()


def check_endpoint_folders(config: RunConfig) -> None:
    """Before anything is sent: nothing is in the way of each endpoint's folder for its lmms-eval files
    (a file of that name would otherwise stop the run only after every answer was received)."""
    from vlmparity.errors import DataError

    out = config.options.output_path
    for ep in config.endpoints:
        folder = out / ep.name
        if folder.exists() and not folder.is_dir():
            raise DataError(
                f"{folder} is a file: endpoint {ep.name!r} writes its lmms-eval files into a folder of that name",
                hint="move it away, or use another --output-path",
            )
