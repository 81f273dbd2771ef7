"""Load finished runs from their output folders and join two of them sample by sample.

A run is one endpoint inside one output folder's store. Its samples are rebuilt from the data the run
used (the store keeps answers and request hashes, not the dataset), checked against the store's
dataset fingerprint, and scored from the store exactly as `vlmparity run` scores them
(`runner.score_endpoint`), plus once more for the pairing: there MMMU's random letter for an answer
without one is drawn per sample (`PAIRED_FALLBACK`), so identical answers get identical letters
whatever the other samples parsed to. Two runs are then joined on (task, sample_id): a sample counts only when both
runs sent it the same request (same `request_hash`); the others are reported, never compared.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmparity.errors import ConfigError, DataError
from vlmparity.runner import MISSING, TaskPlan, TaskScore, prepare_task, score_endpoint
from vlmparity.store import (
    ANSWERED,
    PlanRecord,
    RunRecord,
    SampleRecord,
    Store,
    describe_sampling,
    store_path,
)
from vlmparity.tasks.base import FALLBACK_PER_SAMPLE, Sample

# How a random fallback draws when answers are paired: per sample, seeded by its id (see the docstring).
PAIRED_FALLBACK = FALLBACK_PER_SAMPLE
# (task, source, limit, sample, seed) -> the plan: runs of one folder share their data and plan.
PlanKey = tuple[str, str, float | None, int | None, int]


@dataclass(frozen=True)
class RunRef:
    """One endpoint's run in one output folder, and the name it is shown and addressed by."""

    directory: Path
    run: RunRecord
    label: str  # the endpoint name, or `folder:endpoint` when several folders hold that name
    plans: tuple[PlanRecord, ...] = ()  # the folder's invocations that included this endpoint

    @property
    def endpoint(self) -> str:
        return self.run.endpoint


@dataclass(frozen=True)
class TaskChoice:
    """Which plan of a run one task is loaded with: its invocation, data source and sampling."""

    task: str
    plan_id: int | None  # None: a store written before plans were recorded (its last configuration)
    source: str
    sampling: Mapping[str, Any]
    status: str = ""
    when: str = ""

    def describe(self) -> str:
        """E.g. 'plan #2 (limit 20, 2026-12-07 01:40:12)'."""
        what = describe_sampling(self.sampling)
        if self.plan_id is None:
            return f"its last configuration ({what})"
        state = "" if self.status == "complete" else f", {self.status}"
        return f"plan #{self.plan_id} ({what}, {self.when}{state})"


@dataclass(frozen=True)
class LoadedRun:
    """A run rebuilt from its store: the planned samples and their scores per task."""

    ref: RunRef
    plans: Mapping[str, TaskPlan]
    scores: Mapping[str, TaskScore]
    sample_records: Mapping[str, Mapping[str, SampleRecord]]  # task -> sample_id -> what was sent
    session: Mapping[str, Any] = field(default_factory=dict)  # run.json's speed figures, when present
    choices: Mapping[str, TaskChoice] = field(default_factory=dict)  # task -> the plan it was loaded with

    @property
    def label(self) -> str:
        return self.ref.label


@dataclass(frozen=True)
class Side:
    """One endpoint's answer to one sample, as paired statistics score it.

    A failure is wrong (the strict policy); an MMMU random fallback is drawn per sample (`PAIRED_FALLBACK`).
    """

    outcome: str  # ok | length | empty | a failure class | missing
    text: str | None  # None unless answered
    parsed: Any
    correct: bool
    random_fallback: bool = False
    latency: float | None = None
    ttft: float | None = None

    @property
    def answered(self) -> bool:
        return self.outcome in ANSWERED


@dataclass(frozen=True)
class Pair:
    """One sample both runs were sent with the same request."""

    sample: Sample
    a: Side  # reference
    b: Side  # candidate


@dataclass(frozen=True)
class TaskJoin:
    """The paired samples of one task (reference document order) and what could not be paired."""

    task: str
    pairs: tuple[Pair, ...]
    mismatched: tuple[str, ...]  # sample ids sent with different requests: excluded
    only_reference: tuple[str, ...]  # planned by the reference run only
    only_candidate: tuple[str, ...]
    skipped: tuple[str, ...]  # not sent by one or both runs (--multi-image skip)


