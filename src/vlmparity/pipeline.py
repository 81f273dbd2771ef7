"""Run then compare, once: what `compare --endpoint` and the demo do after the endpoints answered.

`run_endpoints` runs through the runner with report's writers (run.json, lmms-eval files, exactly as
`vlmparity run`). `compare_run` compares exactly the plan that run made (its `plan_id`, pinned per
endpoint), reusing the plans it prepared, restricted to a sequential comparison's deciding look when a
look gate ran it; `analyse_joins` gives each candidate's verdict and token-level closeness.
Everything returns data: the CLI and the demo render it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vlmparity import runner
from vlmparity.report.run_summary import run_outputs

if TYPE_CHECKING:
    from vlmparity.compare.analysis import Analysis, Settings
    from vlmparity.compare.closeness import Closeness
    from vlmparity.compare.join import Joined
    from vlmparity.compare.looks import LookGate
    from vlmparity.config import RunConfig


@dataclass(frozen=True)
class Compared:
    """A run and its comparison: per candidate its join with the reference, analysis and closeness."""

    outcome: runner.RunOutcome
    joins: list[Joined]
    analyses: list[Analysis]
    closeness: list[Closeness]


def run_endpoints(
    config: RunConfig,
    *,
    plans: list[runner.TaskPlan] | None = None,
    argv: Sequence[str] = (),
    progress: runner.ProgressSink | None = None,
    gate: runner.Gate | None = None,
) -> runner.RunOutcome:
    """`runner.run` writing what `vlmparity run` writes (run.json, each endpoint's lmms-eval files)."""
    return runner.run(config, argv=argv, progress=progress, plans=plans, gate=gate, outputs=run_outputs())


def analyse_joins(
    joins: Sequence[Joined],
    settings: Settings | None,
    adjust: Callable[[Analysis, Joined], Analysis] | None = None,
) -> tuple[list[Analysis], list[Closeness]]:
    """Each join's analysis (`adjust`: a sequential comparison's verdict in place of the fixed-size one)
    and its token-level closeness (beside the verdict, never part of it)."""
    from vlmparity.compare.analysis import analyse
    from vlmparity.compare.closeness import closeness

    analyses = [analyse(j, settings) for j in joins]
    if adjust is not None:
        analyses = [adjust(a, j) for a, j in zip(analyses, joins, strict=True)]
    return analyses, [closeness(j) for j in joins]


def compare_run(
    outcome: runner.RunOutcome,
    *,
    reference: str,
    candidates: Sequence[str],
    settings: Settings | None,
    gate: LookGate | None = None,
    picks: Mapping[str, int] | None = None,
) -> Compared:
    """Compare exactly the plan `outcome`'s run made (its folder, its plan id, its prepared plans).

    `picks`: `compare --plan` choices for runs of the folder that this run did not make."""
    from vlmparity.compare.join import PlanKey, load_joins, seed_cache

    output = Path(outcome.config.options.output_path)
    names = [e.name for e in outcome.config.endpoints]
    pinned = (
        {(output.resolve(), name): outcome.plan_id for name in names} if outcome.plan_id is not None else {}
    )
    cache: dict[PlanKey, runner.TaskPlan] = {}
    seed_cache(cache, outcome.config.public(), outcome.plans)
    joins = load_joins(
        [output], reference=reference, candidates=candidates, cache=cache, plans=picks, pinned=pinned
    )
    adjust = None
    if gate is not None:
        from vlmparity.compare.looks import deciding_ids, restrict

        joins = [restrict([j], deciding_ids(gate, j.candidate.ref.endpoint))[0] for j in joins]
        adjust = gate.adjust
    analyses, close = analyse_joins(joins, settings, adjust)
    return Compared(outcome, joins, analyses, close)
