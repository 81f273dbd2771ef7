"""lmms-eval-compatible output files: `<timestamp>_results.json` and `<timestamp>_samples_<task>.jsonl`.

Keys and their order follow lmms-eval 0.7.3 (research/lmms-eval.md §5.2, §5.3) wherever they mean
something for an API model; what only vlmparity knows (both scoring policies, outcome counts,
intervals, the outcome of each sample) goes under an extra trailing `vlmparity` key that lmms-eval
readers ignore. Pure formatting: every number arrives computed.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from vlmparity.errors import DataError
from vlmparity.tasks.base import Task

if TYPE_CHECKING:
    from vlmparity.runner import TaskPlan, TaskScore

# lmms-eval's text for a request that failed after its retries (research §4.5); kept so that tools
# reading lmms-eval sample logs see a failure where lmms-eval would have written one.
FAILED_PREFIX = "[LMMS_EVAL_REQUEST_FAILED"  # tasks/failure_text.py builds the full text


def failure_text(attempts: int, message: str | None) -> str:
    """The `filtered_resps` lmms-eval writes for a request that failed."""
    return f"{FAILED_PREFIX} after {attempts} retries] {(message or '')[:200]}"


def timestamp(when: float | None = None) -> str:
    """lmms-eval's file-name date: YYYYMMDD_HHMMSS (local time)."""
    return time.strftime("%Y%m%d_%H%M%S", time.localtime(time.time() if when is None else when))


def sanitize_model_name(name: str) -> str:
    """lmms-eval's model_name_sanitized: the last two '/' parts, special characters runs as '__'."""
    tail = "/".join(name.split("/")[-2:])
    return re.sub(r'["<>:/\\|?*\[\]]+', "__", tail)


@dataclass(frozen=True)
class TaskOutput:
    """One task's numbers for results.json (the lmms-eval policy in `metrics`)."""

    task: str
    metrics: Mapping[str, float]  # metric -> value, e.g. {"mme_perception_score": 1500.0}
    stderr_clt: Mapping[str, float | str] = field(default_factory=dict)  # metric -> value or "N/A"
    artifact_keys: Sequence[str] = ()  # keys lmms-eval emits as empty lists (MMMU pass_at_k, submission)
    n_original: int = 0
    n_effective: int = 0
    config: Mapping[str, Any] = field(default_factory=dict)  # the task's config dump
    version: str | float = 0.0
    task_hash: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)  # vlmparity: policies, counts, intervals


def task_results_entry(out: TaskOutput) -> dict[str, Any]:
    """The `results[task]` dict: alias, then per metric its value and stderr keys (sorted by metric)."""
    entry: dict[str, Any] = {"alias": out.task}
    for metric in sorted(out.metrics):
        entry[f"{metric},none"] = out.metrics[metric]
        entry[f"{metric}_stderr,none"] = "N/A"
        entry[f"{metric}_stderr_clt,none"] = out.stderr_clt.get(metric, "N/A")
        entry[f"{metric}_stderr_clustered,none"] = "N/A"
    for key in out.artifact_keys:
        entry[f"{key},none"] = []
        entry[f"{key}_stderr,none"] = []
    return entry


