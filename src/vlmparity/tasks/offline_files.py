"""Helpers the tasks' offline importers share: reading JSON files and lmms-eval sample lines, one-line errors."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vlmparity.errors import DataError
from vlmparity.tasks.base import TaskResult


def read_json(path: Path) -> Any:
    """A JSON file's value, or one `DataError` naming the file and what is wrong with it."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})", hint="check the file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})", hint="check the file"
        ) from None


def json_kind(value: Any) -> str:
    """JSON's name of a value's type (object, array, string, ...), for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def filtered_text(line: Mapping[str, Any], where: str) -> str:
    """The `filtered_resps` text of an lmms-eval samples line (unwrapping lists; null is "")."""
    value: Any = line.get("filtered_resps")
    while isinstance(value, list):  # lmms-eval writes a string; some writers wrap it in lists
        value = value[0] if value else ""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise DataError(f"{where}: filtered_resps is not text", hint="is this an lmms-eval samples file?")
    return value


def with_count(result: TaskResult, key: str, value: int) -> TaskResult:
    """`result` with one more entry in its counts."""
    return TaskResult(
        task=result.task,
        metrics=result.metrics,
        breakdown=result.breakdown,
        n=result.n,
        counts={**result.counts, key: value},
    )