@dataclass(frozen=True)
class Joined:
    """Reference and candidate joined over every task both evaluated."""

    reference: LoadedRun
    candidate: LoadedRun
    tasks: tuple[TaskJoin, ...]
    unpaired_tasks: tuple[str, ...] = ()  # evaluated by one of the two runs only: not compared


# ----- finding runs ---------------------------------------------------------------------------------


def discover(directories: Sequence[Path]) -> list[RunRef]:
    """Every endpoint run in the given output folders, in folder then creation order."""
    if not directories:
        raise ConfigError("no run folder given", hint="pass the --output-path folders of `vlmparity run`")
    found: list[tuple[Path, RunRecord, list[PlanRecord]]] = []
    seen: set[Path] = set()
    for directory in directories:
        directory = Path(directory)
        if directory.is_file() and directory.name == store_path(Path()).name:
            directory = directory.parent  # the store file itself was given
        if not store_path(directory).exists():
            raise DataError(
                f"{directory} holds no run store ({store_path(Path()).name})",
                hint="pass a folder written by `vlmparity run --output-path`",
            )
        key = directory.resolve()
        if key in seen:
            continue
        seen.add(key)
        with Store.open(directory, create=False) as store:
            runs = store.runs()
            plans = store.plans()
        if not runs:
            raise DataError(f"the run store in {directory} holds no run", hint="run `vlmparity run` first")
        found.extend((directory, run, plans) for run in runs)
    counts: dict[str, int] = {}
    for _, run, _ in found:
        counts[run.endpoint] = counts.get(run.endpoint, 0) + 1
    refs = []
    for directory, run, plans in found:
        label = run.endpoint
        if counts[run.endpoint] > 1:
            # the folder's name suffices unless two folders of that name hold this endpoint
            twins = [d for d, r, _ in found if r.endpoint == run.endpoint and d.name == directory.name]
            label = f"{directory.name if len(twins) == 1 else directory}:{run.endpoint}"
        mine = tuple(p for p in plans if run.endpoint in p.endpoints)
        refs.append(RunRef(directory, run, label, mine))
    return refs


def _matches_dir(text: str, directory: Path) -> bool:
    if text in (str(directory), directory.name):
        return True
    try:
        return Path(text).resolve() == directory.resolve()
    except OSError:
        return False


def resolve_name(refs: Sequence[RunRef], name: str) -> RunRef:
    """The run addressed by `name`: an endpoint name, or `folder:endpoint` when several folders hold it."""
    exact = [r for r in refs if r.label == name]
    if len(exact) == 1:
        return exact[0]
    by_endpoint = [r for r in refs if r.endpoint == name]
    if len(by_endpoint) == 1:
        return by_endpoint[0]
    labels = ", ".join(r.label for r in refs)
    if len(by_endpoint) > 1:
        raise ConfigError(
            f"endpoint {name!r} is in several run folders",
            hint=f"address it as FOLDER:NAME, one of {', '.join(r.label for r in by_endpoint)}",
        )
    folder, sep, endpoint = name.rpartition(":")
    if sep:
        hits = [r for r in refs if r.endpoint == endpoint and _matches_dir(folder, r.directory)]
        if len(hits) == 1:
            return hits[0]
    raise ConfigError(f"no run named {name!r}", hint=f"runs found: {labels}")


def select(
    refs: Sequence[RunRef], reference: str | None, candidates: Sequence[str] = ()
) -> tuple[RunRef, list[RunRef]]:
    """The reference run (default: the first found) and the candidates (default: every other run)."""
    ref = resolve_name(refs, reference) if reference else refs[0]
    named = [resolve_name(refs, c) for c in candidates] if candidates else list(refs)
    cands: list[RunRef] = []
    for c in named:  # in order, without repeats or the reference
        if c is not ref and all(c is not x for x in cands):
            cands.append(c)
    if not cands:
        found = ", ".join(r.label for r in refs)
        raise ConfigError(
            f"nothing to compare with {ref.label!r}",
            hint=f"give at least two runs (found: {found}); a folder may hold several endpoints",
        )
    return ref, cands


