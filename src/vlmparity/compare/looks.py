"""The running side of a sequential comparison (`compare --endpoint ... --sequential`).

`LookGate` plugs into the runner's `Engine` (four small hooks) and:
- orders each endpoint's samples by `data.sampling.sequential_keys` (every prefix balanced over MME
  categories and MMMU subjects, whole image pairs);
- lets an endpoint send a sample of look k only once look k - 1 was examined, so both endpoints advance
  together and a look uses exactly the samples both answered;
- examines each look as soon as both endpoints hold a result for every sample of it, by scoring the
  stored answers of those samples exactly as `compare` does (`runner.score_endpoint`, `join`,
  `analysis.task_metrics`) and applying the design (`compare.sequential`);
- stops sending when the verdict is known (requests already in flight finish and are stored), and
  stops sending a part whose metrics are all equivalent while another part is still open. A sample's
  part is its task's `stop_part(sample)`, and a part feeds the metrics whose `MetricSpec.members` take
  its samples: MME perception (feeding mme_acc and mme_perception_score), MME cognition (mme_acc and
  mme_cognition_score) and each other task (all its metrics): identical engines certify the MME
  accuracy and perception score after a fifth of MME, while the cognition score's 20-point margin
  needs about 60 % of the 260 cognition questions; only those keep being sent.

The outcome (design, every look, the stop) is written to `<output>/sequential.json`, and `compare`
restricts its analysis to the samples of the deciding look. Rerunning the same command examines the
stored looks again and stops at the same look without sending; `--continue-to-full` sends the rest.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from vlmparity.compare import sequential as seq
from vlmparity.compare import verdict as v
from vlmparity.tasks.base import Task, get_task

if TYPE_CHECKING:
    from vlmparity.compare.analysis import Analysis, Settings
    from vlmparity.compare.join import Joined
    from vlmparity.runner import Engine
    from vlmparity.tasks.base import Sample

RECORD = "sequential.json"


@dataclass
class Comparison:
    """One candidate against the reference: its looks so far."""

    candidate: str
    looks: list[seq.Look] = field(default_factory=list)

    @property
    def last(self) -> seq.Look | None:
        return self.looks[-1] if self.looks else None

    @property
    def decided(self) -> bool:
        return self.last is not None and self.last.overall != seq.OPEN


class LookGate:
    """Sequential sending for one `compare --endpoint` invocation (see the module docstring)."""

    def __init__(
        self, settings: Settings, reference: str, candidates: Sequence[str], *, looks: int, seed: int = 0
    ) -> None:
        self.settings = settings
        self.reference = reference
        self.comparisons = [Comparison(c) for c in candidates]
        self.times = seq.equal_looks(looks)
        self.seed = seed
        self.engine: Engine | None = None
        self.look_of: list[int] = []  # per sample index: its look (0-based)
        self.key: list[float] = []
        self.examined = 0  # looks examined so far
        self.outstanding: dict[str, list[set[int]]] = {}  # endpoint -> per look the indices not yet answered
        self.finished_parts: dict[str, int] = {}  # part -> the look after which it stopped being sent
        self.sample_parts: list[str] = []  # per sample index: its part
        self.parts: list[str] = []  # `part_of` every sample, in order of appearance
        self.part_metrics: dict[str, set[str]] = {}  # part -> the metrics its samples feed
        self.stopped = False
        self.reason = ""
        self.design: seq.Design | None = None
        self._changed: asyncio.Condition | None = None
        self._examining = False
        self.started = time.time()

    # -- hooks called by the runner's Engine -----------------------------------------------------------

    def bind(self, engine: Engine) -> None:
        from vlmparity.data.sampling import sequential_keys

        self.engine = engine
        self._bind_parts()
        self.key = sequential_keys(engine.samples, self.seed)
        self.look_of = [next(k for k, t in enumerate(self.times) if key <= t + 1e-12) for key in self.key]
        self._changed = asyncio.Condition()

    def bind_offline(self) -> None:
        """Keys and looks for a replay from the store (`replay`): no engine running, nothing sent."""
        from vlmparity.data.sampling import sequential_keys

        assert self.engine is not None
        self._bind_parts()
        self.key = sequential_keys(self.engine.samples, self.seed)
        self.look_of = [next(k for k, t in enumerate(self.times) if key <= t + 1e-12) for key in self.key]

    def order(self, endpoint: str, todo: Sequence[int]) -> list[int]:
        """`todo` in the balanced order; registers what this endpoint still owes each look."""
        ordered = sorted(
            todo, key=lambda i: (self.key[i], self.engine.samples[i].cluster if self.engine else "", i)
        )
        owed: list[set[int]] = [set() for _ in self.times]
        for i in ordered:
            if self.look_of[i] >= self.examined:
                owed[self.look_of[i]].add(i)
        self.outstanding[endpoint] = owed
        return ordered

    async def begin(self) -> bool:
        """Examine the looks the store already completes (a resumed run); True when the verdict is known."""
        await self._examine_ready()
        return self.stopped

    async def admit(self, index: int) -> bool:
        """Wait until the sample's look may be sent; False: do not send it (stopped, or its task is done)."""
        assert self._changed is not None
        look = self.look_of[index]
        async with self._changed:
            await self._changed.wait_for(lambda: self.stopped or self._skip(index) or self.examined >= look)
        return not (self.stopped or self._skip(index))

    def resolved(self, endpoint: str, index: int) -> None:
        """The endpoint has a result for the sample (or will never send it): the look may be complete."""
        owed = self.outstanding.get(endpoint)
        if owed is None or not self.look_of:
            return
        owed[self.look_of[index]].discard(index)
        if self._ready():
            asyncio.get_running_loop().create_task(self._examine_ready())

    def endpoint_ended(self, endpoint: str) -> None:
        """An endpoint stopped sending: if it still owes a look, no further look can complete."""
        owed = self.outstanding.get(endpoint)
        if owed and any(owed[k] for k in range(self.examined, len(self.times))) and not self.stopped:
            self.stopped = True
            self.reason = f"{endpoint} stopped before the looks completed"
            self._notify()

    # -- the looks ---------------------------------------------------------------------------------------

    def _bind_parts(self) -> None:
        """Every sample's part (`Task.stop_part`) and the metrics each part feeds (`MetricSpec.members`)."""
        assert self.engine is not None
        tasks = {name: get_task(name) for name in dict.fromkeys(s.task for s in self.engine.samples)}
        self.sample_parts = [part_of(s, tasks[s.task]) for s in self.engine.samples]
        self.parts = list(dict.fromkeys(self.sample_parts))
        self.part_metrics = {part: set() for part in self.parts}
        for sample, part in zip(self.engine.samples, self.sample_parts, strict=True):
            specs = tasks[sample.task].metric_specs()
            self.part_metrics[part].update(spec.name for spec in specs if spec.members(sample))

    def _part_metrics(self, part: str, metrics: Sequence[str]) -> set[str]:
        """The metrics a part's samples feed (of those judged)."""
        return self.part_metrics.get(part, set()) & set(metrics)

    def _skip(self, index: int) -> bool:
        return self.sample_parts[index] in self.finished_parts

    def _ready(self) -> bool:
        k = self.examined
        if self.stopped or self._examining or k >= len(self.times):
            return False
        return all(not owed[k] for owed in self.outstanding.values())

    def _notify(self) -> None:
        cond = self._changed
        if cond is None:
            return

        async def wake() -> None:
            async with cond:
                cond.notify_all()

        asyncio.get_running_loop().create_task(wake())

    async def _examine_ready(self) -> None:
        assert self.engine is not None
        while self._ready():
            self._examining = True
            try:
                if self.engine.writer is not None:
                    await asyncio.to_thread(self.engine.writer.flush)  # the look reads the store
                self._examine(self.examined)
            finally:
                self._examining = False
            self.examined += 1
            if self.stopped:
                self.engine.request_stop()
            self._notify()
            self.write_record()

    def _examine(self, look: int) -> None:
        assert self.engine is not None
        results = self.look_results(look)
        if self.design is None:
            first = next(iter(results.values()))
            self.design = seq.design(self.times, self.settings.alpha, seq.weights_of([r.unit for r in first]))
        for comp in self.comparisons:
            if comp.decided:
                continue
            rs, samples = results[comp.candidate], self._samples_used(look)
            comp.looks.append(seq.examine(rs, self.design, look, previous=comp.last, samples=samples))
        open_ = [c for c in self.comparisons if not c.decided]
        if not open_:
            self.stopped = True
            last = [c.last for c in self.comparisons if c.last is not None]
            self.reason = "; ".join(f"{c.candidate}: {c.last.reason}" for c in self.comparisons if c.last)
            if all(x.overall == v.EQUIVALENT for x in last) and look == len(self.times) - 1:
                self.reason += " (at the last look)"
            return
        # a part all of whose metrics are equivalent for every open candidate stops being sent
        names = [r.metric for r in results[open_[0].candidate]]
        for part in self.parts:
            if part in self.finished_parts:
                continue
            metrics = self._part_metrics(part, names)
            if metrics and all(
                c.last is not None and all(c.last.status.get(m) == v.EQUIVALENT for m in metrics)
                for c in open_
            ):
                self.finished_parts[part] = look

    def _tasks(self) -> list[str]:
        assert self.engine is not None
        return [p.task.name for p in self.engine.plans]

    def sample_ids(self, look: int) -> dict[str, set[str]]:
        """Per task the sample ids a look uses: through `look`, or through the look its part stopped at."""
        assert self.engine is not None
        out: dict[str, set[str]] = {t: set() for t in self._tasks()}
        for i, s in enumerate(self.engine.samples):
            through = min(look, self.finished_parts.get(self.sample_parts[i], look))
            if self.look_of[i] <= through:
                out[s.task].add(s.id)
        return out

    def _samples_used(self, look: int) -> int:
        return sum(len(x) for x in self.sample_ids(look).values())

    def look_results(self, look: int) -> dict[str, list[v.PairedResult]]:
        """Per candidate: its metrics over the look's samples, scored from the store as `compare` does."""
        from vlmparity.compare import analysis as an
        from vlmparity.compare.join import LoadedRun, RunRef, join
        from vlmparity.runner import score_endpoint

        assert self.engine is not None
        engine = self.engine
        ids = self.sample_ids(look)
        plans = [
            replace(p, plan=replace(p.plan, samples=tuple(s for s in p.samples if s.id in ids[p.task.name])))
            for p in engine.plans
        ]
        runs = {r.endpoint: r for r in engine.store.runs()}
        loaded: dict[str, LoadedRun] = {}
        for ep in engine.endpoints:
            scored = score_endpoint(engine.store, ep.run_id, ep.name, plans, paired=True)
            records = {
                p.task.name: {sid: rec for (_, sid), rec in engine.store.samples(p.task.name).items()}
                for p in plans
            }
            loaded[ep.name] = LoadedRun(
                ref=RunRef(engine.options.output_path, runs[ep.name], ep.name),
                plans={p.task.name: p for p in plans},
                scores={s.task: s for s in scored},
                sample_records=records,
            )
        out: dict[str, list[v.PairedResult]] = {}
        s = replace(self.settings, n_boot=0)
        for comp in self.comparisons:
            joined = join(loaded[self.reference], loaded[comp.candidate])
            rs: list[v.PairedResult] = []
            for t in joined.tasks:
                full = next(p for p in engine.plans if p.task.name == t.task)
                rs += an.task_metrics(
                    t.task,
                    an.used_pairs(t.task, t.pairs, s.policy),
                    s,
                    an.available_counts(t.task, full.plan),
                )
            out[comp.candidate] = rs
        return out

    # -- the record and the verdict ------------------------------------------------------------------------

    def summary(self, candidate: str) -> dict[str, Any] | None:
        """The sequential outcome for one candidate (verdict.json's `sequential`), None before any look."""
        comp = next((c for c in self.comparisons if c.candidate == candidate), None)
        if comp is None or comp.last is None or self.design is None:
            return None
        last = comp.last
        total = len(self.engine.samples) if self.engine else 0
        k = len(self.times)
        early = last.overall != seq.OPEN and last.index < k - 1
        return {
            "design": self.design.to_dict(),
            "looks_examined": len(comp.looks),
            "stopped_at_look": last.index + 1 if comp.decided else None,
            "of_looks": k,
            "samples_used": last.samples,
            "samples_planned": total,
            "fraction_used": round(last.samples / total, 4) if total else None,
            "stopped_early": early,
            "verdict": last.overall if last.overall != seq.OPEN else "undecided",
            "reason": last.reason or (self.reason if not comp.decided else ""),
            "finished_parts": {t: k_ + 1 for t, k_ in self.finished_parts.items()},
            "looks": [
                {
                    "look": x.index + 1,
                    "fraction": x.fraction,
                    "samples": x.samples,
                    "status": dict(x.status),
                    "overall": x.overall,
                }
                for x in comp.looks
            ],
        }

    def write_record(self) -> None:
        import orjson

        if self.engine is None:
            return
        doc = {
            "reference": self.reference,
            "looks": len(self.times),
            "seed": self.seed,
            "settings": {
                "margin": self.settings.margin,
                **{record_key(m): x for m, x in self.settings.margins.items()},
                "alpha": self.settings.alpha,
                "policy": self.settings.policy,
            },
            "stopped": self.stopped,
            "reason": self.reason,
            "candidates": {c.candidate: self.summary(c.candidate) for c in self.comparisons},
        }
        path = Path(self.engine.options.output_path) / RECORD
        tmp = path.with_suffix(".json.tmp")
        tmp.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2) + b"\n")
        tmp.replace(path)

    def note(self, candidate: str) -> str:
        """One line for the terminal, the report and verdict.json's notes."""
        info = self.summary(candidate)
        if info is None:
            return "sequential: no look was complete"
        if info["stopped_at_look"] is None:
            return f"sequential: undecided after {info['looks_examined']} of {info['of_looks']} looks ({info['reason']})"
        when = "stopped early" if info["stopped_early"] else "ran to the last look"
        return (
            f"sequential: {when} at look {info['stopped_at_look']} of {info['of_looks']} with "
            f"{info['samples_used']} of {info['samples_planned']} samples ({info['fraction_used'] * 100:.0f} %): "
            f"{info['reason']}"
        )

    def adjust(self, analysis: Analysis, joined: Joined) -> Analysis:
        """The analysis as the sequential design decided it: the deciding look's metrics and verdict."""
        comp = next((c for c in self.comparisons if c.candidate == analysis.candidate), None)
        if comp is None or comp.last is None:
            return replace(analysis, notes=(*analysis.notes, self.note(analysis.candidate)))
        verdict = seq.verdict_of(comp.last)
        by_metric = {r.metric: r for r in verdict.metrics}
        tasks = tuple(
            replace(t, metrics=tuple(by_metric.get(r.metric, r) for r in t.metrics)) for t in analysis.tasks
        )
        return replace(
            analysis,
            verdict=verdict,
            tasks=tasks,
            notes=(*analysis.notes, self.note(analysis.candidate)),
            sequential=self.summary(analysis.candidate),
        )


