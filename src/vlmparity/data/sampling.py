"""Sampling plans: which samples of a task a run evaluates.

Two plans, both deterministic and returned in storage order:

- `plan_limit`: lmms-eval's `--limit` (the first N samples in storage order; fractions of the split are
  rounded up), except that an MME image pair is never split: lmms-eval's MME aggregation asserts two
  questions per image, so where the N-th sample's image has a partner outside the first N, the partner
  is taken too and `Plan.note` says so.
- `plan_stratified`: a seeded stratified sample over `Sample.group` (MME category, MMMU subject) whose
  units are whole clusters (MME image pairs, MMMU questions). Allocation is proportional to each
  stratum's size by largest remainder, with at least one unit per stratum when `n` allows. Within a
  stratum, units are ranked by sha256(seed, cluster): the choice depends only on the seed and the set
  of clusters, never on row order, backend or process.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

from vlmparity.errors import ConfigError
from vlmparity.tasks.base import Sample

PlanKind = Literal["all", "limit", "stratified"]


@dataclass(frozen=True)
class StratumCount:
    """How many samples of one stratum the plan took, of how many available."""

    group: str
    taken: int
    available: int


@dataclass(frozen=True)
class Plan:
    """The samples a run evaluates, in storage order, and how they were chosen."""

    kind: PlanKind
    params: Mapping[str, Any]
    samples: tuple[Sample, ...]
    strata: tuple[StratumCount, ...]  # in order of first appearance in storage order
    total: int  # samples available
    note: str = ""  # adjustments worth telling the user (e.g. an image pair kept whole)
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.samples]

    def describe(self) -> list[str]:
        """Human summary: a headline, the note if any, then one 'group taken/available' line per stratum."""
        if self.kind == "all":
            head = f"all {self.total} samples"
        elif self.kind == "limit":
            head = f"--limit {_fmt(self.params['limit'])}: first {len(self)} of {self.total} samples"
        else:
            head = (
                f"stratified sample: {len(self)} of {self.total} samples, "
                f"{len(self.strata)} strata, seed {self.params['seed']}"
            )
        lines = [head]
        if self.note:
            lines.append(self.note)
        width = max((len(s.group) for s in self.strata), default=0)
        lines += [f"{s.group:<{width}} {s.taken}/{s.available}" for s in self.strata]
        return lines

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record of the plan (ids rather than samples)."""
        return {
            "kind": self.kind,
            "params": dict(self.params),
            "n": len(self),
            "total": self.total,
            "note": self.note,
            "strata": [{"group": s.group, "taken": s.taken, "available": s.available} for s in self.strata],
            "ids": self.ids,
        }


def _fmt(value: Any) -> str:
    return "None" if value is None else (f"{value:g}" if isinstance(value, float) else str(value))


def _strata(samples: Sequence[Sample], chosen: Sequence[Sample]) -> tuple[StratumCount, ...]:
    available: dict[str, int] = {}
    for s in samples:
        available[s.group] = available.get(s.group, 0) + 1
    taken: dict[str, int] = {}
    for s in chosen:
        taken[s.group] = taken.get(s.group, 0) + 1
    return tuple(StratumCount(g, taken.get(g, 0), n) for g, n in available.items())


def resolve_limit(limit: float | None, total: int) -> int:
    """lmms-eval's `get_sample_size`: None/-1 all, 0<limit<1 ceil(total*limit), else int(limit), capped."""
    if limit is None or limit == -1:
        return total
    if limit < 0:
        raise ConfigError(f"--limit {_fmt(limit)} is negative", hint="use -1 for all, or a count or fraction")
    if 0 < limit < 1:
        # float arithmetic on purpose, as lmms-eval: 100 * 0.07 == 7.000000000000001 -> 8 samples
        return min(total, math.ceil(total * limit))
    return min(total, int(limit))


def plan_all(samples: Sequence[Sample]) -> Plan:
    """Every sample."""
    return Plan("all", {}, tuple(samples), _strata(samples, samples), len(samples))


def plan_limit(samples: Sequence[Sample], limit: float | None) -> Plan:
    """lmms-eval `--limit` semantics on storage order, never splitting a cluster (MME image pair)."""
    n = resolve_limit(limit, len(samples))
    chosen = set(range(n))
    first = samples[:n]
    clusters = {s.cluster for s in first}
    # partners of the clusters touched, wherever they sit (adjacent in MME, but do not rely on it)
    extra = [i for i in range(n, len(samples)) if samples[i].cluster in clusters]
    note = ""
    if extra:
        split_clusters = list(dict.fromkeys(samples[i].cluster for i in extra))
        names = ", ".join(split_clusters[:3]) + (" ..." if len(split_clusters) > 3 else "")
        kind = "image pair" if len(split_clusters) == 1 else f"{len(split_clusters)} image pairs"
        note = f"--limit {_fmt(limit)} would split {kind} {names}; took {n + len(extra)}"
        chosen.update(extra)
    picked = tuple(samples[i] for i in sorted(chosen))
    params = {"limit": limit, "resolved": n}
    return Plan("limit", params, picked, _strata(samples, picked), len(samples), note)