# ----- loading a run ----------------------------------------------------------------------------------


def plan_key(task: str, source: str, plan: Mapping[str, Any]) -> PlanKey:
    """The cache key of a task's plan: the same data and sampling give the same samples."""
    limit = plan.get("limit")
    sample = plan.get("sample")
    return (
        task,
        source,
        float(limit) if limit is not None else None,
        int(sample) if sample is not None else None,
        int(plan.get("seed") or 0),
    )


def seed_cache(cache: dict[PlanKey, TaskPlan], config: Mapping[str, Any], plans: Iterable[TaskPlan]) -> None:
    """Put plans a caller already prepared (e.g. for the run it just did) into the cache."""
    for plan in plans:
        cache[plan_key(plan.task.name, plan.source, config.get("plan") or {})] = plan


def _prepare(
    task: str, source: str, plan: Mapping[str, Any], cache: dict[PlanKey, TaskPlan], run: RunRef
) -> TaskPlan:
    key = plan_key(task, source, plan)
    hit = cache.get(key)
    if hit is not None:
        return hit
    try:
        # scoring needs no image bytes: a fraction of the time and memory (a report reads the few it shows)
        prepared = prepare_task(task, source, limit=key[2], sample=key[3], seed=key[4], images=False)
    except DataError as err:
        raise DataError(
            f"cannot load the {task} data of run {run.label} ({source}): {err.message}",
            hint=f"run from the folder the run was started in, or pass --data {task}=SOURCE",
        ) from err
    cache[key] = prepared
    return prepared


def parse_plan_picks(values: Sequence[str]) -> dict[str, int]:
    """`--plan ID` (every run) or `--plan NAME=ID` (one run) -> {NAME or '*': ID}."""
    out: dict[str, int] = {}
    for value in values:
        name, sep, number = value.rpartition("=")
        text = number.strip().lstrip("#")
        if not text.isdigit() or (sep and not name.strip()):
            raise ConfigError(
                f"--plan {value!r} is not a plan number",
                hint="--plan ID or --plan NAME=ID, with ID as listed under 'plans' (e.g. --plan 2)",
            )
        out[name.strip() if sep else "*"] = int(text)
    return out


def _pick_for(ref: RunRef, picks: Mapping[str, int]) -> int | None:
    for key in (ref.label, ref.endpoint, "*"):
        if key in picks:
            return picks[key]
    return None


def _plans_line(ref: RunRef) -> str:
    parts = []
    for p in ref.plans:
        sampling = describe_sampling(next(iter(p.tasks.values()), {}).get("plan") or {})
        state = "complete" if p.complete_for(ref.endpoint) else p.status
        parts.append(f"#{p.plan_id} {','.join(p.tasks)} ({sampling}, {p.when}, {state})")
    return "; ".join(parts)


def choose_plans(ref: RunRef, pick: int | None = None) -> list[TaskChoice]:
    """The plan each task of a run is loaded with: `pick` (an invocation's number), else per task the
    latest invocation this endpoint completed (else the latest that included the task). A store written
    before plans were recorded gives its last configuration."""
    plans = list(ref.plans)
    if pick is not None:
        chosen = next((p for p in plans if p.plan_id == pick), None)
        if chosen is None:
            raise ConfigError(
                f"run {ref.label} in {ref.directory} has no plan #{pick}",
                hint=f"its plans: {_plans_line(ref)}" if plans else "this store records no plans",
            )
        return [_choice(chosen, t) for t in chosen.tasks]
    out: list[TaskChoice] = []
    tasks = list(dict.fromkeys(t for p in plans for t in p.tasks))
    for task in tasks:
        having = [p for p in plans if task in p.tasks]
        done = [p for p in having if p.complete_for(ref.endpoint)]
        out.append(_choice((done or having)[-1], task))
    return out


def _choice(plan: PlanRecord, task: str) -> TaskChoice:
    spec = plan.tasks[task]
    return TaskChoice(
        task=task,
        plan_id=plan.plan_id,
        source=str(spec.get("source") or ""),
        sampling=dict(spec.get("plan") or {}),
        status=plan.status,
        when=plan.when,
    )