def results_document(
    outputs: Sequence[TaskOutput],
    *,
    model: str,
    model_args: str,
    gen_kwargs: Mapping[str, Any],
    limit: float | None,
    start_time: float,
    end_time: float,
    tool_version: str,
    resolved_cli_args: Mapping[str, Any] | None = None,
    usage: Mapping[str, Any] | None = None,
    throughput: Mapping[str, Any] | None = None,
    vlmparity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The results.json document, keys in lmms-eval's insertion order."""
    ordered = sorted(outputs, key=lambda o: o.task)
    doc: dict[str, Any] = {
        "results": {o.task: task_results_entry(o) for o in ordered},
        "group_subtasks": {o.task: [] for o in ordered},
        "configs": {o.task: dict(o.config) for o in ordered},
        "versions": {o.task: o.version for o in ordered},
        "n-shot": {o.task: 0 for o in ordered},
        "higher_is_better": {o.task: dict.fromkeys(sorted(o.metrics), True) for o in ordered},
        "n-samples": {o.task: {"original": o.n_original, "effective": o.n_effective} for o in ordered},
        "config": {
            "model": "openai",
            "model_args": model_args,
            "model_backend": "vlmparity (OpenAI-compatible chat)",
            "batch_size": "1",
            "batch_sizes": [],
            "device": None,
            "use_cache": None,
            "limit": limit,
            "offset": 0,
            "bootstrap_iters": 0,
            "gen_kwargs": dict(gen_kwargs),
            "random_seed": 0,
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
            "resolved_cli_args": dict(resolved_cli_args or {}),
        },
        "git_hash": None,
        "git_branch": None,
        "lmms_eval_version": None,
        "vlmparity_version": tool_version,
        "date": start_time,
    }
    if throughput is not None:
        doc["throughput"] = dict(throughput)
    doc["usage"] = dict(usage or {})
    doc["task_hashes"] = {o.task: o.task_hash for o in ordered if o.task_hash}
    doc["model_source"] = "openai"
    doc["model_name"] = model
    doc["model_name_sanitized"] = sanitize_model_name(model)
    doc["system_instruction"] = None
    doc["system_instruction_sha"] = None
    doc["fewshot_as_multiturn"] = False
    doc["chat_template"] = None
    doc["chat_template_sha"] = None
    doc["start_time"] = start_time
    doc["end_time"] = end_time
    doc["total_evaluation_time_seconds"] = str(end_time - start_time)
    if vlmparity is not None:
        doc["vlmparity"] = dict(vlmparity)
    return doc


def doc_hash(sample_id: str, fields: Mapping[str, Any], target: str) -> str:
    """A stable per-document hash (lmms-eval hashes the doc; ours covers the id, fields and answer)."""
    payload = orjson.dumps(
        {"id": sample_id, "target": target, "fields": fields}, option=orjson.OPT_SORT_KEYS, default=str
    )
    return hashlib.sha256(payload).hexdigest()


def task_hash(doc_hashes: Iterable[str]) -> str:
    """A hash over the per-document hashes, in document order."""
    h = hashlib.sha256()
    for d in doc_hashes:
        h.update(d.encode())
    return h.hexdigest()


def sample_line(
    *,
    doc_id: int,
    target: str,
    raw_text: str | None,
    filtered_text: str,
    token_counts: Mapping[str, int | None] | None,
    doc_hash_value: str,
    details: Mapping[str, Any],
    input_text: str,
    vlmparity: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One `--log_samples` line, keys in lmms-eval's order (`resps` only when it differs)."""
    line: dict[str, Any] = {"doc_id": doc_id, "target": str(target)}
    # lmms-eval 0.7.3's writer unwraps the one-response lists of a generate_until doc: both are strings.
    if raw_text is not None and raw_text != filtered_text:
        line["resps"] = raw_text
    line["filtered_resps"] = filtered_text
    counts = {k: v for k, v in (token_counts or {}).items() if v is not None}
    line["token_counts"] = [counts] if counts else []
    line["doc_hash"] = doc_hash_value
    line.update(details)
    line["input"] = input_text
    if vlmparity is not None:
        line["vlmparity"] = dict(vlmparity)
    return line


def _dumps(obj: Any) -> bytes:
    return orjson.dumps(obj, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS, default=_default)


def _default(obj: Any) -> Any:
    if isinstance(obj, float) and math.isnan(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write a whole file or nothing (a killed run never leaves half a results.json).

    Whatever stops it (a full disk, a folder where the file should be, Ctrl-C) removes the temporary file;
    a file system error is one line naming the file (exit 3).
    """
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            raise write_error(path, exc) from exc
        raise


def write_error(path: Path, exc: OSError) -> DataError:
    """One line for a file that cannot be written."""
    reason = exc.strerror or str(exc)
    if isinstance(exc, IsADirectoryError) or (path.is_dir() and not path.is_symlink()):
        reason = "a folder of that name is in the way"
    elif path.parent.exists() and not path.parent.is_dir():
        reason = f"{path.parent} is a file, not a folder"
    return DataError(
        f"cannot write {path}: {reason}",
        hint="every answer is in the run store; fix this, then rerun the same command to write the files",
    )


def write_results_json(path: Path, document: Mapping[str, Any]) -> Path:
    """Write results.json (indented like lmms-eval's)."""
    _atomic_write(
        path, orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS, default=_default)
    )
    return path


def write_samples_jsonl(path: Path, lines: Iterable[Mapping[str, Any]]) -> Path:
    """Write one JSON object per line, in document order."""
    _atomic_write(path, b"".join(_dumps(line) + b"\n" for line in lines))
    return path


def results_path(output_dir: Path, endpoint: str, stamp: str) -> Path:
    return Path(output_dir) / endpoint / f"{stamp}_results.json"


def samples_path(output_dir: Path, endpoint: str, stamp: str, task: str) -> Path:
    return Path(output_dir) / endpoint / f"{stamp}_samples_{task}.jsonl"


def free_stamp(output_dir: Path, endpoints: Iterable[str], started: float) -> str:
    """lmms-eval's stamp of `started`, or of the first later second that no earlier invocation's files use.

    Stamps have one-second resolution, so two invocations within a second (a resume of a finished run is
    that fast) would overwrite each other's results; the later one takes the next free second instead,
    which keeps lmms-eval's format and sorts after the earlier files.
    """
    dirs = [d for d in (Path(output_dir) / name for name in endpoints) if d.is_dir()]

    def taken(candidate: str) -> bool:
        return any(
            any(d.glob(f"{candidate}_results.json")) or any(d.glob(f"{candidate}_samples_*.jsonl"))
            for d in dirs
        )

    second = 0
    while taken(candidate := timestamp(started + second)):
        second += 1
    return candidate


# ----- from a scored run ------------------------------------------------------------------------------


def gen_kwargs_for(plan: TaskPlan, generation: Mapping[str, Any]) -> dict[str, Any]:
    """The generation parameters actually sent for a task (lmms-eval's names where they exist)."""
    max_tokens = generation.get("max_tokens")
    if max_tokens is None:
        max_tokens = plan.task.max_tokens
    out: dict[str, Any] = {"max_new_tokens": max_tokens, "temperature": generation.get("temperature", 0.0)}
    out["top_p"] = generation.get("top_p", 1.0)
    if generation.get("seed") is not None:
        out["seed"] = generation["seed"]
    return out


def task_output(score: TaskScore, plan: TaskPlan, generation: Mapping[str, Any]) -> TaskOutput:
    """results.json numbers of one task: the lmms-eval policy, with vlmparity's extras aside."""
    result = score.lmms_eval.result
    clt = result.breakdown.get("stderr_clt", {}) or {}
    hashes = [doc_hash(s.id, _jsonable_fields(s.fields), s.target) for s in score.samples]
    config = {
        "task": plan.task.name,
        "dataset_path": plan.source,
        "test_split": plan.task.split,
        "output_type": "generate_until",
        "generation_kwargs": gen_kwargs_for(plan, generation),
        "metric_list": [{"metric": m, "higher_is_better": True} for m in sorted(result.metrics)],
    }
    return TaskOutput(
        task=plan.task.name,
        metrics=dict(result.metrics),
        stderr_clt={m: (v if v is not None else "N/A") for m, v in clt.items() if m in result.metrics},
        artifact_keys=tuple(plan.task.artifact_keys),  # per-sample keys lmms-eval emits unaggregated
        n_original=plan.plan.total,
        n_effective=len(score.samples),
        config=config,
        version=plan.task.lmms_version,  # lmms-eval's `versions` entry (research §5.2)
        task_hash=task_hash(hashes),
        extra=policies_record(score),
    )


def _interval_dict(intervals: Mapping[str, Any]) -> dict[str, Any]:
    return {m: iv.as_dict() for m, iv in intervals.items()}


def policies_record(score: TaskScore) -> dict[str, Any]:
    """The three scoring policies side by side with counts and intervals (the `vlmparity` block of
    results.json, keys `lmms_eval`, `strict`, `answered`)."""
    out: dict[str, Any] = {}
    for pol in score.policies:
        out[pol.policy] = {
            "metrics": dict(pol.result.metrics),
            "n": pol.n,
            "n_correct": pol.n_correct,
            "accuracy": pol.accuracy.as_dict() if pol.accuracy else None,
            "intervals": _interval_dict(pol.intervals),
            "counts": dict(pol.result.counts),
            "breakdown": dict(pol.result.breakdown),
        }
    out["outcomes"] = dict(score.outcomes)
    out["skipped"] = score.skipped
    out["merged"] = score.merged
    out["random_fallback"] = score.random_fallbacks
    return out


def _jsonable_fields(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if isinstance(v, str | int | float | bool | list | type(None))}


def sample_lines(score: TaskScore, task: Task) -> list[dict[str, Any]]:
    """The `--log_samples` lines of one task, in document order.

    A failure is logged as lmms-eval logs a failed request: the text lmms-eval would have recorded for it
    (`[LMMS_EVAL_REQUEST_FAILED after N retries] ...`, the lmms-eval policy's) as the raw and the filtered
    response, so re-scoring the file gives the lmms-eval policy's scores.
    """
    from vlmparity.tasks.reasoning import postprocess_response

    tags = task.reasoning_tags
    lines = []
    for sample, rec, answer, sc in zip(
        score.samples, score.records, score.answers, score.scores, strict=True
    ):
        lmms_text = answer.text if answer.text is not None else score.failure_texts.get(sample.id)
        if lmms_text is not None:
            raw: str | None = lmms_text
            filtered = postprocess_response(lmms_text, tags)
        else:  # no stored result (an unfinished run): scored wrong, with no random draw
            raw = failure_text(0, answer.outcome)
            filtered = ""
        prompt = task.prompt(sample)
        extra = {
            "sample_id": sample.id,
            "outcome": answer.outcome,
            "treatment": score.treatments.get(sample.id, "full"),
            "random_fallback": sc.random_fallback,
        }
        if rec is not None:
            extra |= {
                "request_hash": rec.request_hash,
                "finish_reason": rec.finish_reason,
                "status": rec.status,
                "server_message": rec.server_message,
                "attempts": rec.attempts,
                "latency": rec.latency,
                "ttft": rec.ttft,
            }
        lines.append(
            sample_line(
                doc_id=sample.doc_id,
                target=sample.target,
                raw_text=raw,
                filtered_text=filtered,
                token_counts={
                    "input_tokens": rec.prompt_tokens if rec else None,
                    "output_tokens": rec.completion_tokens if rec else None,
                },
                doc_hash_value=doc_hash(sample.id, _jsonable_fields(sample.fields), sample.target),
                details=sc.details,
                input_text=prompt.text,
                vlmparity=extra,
            )
        )
    return lines
