"""What a run hands to the files its caller wants written: the runner writes no file of its own besides
the store. `vlmparity run` passes report's writers (`report.run_summary.run_outputs()`: run.json and each
endpoint's lmms-eval files); a library caller may pass none (everything is in the store)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from vlmparity.config import RunConfig
from vlmparity.runner.engine import EndpointRun, SessionStats
from vlmparity.runner.plan import TaskPlan
from vlmparity.runner.scoring import TaskScore

if TYPE_CHECKING:
    from vlmparity.store import PlanRecord


@dataclass(frozen=True)
class RunState:
    """Where an invocation stands, for its summary (run.json): written when it starts, when it ends and
    when it fails. `failure`: the one-line reason it stopped early; `interrupted`: the signal that did."""

    config: RunConfig
    plans: Sequence[TaskPlan]
    endpoints: Sequence[EndpointRun]
    argv: Sequence[str]
    secrets: Sequence[str]
    started: float
    finished: float | None = None
    scores: Mapping[str, Sequence[TaskScore]] | None = None
    sessions: Sequence[SessionStats] | None = None
    files: Mapping[str, Sequence[str]] | None = None
    errors: Mapping[str, str] | None = None
    failure: str | None = None
    plan_id: int | None = None
    plans_made: Sequence[PlanRecord] | None = None
    interrupted: str | None = None


class RunOutputs(Protocol):
    """The writers of a run's files, supplied by the caller (`run(..., outputs=)`)."""

    def check(self, config: RunConfig) -> None:
        """Before any endpoint is contacted: raise if a file could not be written later (a file where a
        folder must go), so that the run does not fail only after every answer was received."""

    def stamp(self, config: RunConfig, started: float) -> str:
        """The invocation's stamp (names its files; stored with its plan)."""

    def run_summary(self, state: RunState) -> Path:
        """Write the invocation's summary (run.json); return its path."""

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
    ) -> Sequence[Path]:
        """Write one finished endpoint's files (lmms-eval's results and samples); return their paths."""


def default_stamp(started: float) -> str:
    """lmms-eval's file-name date of `started`: YYYYMMDD_HHMMSS (local time)."""
    return time.strftime("%Y%m%d_%H%M%S", time.localtime(started))
