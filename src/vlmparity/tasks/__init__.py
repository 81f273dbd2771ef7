"""Benchmarks: the `Task` protocol (the whole contract of a benchmark), its records, and the registry.

A benchmark is one module with a class implementing `Task`, registered with `register_task`; see
docs/architecture.md, "How to add a benchmark", and tests/test_toy_benchmark.py.
"""

from vlmparity.tasks.base import (
    ACCURACY,
    CLUSTER_SCORE,
    FALLBACK_PER_SAMPLE,
    FALLBACK_SEQUENTIAL,
    Answer,
    BreakdownTable,
    GroupScores,
    ImageData,
    ImagePart,
    LoggedLine,
    MetricSpec,
    OfflineScore,
    Prompt,
    Sample,
    SampleScore,
    Task,
    TaskResult,
    TextPart,
    get_task,
    register_task,
    task_names,
)
from vlmparity.tasks.schema import ColumnSpec, RowProblem, TaskSchema

__all__ = [
    "ACCURACY",
    "CLUSTER_SCORE",
    "FALLBACK_PER_SAMPLE",
    "FALLBACK_SEQUENTIAL",
    "Answer",
    "BreakdownTable",
    "ColumnSpec",
    "GroupScores",
    "ImageData",
    "ImagePart",
    "LoggedLine",
    "MetricSpec",
    "OfflineScore",
    "Prompt",
    "RowProblem",
    "Sample",
    "SampleScore",
    "Task",
    "TaskResult",
    "TaskSchema",
    "TextPart",
    "get_task",
    "register_task",
    "task_names",
]