def _legacy_choices(ref: RunRef, store: Store) -> list[TaskChoice]:
    """A store without plans: its tasks with the endpoint's last configuration."""
    from vlmparity.tasks.base import get_task

    config = ref.run.config
    tasks = [str(t) for t in config.get("tasks") or []]
    sources: Mapping[str, str] = config.get("data") or {}
    plan_cfg: Mapping[str, Any] = config.get("plan") or {}
    registered = {t for t, _ in store.samples()}
    tasks = [t for t in tasks if t in registered] + sorted(registered - set(tasks))
    out = []
    for task in tasks:
        source = sources.get(task)
        if not source:  # the data the store was made from, when it is here (rather than the Hub)
            recorded = (store.get_meta(f"fingerprint:{task}") or {}).get("source")
            source = recorded if recorded and Path(str(recorded)).exists() else get_task(task).default_source
        out.append(TaskChoice(task, None, str(source), dict(plan_cfg)))
    return out


def _source_for(choice: TaskChoice, ref: RunRef, data: Mapping[str, str] | None) -> str:
    """The data to load a task from: `--data`, else where the run read it; never the Hub for local data."""
    from vlmparity.data.sources import looks_like_path

    override = (data or {}).get(choice.task)
    if override:
        return override
    source = choice.source
    if choice.plan_id is not None and looks_like_path(source) and not Path(source).expanduser().exists():
        raise DataError(
            f"run {ref.label} read its {choice.task} data from {source}, which is no longer there "
            f"({choice.describe()})",
            hint=f"pass --data {choice.task}=PATH with the folder's new place",
        )
    return source


def load_run(
    ref: RunRef,
    *,
    data: Mapping[str, str] | None = None,
    cache: dict[PlanKey, TaskPlan] | None = None,
    seed: int | None = None,
    plan: int | None = None,
) -> LoadedRun:
    """Rebuild one run's samples from its data (or `data` overrides) and score it from the store.

    Each task is loaded with one plan of the run (`choose_plans`: `plan`, else the latest complete one),
    never with another invocation's sampling or data.
    """
    cache = cache if cache is not None else {}
    config = ref.run.config
    score_seed = seed if seed is not None else int((config.get("options") or {}).get("score_seed", 0))
    with Store.open(ref.directory, create=False) as store:
        choices = choose_plans(ref, plan) if ref.plans else _legacy_choices(ref, store)
        plans: dict[str, TaskPlan] = {}
        for choice in choices:
            source = _source_for(choice, ref, data)
            prepared = _prepare(choice.task, source, choice.sampling, cache, ref)
            _check_fingerprint(store, prepared, ref)
            plans[choice.task] = prepared
        # Paired statistics draw MMMU fallbacks per sample; the run's own scores keep lmms-eval's sequence.
        scored = score_endpoint(
            store, ref.run.run_id, ref.endpoint, list(plans.values()), seed=score_seed, paired=True
        )
        records = {t: {sid: rec for (_, sid), rec in store.samples(t).items()} for t in plans}
    return LoadedRun(
        ref=ref,
        plans=plans,
        scores={s.task: s for s in scored},
        sample_records=records,
        session=_session(ref),
        choices={c.task: c for c in choices},
    )


def _check_fingerprint(store: Store, plan: TaskPlan, ref: RunRef) -> None:
    from vlmparity.data.fingerprint import same_data

    stored = store.get_meta(f"fingerprint:{plan.task.name}")
    if stored is not None and not same_data(stored, plan.fingerprint):
        raise DataError(
            f"the {plan.task.name} data at {plan.source} ({plan.fingerprint.get('num_rows')} rows) is not the "
            f"data run {ref.label} evaluated ({stored.get('source')}, {stored.get('num_rows')} rows)",
            hint=f"pass --data {plan.task.name}=SOURCE pointing at the original data",
        )