def part_of(sample: Sample, task: Task | None = None) -> str:
    """The part a sample belongs to for stopping: its task's `stop_part` (MME: "mme/<the score its category
    feeds>"; usually the task's name)."""
    return (task if task is not None else get_task(sample.task)).stop_part(sample)


def record_key(metric: str) -> str:
    """The key of a metric's margin in sequential.json's settings: `compare`'s option name for it
    ("mme_perception_score" -> "mme_margin_perception": the task, "margin", the part of the score)."""
    task, _, rest = metric.removesuffix("_score").partition("_")
    return f"{task}_margin_{rest}" if rest else f"{task}_margin"


def _recorded_settings(settings: Settings, recorded: Mapping[str, Any]) -> Settings:
    """The settings a sequential comparison recorded (margins, alpha, policy) over `settings`."""
    keys = {record_key(m): m for m in settings.margins}
    margins = {keys[k]: float(x) for k, x in recorded.items() if k in keys}
    plain = {k: x for k, x in recorded.items() if k not in keys and k != "margins" and hasattr(settings, k)}
    return replace(settings, **plain, margins={**settings.margins, **margins})


def restrict(joins: Sequence[Joined], ids: Mapping[str, set[str]]) -> list[Joined]:
    """The joins with only the pairs of the given sample ids (per task)."""
    out = []
    for j in joins:
        tasks = tuple(
            replace(t, pairs=tuple(p for p in t.pairs if p.sample.id in ids.get(t.task, set())))
            for t in j.tasks
        )
        out.append(replace(j, tasks=tasks))
    return out


