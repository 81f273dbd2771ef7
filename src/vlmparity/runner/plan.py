"""Planning a run: each task's data, its samples and the sampling plan this invocation evaluates."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from vlmparity.config import RunConfig
from vlmparity.errors import ConfigError, DataError
from vlmparity.store import Store
from vlmparity.tasks.base import Sample, Task, get_task

if TYPE_CHECKING:
    from vlmparity.data.images import LargeImageNotices
    from vlmparity.data.sampling import Plan


@dataclass(frozen=True)
class TaskPlan:
    """One task's data and the samples this run evaluates (document order)."""

    task: Task
    source: str
    plan: Plan
    fingerprint: Mapping[str, Any]
    notices: LargeImageNotices | None = None  # the large images its load reported (the encoder's too)

    @property
    def samples(self) -> tuple[Sample, ...]:
        return self.plan.samples


def prepare_task(
    name: str,
    source: str | None,
    *,
    limit: float | None,
    sample: int | None,
    seed: int,
    images: bool = True,
    notices: LargeImageNotices | None = None,
) -> TaskPlan:
    """Load a task's rows, turn them into samples and apply the sampling plan.

    `images=False` loads no image bytes (scoring, compare, report: a fraction of the time and memory);
    such samples cannot be sent, and `load_images` reads the images of a few of them when needed.
    """
    from vlmparity.data.fingerprint import dataset_fingerprint
    from vlmparity.data.sampling import plan_all, plan_limit, plan_stratified
    from vlmparity.data.sources import load_split, resolve_source

    task = get_task(name)
    # a local source is recorded by its absolute path: compare/report find it from any folder later
    src = resolve_source(source or task.default_source)
    loaded = load_split(src, split=task.split, task=name, images=images, notices=notices)
    samples = task.samples_from_rows(loaded.rows, images=images)
    if sample is not None:
        plan = plan_stratified(samples, sample, seed)
    elif limit is not None:
        plan = plan_limit(samples, limit)
    else:
        plan = plan_all(samples)
    fingerprint = dataset_fingerprint(src, task.split, samples, loaded.revision)
    return TaskPlan(task=task, source=src, plan=plan, fingerprint=fingerprint, notices=notices)


def load_images(plan: TaskPlan, samples: Sequence[Sample]) -> list[Sample]:
    """`samples` of `plan` with their images: those prepared without (`images=False`) read their rows again.

    Only the parquet row groups holding those rows are read (e.g. the few samples a report shows).
    """
    from vlmparity.data.sources import read_rows

    todo = [s for s in samples if s.omitted_images]
    if not todo:
        return list(samples)
    rows = read_rows(plan.source, split=plan.task.split, indices={s.doc_id for s in todo})
    full: dict[str, Sample] = {}
    for s in todo:
        row = rows.get(s.doc_id)
        rebuilt = plan.task.samples_from_rows([row]) if row is not None else []
        if not rebuilt or rebuilt[0].id != s.id:
            raise DataError(
                f"{plan.source}: {s.task} row {s.doc_id} is no longer sample {s.id!r}",
                hint="the data changed since it was loaded; run again",
            )
        full[s.id] = replace(s, images=rebuilt[0].images, omitted_images=0)
    return [full.get(s.id, s) for s in samples]


def prepare(config: RunConfig) -> list[TaskPlan]:
    """Every task's plan, in the order given; a plan that selects no sample is a usage error."""
    from vlmparity.data.images import LargeImageNotices

    p = config.plan
    notices = LargeImageNotices()  # one notice per large image for the whole run (its encoder shares it)
    plans = [
        prepare_task(
            name, config.data.get(name), limit=p.limit, sample=p.sample, seed=p.seed, notices=notices
        )
        for name in config.tasks
    ]
    for plan in plans:
        if not plan.samples and p.limit is not None:
            raise ConfigError(
                f"--limit {p.limit:g} selects no {plan.task.name} sample", hint="give a larger --limit"
            )
    return plans


def plan_spec(config: RunConfig, plans: Sequence[TaskPlan]) -> dict[str, dict[str, Any]]:
    """Per task what an invocation evaluates: the data source (absolute for local data) and the sampling."""
    sampling = config.plan.model_dump() | {"mode": config.plan.mode}
    return {p.task.name: {"source": p.source, "plan": dict(sampling)} for p in plans}


def check_fingerprints(store: Store, plans: Sequence[TaskPlan]) -> None:
    """Refuse to resume a store made from other data (a changed row changes no request of the first sample)."""
    from vlmparity.data.fingerprint import same_data

    for plan in plans:
        key = f"fingerprint:{plan.task.name}"
        old = store.get_meta(key)
        if old is None:
            store.set_meta(key, dict(plan.fingerprint))
        elif not same_data(old, plan.fingerprint):
            raise ConfigError(
                f"{store.path} was made from other {plan.task.name} data ({old.get('source')}, "
                f"{old.get('num_rows')} rows) than {plan.source} ({plan.fingerprint.get('num_rows')} rows)",
                hint="use a new --output-path for other data",
            )


def plan_image_counts(plans: Sequence[TaskPlan]) -> dict[tuple[str, str], int]:
    """(task, sample id) -> the number of images each planned sample sends."""
    return {(s.task, s.id): s.image_count for p in plans for s in p.samples}
