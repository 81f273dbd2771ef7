"""lmms-eval-compatible output files: `<timestamp>_results.json` and `<timestamp>_samples_<task>.jsonl`.

Keys and their order follow lmms-eval 0.7.3 (research/lmms-eval.md §5.2, §5.3) wherever they mean
something for an API model; what only vlmparity knows (both scoring policies, outcome counts,
intervals, the outcome of each sample) goes under an extra trailing `vlmparity` key that lmms-eval
readers ignore. Pure formatting: every number arrives computed.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

# lmms-eval's text for a request that failed after its retries (research §4.5); kept so that tools
# reading lmms-eval sample logs see a failure where lmms-eval would have written one.
FAILED_PREFIX = "[LMMS_EVAL_REQUEST_FAILED"


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
    """One task's numbers for results.json (lmms-eval parity policy in `metrics`)."""

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
    if raw_text is not None and raw_text != filtered_text:
        line["resps"] = [[raw_text]]
    line["filtered_resps"] = [filtered_text]
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
    """Write a whole file or nothing (a killed run never leaves half a results.json)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