def unit_rank(seed: int, cluster: str) -> bytes:
    """The seeded sort key of one unit: sha256 of seed and cluster id (stable everywhere)."""
    return hashlib.sha256(f"vlmparity-stratified\x1f{seed}\x1f{cluster}".encode()).digest()


def allocate(sizes: Mapping[str, int], units: int, seed: int = 0) -> dict[str, int]:
    """Split `units` over strata of `sizes` units: proportional, largest remainder, >= 1 each if possible.

    Ties in the remainders are broken by a seeded hash of the stratum name, never by dict order.
    """
    total = sum(sizes.values())
    units = max(0, min(units, total))
    if units == total:
        return dict(sizes)
    quotas = {g: Fraction(units * n, total) for g, n in sizes.items()}
    alloc = {g: math.floor(q) for g, q in quotas.items()}
    left = units - sum(alloc.values())
    order = sorted(sizes, key=lambda g: (-(quotas[g] - alloc[g]), unit_rank(seed, g)))
    for g in order[:left]:
        alloc[g] += 1
    if units >= len(sizes):
        # every stratum gets one unit, taken from the stratum that most exceeds its exact quota
        for g in sorted(sizes, key=lambda g: unit_rank(seed, g)):
            if alloc[g] == 0 and sizes[g] > 0:
                donor = max(
                    (d for d in sizes if alloc[d] > 1),
                    key=lambda d: (alloc[d] - quotas[d], alloc[d], unit_rank(seed, d)),
                )
                alloc[donor] -= 1
                alloc[g] = 1
    return alloc


def plan_stratified(samples: Sequence[Sample], n: int, seed: int) -> Plan:
    """A seeded stratified sample of about `n` samples over groups, whole clusters, storage order.

    `n` counts samples; with two-question MME pairs the plan takes ceil(n/2) pairs (n or n+1 samples).
    """
    if n < 0:
        raise ConfigError(f"sample size {n} is negative", hint="give a positive number of samples")
    # units: clusters, in first-appearance order, each with the stratum of its first sample
    unit_members: dict[str, list[int]] = {}
    unit_group: dict[str, str] = {}
    for i, s in enumerate(samples):
        unit_members.setdefault(s.cluster, []).append(i)
        unit_group.setdefault(s.cluster, s.group)
    by_group: dict[str, list[str]] = {}
    for cluster, group in unit_group.items():
        by_group.setdefault(group, []).append(cluster)
    total_units = len(unit_members)
    units = min(total_units, math.ceil(Fraction(n * total_units, len(samples)))) if samples else 0
    alloc = allocate({g: len(c) for g, c in by_group.items()}, units, seed)
    chosen: list[int] = []
    for group, clusters in by_group.items():
        ranked = sorted(clusters, key=lambda c: unit_rank(seed, c))
        for cluster in ranked[: alloc[group]]:
            chosen.extend(unit_members[cluster])
    picked = tuple(samples[i] for i in sorted(chosen))
    note = ""
    if n > len(samples):
        note = f"asked for {n} samples, only {len(samples)} exist; took all"
    elif len(picked) != n:
        note = f"took {len(picked)} samples for {n} to keep image pairs whole"
    params = {"n": n, "seed": seed, "units": units}
    return Plan("stratified", params, picked, _strata(samples, picked), len(samples), note)


def sequential_keys(samples: Sequence[Sample], seed: int = 0) -> list[float]:
    """Each sample's place in a balanced sending order, as a fraction in (0, 1] (whole clusters).

    Strata are (task, group): MME categories and MMMU subjects. Within a stratum of n units, units are
    ranked by `unit_rank(seed, cluster)` and the j-th (0-based) gets the key (j + 1/2) / n; both samples
    of an MME image pair share their unit's key. The samples with key <= t are then, in every stratum,
    round(t n) units (within half a unit of the proportional share) for every t: every prefix of the
    order `sequential_order` gives is a stratified sample, and the look at fraction t of a
    group-sequential comparison is exactly the samples with key <= t.
    """
    unit_group: dict[tuple[str, str], tuple[str, str]] = {}
    for s in samples:
        unit_group.setdefault((s.task, s.cluster), (s.task, s.group))
    by_group: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for unit, group in unit_group.items():
        by_group.setdefault(group, []).append(unit)
    key: dict[tuple[str, str], float] = {}
    for units in by_group.values():
        ranked = sorted(units, key=lambda u: unit_rank(seed, f"{u[0]}\x1f{u[1]}"))
        n = len(ranked)
        for j, unit in enumerate(ranked):
            key[unit] = (j + 0.5) / n
    return [key[(s.task, s.cluster)] for s in samples]


def sequential_order(samples: Sequence[Sample], seed: int = 0) -> list[int]:
    """Indices of `samples` in the balanced sending order of `sequential_keys` (ties: seeded hash of the
    unit, so both questions of an MME image pair are adjacent; then storage order)."""
    keys = sequential_keys(samples, seed)
    return sorted(
        range(len(samples)),
        key=lambda i: (keys[i], unit_rank(seed, f"{samples[i].task}\x1f{samples[i].cluster}"), i),
    )