def deciding_ids(gate: LookGate, candidate: str) -> dict[str, set[str]]:
    """Per task the sample ids of the candidate's deciding look (or the last one examined)."""
    comp = next((c for c in gate.comparisons if c.candidate == candidate), None)
    look = comp.last.index if comp is not None and comp.last is not None else max(0, gate.examined - 1)
    return gate.sample_ids(look)


def replay(
    directory: Path, joins: Sequence[Joined], settings: Settings
) -> tuple[list[Joined], Callable[[Analysis, Joined], Analysis]] | None:
    """A folder a sequential comparison stopped early, compared again from its store (`compare RUN_DIR`,
    `report`): the looks are examined again from the stored answers with the recorded margins, alpha and
    policy (the same looks, the same stop), the joins restricted to the deciding look and the verdict the
    sequential one. None when the folder holds no stopped sequential comparison, or the joins are not
    the ones it made."""
    import orjson

    from vlmparity.store import Store

    path = Path(directory) / RECORD
    try:
        record = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return None
    if not isinstance(record, dict) or not record.get("stopped") or record.get("superseded"):
        return None
    reference = str(record.get("reference"))
    candidates = [j.candidate.ref.endpoint for j in joins]
    if not joins or any(j.reference.ref.endpoint != reference for j in joins):
        return None
    if any(c not in (record.get("candidates") or {}) for c in candidates):
        return None
    # the looks are judged as they were decided: with the margins, alpha and policy recorded
    settings = _recorded_settings(settings, record.get("settings") or {})
    gate = LookGate(
        settings, reference, candidates, looks=int(record["looks"]), seed=int(record.get("seed", 0))
    )
    plans = list(joins[0].reference.plans.values())
    with Store.open(Path(directory), create=False) as store:
        runs = {r.endpoint: r for r in store.runs()}
        names = [reference, *candidates]
        engine: Any = SimpleNamespace(
            samples=[s for p in plans for s in p.samples],
            plans=plans,
            store=store,
            endpoints=[SimpleNamespace(name=n, run_id=runs[n].run_id) for n in names if n in runs],
            options=SimpleNamespace(output_path=Path(directory)),
            writer=None,
        )
        gate.engine = engine
        gate.bind_offline()
        for look in range(len(gate.times)):
            gate._examine(look)
            gate.examined += 1
            if gate.stopped:
                break
    if not gate.stopped or any(not c.decided for c in gate.comparisons):
        return None
    restricted = [restrict([j], deciding_ids(gate, j.candidate.ref.endpoint))[0] for j in joins]
    return restricted, gate.adjust


def supersede(directory: Path) -> None:
    """Mark a folder's sequential record as superseded (the comparison was continued to full size)."""
    import orjson

    path = Path(directory) / RECORD
    try:
        record = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return
    if isinstance(record, dict) and not record.get("superseded"):
        record["superseded"] = True
        path.write_bytes(orjson.dumps(record, option=orjson.OPT_INDENT_2) + b"\n")