def _session(ref: RunRef) -> dict[str, Any]:
    """The endpoint's speed figures from the folder's run.json (its last invocation), if readable."""
    import orjson

    path = ref.directory / "run.json"
    try:
        doc = orjson.loads(path.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    sessions = doc.get("sessions") if isinstance(doc, dict) else None
    value = sessions.get(ref.endpoint) if isinstance(sessions, dict) else None
    return dict(value) if isinstance(value, dict) else {}


# ----- joining two runs -------------------------------------------------------------------------------


def _sides(score: TaskScore) -> dict[str, Side]:
    out = {}
    for sample, rec, answer, sc in zip(
        score.samples, score.records, score.answers, score.paired_scores, strict=True
    ):
        out[sample.id] = Side(
            outcome=answer.outcome,
            text=answer.text,
            parsed=sc.parsed,
            correct=bool(sc.correct),
            random_fallback=sc.random_fallback,
            latency=rec.latency if rec is not None else None,
            ttft=rec.ttft if rec is not None else None,
        )
    return out


def join_task(task: str, a: LoadedRun, b: LoadedRun) -> TaskJoin:
    """Pair the two runs' samples of one task on sample_id, keeping only identical requests."""
    sa, sb = a.scores[task], b.scores[task]
    side_a, side_b = _sides(sa), _sides(sb)
    rec_a, rec_b = a.sample_records.get(task, {}), b.sample_records.get(task, {})
    planned_a = [s.id for s in a.plans[task].samples]
    planned_b = {s.id for s in b.plans[task].samples}
    pairs: list[Pair] = []
    mismatched: list[str] = []
    skipped: list[str] = []
    by_id = {s.id: s for s in sa.samples}
    for sid in planned_a:
        if sid not in planned_b:
            continue
        ra, rb = rec_a.get(sid), rec_b.get(sid)
        if (ra is not None and ra.treatment == "skipped") or (rb is not None and rb.treatment == "skipped"):
            skipped.append(sid)
            continue
        if ra is not None and rb is not None and ra.request_hash != rb.request_hash:
            mismatched.append(sid)
            continue
        # A sample never registered by one run has no result there: its side is `missing`.
        pairs.append(Pair(by_id[sid], side_a[sid], side_b[sid]))
    in_a = set(planned_a)
    return TaskJoin(
        task=task,
        pairs=tuple(pairs),
        mismatched=tuple(mismatched),
        only_reference=tuple(sid for sid in planned_a if sid not in planned_b),
        only_candidate=tuple(s.id for s in b.plans[task].samples if s.id not in in_a),
        skipped=tuple(skipped),
    )


def join(a: LoadedRun, b: LoadedRun) -> Joined:
    """Join reference `a` and candidate `b` on every task both evaluated (reference task order)."""
    tasks = [t for t in a.scores if t in b.scores]
    if not tasks:
        raise DataError(
            f"runs {a.label} ({', '.join(a.scores) or 'no task'}) and {b.label} "
            f"({', '.join(b.scores) or 'no task'}) share no task",
            hint="compare runs of the same tasks",
        )
    unpaired = tuple(t for t in [*a.scores, *b.scores] if t not in tasks)
    return Joined(a, b, tuple(join_task(t, a, b) for t in tasks), tuple(dict.fromkeys(unpaired)))


def load_joins(
    directories: Sequence[Path],
    *,
    reference: str | None = None,
    candidates: Sequence[str] = (),
    data: Mapping[str, str] | None = None,
    cache: dict[PlanKey, TaskPlan] | None = None,
    plans: Mapping[str, int] | None = None,
    pinned: Mapping[tuple[Path, str], int] | None = None,
) -> list[Joined]:
    """Find the runs in `directories`, load the reference and each candidate, join each with the reference.

    `plans` picks a plan by run name (or '*' for every run, see `parse_plan_picks`); `pinned` by
    (resolved folder, endpoint) (`compare --endpoint`: the invocation it just ran).
    """
    refs = discover(directories)
    ref, cands = select(refs, reference, candidates)
    cache = cache if cache is not None else {}

    def pick(r: RunRef) -> int | None:
        fixed = (pinned or {}).get((r.directory.resolve(), r.endpoint))
        return fixed if fixed is not None else _pick_for(r, plans or {})

    loaded_ref = load_run(ref, data=data, cache=cache, plan=pick(ref))
    return [join(loaded_ref, load_run(c, data=data, cache=cache, plan=pick(c))) for c in cands]


def is_missing(side: Side) -> bool:
    """No stored result for the sample's request (an interrupted run)."""
    return side.outcome == MISSING
