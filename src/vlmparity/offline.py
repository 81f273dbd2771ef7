"""Scoring lmms-eval `--log_samples` files without a server, for any registered task.

Each line is given to the task whose metric it holds (one of the task's `metric_names`), in doc_id order,
and the task's `score_logged` hook scores it as a live run would, so a new task's samples files score with
no edit here. The benchmark-specific importers (official MME result folders, MMMU predictions and raw
responses) live with their tasks: `vlmparity.tasks.mme_offline`, `vlmparity.tasks.mmmu_offline`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vlmparity.errors import DataError
from vlmparity.tasks.base import LoggedLine, OfflineScore, get_task, task_names

__all__ = ["OfflineScore", "read_lmms_samples", "score_lmms_samples"]


def _metric_label(names: Sequence[str]) -> str:
    """One task's metric keys for a message: one name, or the words they share around a `*` (`mme_*_score`)."""
    if len(names) == 1:
        return names[0]
    words = [n.split("_") for n in names]
    head = _shared_start(words)
    tail = _shared_start([w[len(head) :][::-1] for w in words])[::-1]
    return "_".join([*head, "*", *tail])


def _shared_start(seqs: Sequence[Sequence[str]]) -> list[str]:
    out: list[str] = []
    for items in zip(*seqs, strict=False):
        if any(x != items[0] for x in items):
            break
        out.append(items[0])
    return out


def _metric_owners() -> dict[str, str]:
    """Metric key -> the registered task that logs it."""
    return {metric: name for name in task_names() for metric in get_task(name).metric_names}


def _no_metric_error(where: str) -> DataError:
    names = task_names()
    labels = [_metric_label(get_task(n).metric_names) for n in names]
    both = " or ".join([", ".join(labels[:-1]), labels[-1]] if len(labels) > 1 else labels)
    tasks = " and ".join([", ".join(names[:-1]), names[-1]] if len(names) > 1 else names)
    return DataError(
        f"{where}: no {both} entry", hint=f"only lmms-eval samples files of {tasks} can be scored"
    )


def read_lmms_samples(paths: Sequence[Path]) -> dict[str, list[LoggedLine]]:
    """Lines of lmms-eval `--log_samples` files, grouped by task (detected from the metric keys)."""
    owners = _metric_owners()
    by_task: dict[str, list[LoggedLine]] = {}
    for path in _expand(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{path}: no such file", hint="check the path") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({exc})", hint="check the file") from None
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg})", hint="a samples .jsonl file"
                ) from None
            task = next((owners[k] for k in line if k in owners), None) if isinstance(line, dict) else None
            if task is None:
                raise _no_metric_error(f"{path}:{lineno}")
            by_task.setdefault(task, []).append((path, line))
    if not by_task:
        raise DataError("no samples found in the given files", hint="pass lmms-eval *_samples_*.jsonl files")
    return by_task


def _expand(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*samples*.jsonl"))
            if not found:
                raise DataError(
                    f"{p}: no *samples*.jsonl files in this folder", hint="pass the files themselves"
                )
            out.extend(found)
        else:
            out.append(p)
    return out


def _ordered(lines: list[LoggedLine], task: str) -> list[LoggedLine]:
    seen: dict[int, Path] = {}
    for path, line in lines:
        doc_id = line.get("doc_id")
        if not isinstance(doc_id, int):
            raise DataError(
                f"{path}: a {task} line has no integer doc_id", hint="is this an lmms-eval samples file?"
            )
        if doc_id in seen:
            raise DataError(
                f"{task} doc_id {doc_id} appears twice ({seen[doc_id].name}, {path.name})",
                hint="pass one samples file per task and run",
            )
        seen[doc_id] = path
    return sorted(lines, key=lambda pl: _doc_id(pl[1]))


def _doc_id(line: Any) -> int:
    return int(line["doc_id"])


def score_lmms_samples(paths: Sequence[Path], *, allow_partial_pairs: bool = False) -> list[OfflineScore]:
    """Score lmms-eval `--log_samples` files, one `OfflineScore` per task (tasks by name), each by its
    task's `score_logged` (MME re-parsed from `filtered_resps`; MMMU multiple-choice the logged letter)."""
    by_task = read_lmms_samples(paths)
    return [
        get_task(name).score_logged(_ordered(by_task[name], name), allow_partial_pairs=allow_partial_pairs)
        for name in sorted(by_task)
    ]
