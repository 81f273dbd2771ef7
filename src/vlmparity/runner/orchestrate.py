"""One run, end to end: `run` checks everything local (store, data), resolves and checks the endpoints,
probes what matters, dispatches through the `Engine`, scores every finished endpoint from the store and
hands the results to the caller's writers (`RunOutputs`)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from vlmparity.config import RunConfig
from vlmparity.errors import VlmparityError
from vlmparity.interrupt import run_async, signal_of
from vlmparity.runner.engine import EndpointRun, Engine, Gate, SessionStats
from vlmparity.runner.outputs import RunOutputs, RunState, default_stamp
from vlmparity.runner.plan import TaskPlan, check_fingerprints, plan_spec, prepare
from vlmparity.runner.progress import NullProgress, ProgressSink
from vlmparity.runner.scoring import TaskScore, score_endpoint
from vlmparity.runner.startup import (
    decide_logprobs,
    endpoint_identity,
    identity_changes,
    identity_error,
    probe_limits,
    resolve_all,
)
from vlmparity.store import Store


@dataclass
class RunOutcome:
    """What `run` did: per endpoint its resolution, scores, files written and session statistics."""

    config: RunConfig
    plans: list[TaskPlan]
    endpoints: list[EndpointRun]
    scores: dict[str, list[TaskScore]]  # endpoint -> one TaskScore per task
    sessions: list[SessionStats]
    files: dict[str, list[str]]  # endpoint -> paths written
    run_json: str  # the summary's path ("" when the caller wrote none)
    started: float
    finished: float
    errors: dict[str, str] = field(default_factory=dict)  # endpoint -> why it did not finish
    plan_id: int | None = None  # this invocation's plan in the store (`compare` uses exactly it)


def run(
    config: RunConfig,
    *,
    argv: Sequence[str] = (),
    progress: ProgressSink | None = None,
    plans: list[TaskPlan] | None = None,
    stamp: str | None = None,
    gate: Gate | None = None,
    outputs: RunOutputs | None = None,
) -> RunOutcome:
    """Evaluate every endpoint on every task, persist each answer, score from the store, write outputs.

    `outputs`: the writers of run.json and each endpoint's lmms-eval files (`vlmparity run` passes
    `report.run_summary.run_outputs()`); None writes no file besides the store. `gate`: a sequential
    comparison's look gate; when it stops the run early, the endpoints are not scored (their lmms-eval
    files would count every sample not sent as wrong): `compare` reads the store itself.

    The output folder is locked for the whole run (`vlmparity.lock`): a second invocation on it stops.
    """
    from vlmparity.lock import hold

    with hold(config.options.output_path, "vlmparity run"):
        return _Run(config, argv, progress, gate, outputs).execute(plans, stamp)


class _Run:
    """One invocation of `run` (its state while it goes)."""

    def __init__(
        self,
        config: RunConfig,
        argv: Sequence[str],
        progress: ProgressSink | None,
        gate: Gate | None,
        outputs: RunOutputs | None,
    ) -> None:
        self.config = config
        self.argv = argv
        self.progress = progress
        self.gate = gate
        self.outputs = outputs
        self.started = time.time()
        self.secrets = [e.api_key.get_secret_value() for e in config.endpoints if e.api_key is not None]
        self.plans: list[TaskPlan] = []
        self.eps: list[EndpointRun] = []
        self.plan_id: int | None = None

    def state(self, **kw: Any) -> RunState:
        return RunState(
            self.config,
            self.plans,
            self.eps,
            self.argv,
            self.secrets,
            self.started,
            plan_id=self.plan_id,
            **kw,
        )

    def summary(self, **kw: Any) -> str:
        return str(self.outputs.run_summary(self.state(**kw))) if self.outputs is not None else ""

    def execute(self, plans: list[TaskPlan] | None, stamp: str | None) -> RunOutcome:
        config = self.config
        if not stamp:
            outputs = self.outputs
            stamp = (
                outputs.stamp(config, self.started) if outputs is not None else default_stamp(self.started)
            )
        self.plans = plans if plans is not None else prepare(config)
        # Everything local is checked before any endpoint is contacted: the store (schema, data), the files.
        store = Store.open(config.options.output_path)
        try:
            if self.outputs is not None:
                self.outputs.check(config)
            check_fingerprints(store, self.plans)
            self.open_endpoints(store)
            asyncio.run(
                probe_limits(self.config, self.plans, store, self.eps, self.progress or NullProgress())
            )
            public = self.config.public()
            names = [e.name for e in self.eps]
            plan_rec = store.begin_plan(names, plan_spec(self.config, self.plans), config=public, stamp=stamp)
            self.plan_id = plan_rec.plan_id
            self.summary(finished=None, plans_made=store.plans())
            # run.json must not keep saying "running" after the invocation stopped (a full disk, a store
            # error, Ctrl-C): record why, then let the error through unchanged.
            try:
                scores, files, errors, sessions, finished = self.send_and_score(store, stamp)
            except BaseException as exc:
                with contextlib.suppress(Exception):  # the store may be what failed
                    status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
                    store.end_plan(self.plan_id, status)
                self.record_failure(exc)
                raise
            run_json = self.summary(
                finished=finished, scores=scores, sessions=sessions, files=files, errors=errors,
                plans_made=store.plans(),
            )  # fmt: skip
        finally:
            store.close()
        return RunOutcome(
            self.config, self.plans, self.eps, scores, sessions, files, run_json, self.started, finished,
            errors, self.plan_id,
        )  # fmt: skip

    def open_endpoints(self, store: Store) -> None:
        """Resolve the endpoints, check each one's identity against its stored run (all of them before any
        stored run is touched), decide log-probabilities once, then open (or resume) each one's run."""
        from vlmparity import __version__

        config = self.config
        resolved = run_async(resolve_all(config))
        checked = []
        for ecfg, res in zip(config.endpoints, resolved, strict=True):
            previous = store.get_run(ecfg.name)
            identity = endpoint_identity(ecfg.url, res)
            changed = identity_changes(previous, identity) if previous is not None else []
            model_changed = any(c.startswith("served model ") for c in changed)
            if changed and (model_changed or not config.options.allow_identity_change):
                raise identity_error(ecfg.name, changed, config.options.output_path)
            checked.append((ecfg, res, identity, changed))
        # One logprobs decision for every endpoint, before the first question (the bodies stay identical).
        self.config = config = decide_logprobs(config, store, resolved, self.progress)
        public = config.public()  # with the decision: run.json and the stored run config say it
        for ecfg, res, identity, changed in checked:
            rec = store.upsert_run(
                ecfg.name,
                url=identity["url"],
                kind=identity["kind"],
                model=identity["model"],
                server_version=identity["server_version"],
                config=public,
                tool_version=__version__,
            )
            ep = EndpointRun(name=ecfg.name, resolved=res, run_id=rec.run_id)
            if changed:  # continued on purpose: what failed on the former server is asked again
                ep.resend = "failures"
            self.eps.append(ep)

    def send_and_score(
        self, store: Store, stamp: str
    ) -> tuple[dict[str, list[TaskScore]], dict[str, list[str]], dict[str, str], list[SessionStats], float]:
        """Dispatch, then score every endpoint that finished and write its files."""
        from vlmparity.data.images import ImageEncoder

        config, plans, gate = self.config, self.plans, self.gate
        notices = next((p.notices for p in plans if p.notices is not None), None)
        encoder = ImageEncoder(
            config.options.image_format, compress_level=config.options.png_level, notices=notices
        )
        engine = Engine(config, plans, store, self.eps, encoder, progress=self.progress, gate=gate)
        try:
            run_async(engine.run())
        finally:
            encoder.close()
        scores: dict[str, list[TaskScore]] = {}
        files: dict[str, list[str]] = {}
        errors: dict[str, str] = {}
        finished = time.time()
        for ep in self.eps:
            if ep.error is None and gate is not None and gate.stopped:
                continue  # stopped at a look on purpose: not a full run, no lmms-eval files
            if ep.error is not None:
                errors[ep.name] = (
                    ep.error.one_line() if isinstance(ep.error, VlmparityError) else str(ep.error)
                )
                continue  # unfinished: no lmms-eval files that would count its missing answers as wrong
            scores[ep.name] = score_endpoint(store, ep.run_id, ep.name, plans, seed=config.options.score_seed)
            written = (
                self.outputs.endpoint_files(
                    config, plans, ep, scores[ep.name], stamp=stamp, started=self.started, finished=finished
                )
                if self.outputs is not None
                else []
            )
            files[ep.name] = [str(p) for p in written]
        sessions = engine.session_stats()
        assert self.plan_id is not None
        store.end_plan(
            self.plan_id,
            "incomplete" if errors else "complete",
            [e.name for e in self.eps if e.name in scores],
        )
        return scores, files, errors, sessions, finished

    def record_failure(self, exc: BaseException) -> None:
        """Rewrite run.json with status "failed" and the reason; never raises (the disk may be full)."""
        interrupted: str | None = None
        if isinstance(exc, KeyboardInterrupt):
            interrupted = signal_of(exc)
            how = "Ctrl-C" if interrupted == "SIGINT" else interrupted
            reason = f"interrupted ({how}); every answer received so far is stored; rerun the same command to resume"
        elif isinstance(exc, VlmparityError):
            reason = exc.one_line()
        else:
            reason = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # the original error is the one to report
            self.summary(finished=None, failure=reason, interrupted=interrupted)
