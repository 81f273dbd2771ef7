"""What the store's rows hold: endpoint runs, plans, samples and results, and the outcome classes."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from vlmparity.tokentrace import TokenTrace

# Outcome classes (DESIGN.md "Outcome"). An answered outcome carries the model's text and is scored as is;
# a failure carries no text and is scored per the two explicit policies.
ANSWERED = ("ok", "length", "empty")
FAILURES = ("http_error", "timeout", "connection", "unsupported", "malformed")
OUTCOMES = ANSWERED + FAILURES

# How a sample's request was treated under the multi-image policy.
TREATMENTS = ("full", "merged", "skipped")


@dataclass(frozen=True)
class RunRecord:
    """One endpoint's run inside a store (a resumed run keeps its row)."""

    run_id: int
    endpoint: str
    url: str
    kind: str
    model: str
    server_version: str | None
    image_limit: int | None
    created: float
    updated: float
    config: Mapping[str, Any]
    tool_version: str


@dataclass(frozen=True)
class PlanRecord:
    """One invocation's plan: which endpoints, and per task its data source (an absolute path for local
    data, else a hub id) and sampling (`limit`/`sample`/`seed`/`mode`). `completed` are the endpoints that
    finished every task of it; `status` is running | complete | incomplete | failed | interrupted."""

    plan_id: int
    created: float
    updated: float
    status: str
    endpoints: tuple[str, ...]
    completed: tuple[str, ...]
    tasks: Mapping[str, Mapping[str, Any]]  # task -> {"source": ..., "plan": {...}}
    config: Mapping[str, Any]
    stamp: str

    def complete_for(self, endpoint: str) -> bool:
        return endpoint in self.completed

    def describe(self, task: str) -> str:
        """E.g. 'plan #2 (limit 20, 2026-12-07 01:40)'."""
        return f"plan #{self.plan_id} ({describe_sampling(self.tasks[task].get('plan') or {})}, {self.when})"

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.created))


def describe_sampling(plan: Mapping[str, Any]) -> str:
    """'all', 'limit 20' or 'sample 250 seed 0' for a stored sampling plan."""
    if plan.get("sample") is not None:
        return f"sample {plan['sample']} seed {plan.get('seed', 0)}"
    if plan.get("limit") is not None:
        limit = float(plan["limit"])
        return f"limit {int(limit) if limit.is_integer() else limit:g}"
    return "all samples"


@dataclass(frozen=True)
class SampleRecord:
    """What was (or will be) sent for one sample, identical for every endpoint."""

    task: str
    sample_id: str
    doc_id: int
    request_hash: str
    image_count: int
    treatment: str = "full"


@dataclass(frozen=True)
class ResultRecord:
    """One endpoint's outcome for one sample (`text` is None unless the outcome is answered)."""

    run_id: int
    task: str
    sample_id: str
    request_hash: str
    outcome: str
    text: str | None = None
    finish_reason: str | None = None
    status: int | None = None
    server_message: str | None = None
    attempts: int = 1
    latency: float | None = None
    ttft: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    transient: bool = False
    created: float = 0.0
    error_body: str | None = None  # the failed request's response body as received (capped)
    trace: TokenTrace | None = None  # written to the `tokens` table; `results()` does not load it

    @property
    def answered(self) -> bool:
        return self.outcome in ANSWERED


def is_done(rec: ResultRecord, *, rerun_errors: bool = False) -> bool:
    """An answered result is final; a failure is final only if permanent and errors are not rerun."""
    if rec.answered:
        return True
    return not rec.transient and not rerun_errors
