"""What the two endpoints' answers say about the infrastructure: outcome counts, the error-rate gate,
image-limit refusals and what to do about them, and the notes that do not invalidate a comparison.

Part of `analysis` (the comparison), apart for size: infrastructure problems make `compare` exit 3
whatever the verdict.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from vlmparity.backends import backend_kinds, get_backend
from vlmparity.compare.join import PAIRED_FALLBACK, LoadedRun, Pair, Side, TaskJoin, is_missing


@dataclass(frozen=True)
class Health:
    """What one endpoint returned for the paired samples: outcome counts and the error rate."""

    label: str
    n: int
    outcomes: dict[str, int]
    failures: int  # errors the endpoint returned (missing excluded)
    missing: int  # no stored answer (an interrupted run)

    @property
    def error_rate(self) -> float:
        return self.failures / self.n if self.n else 0.0


def health(label: str, sides: Sequence[Side]) -> Health:
    """Outcome counts of one endpoint over the paired samples."""
    counts = Counter(s.outcome for s in sides)
    missing = sum(1 for s in sides if is_missing(s))
    failures = sum(1 for s in sides if not s.answered and not is_missing(s))
    return Health(label, len(sides), dict(sorted(counts.items())), failures, missing)


def _failure_detail(h: Health) -> str:
    from vlmparity.store import ANSWERED

    parts = [f"{k}={n}" for k, n in h.outcomes.items() if k not in ANSWERED and k != "missing"]
    return ", ".join(parts)


@dataclass(frozen=True)
class ImageLimit:
    """What one run knows about its image limit: the server kind, the limit it reported, `--max-images`."""

    kind: str = ""
    server_limit: int | None = None
    max_images: int | None = None


def image_limit_of(run: LoadedRun) -> ImageLimit:
    """The run's backend kind, the image limit its server reported and its `--max-images`, from the store."""
    options = run.ref.run.config.get("options") or {}
    max_images = options.get("max_images") if isinstance(options, dict) else None
    return ImageLimit(
        kind=run.ref.run.kind,
        server_limit=run.ref.run.image_limit,
        max_images=max_images if isinstance(max_images, int) else None,
    )


@dataclass(frozen=True)
class Unsupported:
    """One endpoint's `unsupported` samples (too many images): how many, why, and what to do."""

    n: int
    what: str  # "vllm: 46 of 900 mmmu_val samples"
    why: str
    remedy: str

    def text(self, extra: str = "") -> str:
        return f"{self.what} unsupported ({extra}{self.why}): {self.remedy}"


def unsupported_advice(
    label: str, joined_tasks: Sequence[TaskJoin], side: str, limit: ImageLimit
) -> Unsupported | None:
    """Why one endpoint's samples (side "a" or "b") were `unsupported` and what to do, if any were."""
    parts, n, most = [], 0, 0
    for t in joined_tasks:
        refused = [p for p in t.pairs if getattr(p, side).outcome == "unsupported"]
        if refused:
            parts.append(f"{len(refused)} of {len(t.pairs)} {t.task} samples")
            n += len(refused)
            most = max([most, *(p.sample.image_count for p in refused)])
    if not parts:
        return None
    many = f"{most} image{'s' if most != 1 else ''}"
    rerun = (
        "or rerun with --multi-image skip (those samples left out for every endpoint, and counted) or "
        "--multi-image merge (their images tiled into one)"
    )
    k = limit.server_limit
    if k is not None and (limit.max_images is None or k <= limit.max_images):
        why = f"the server accepts {k} image{'s' if k != 1 else ''} per request, they have up to {most}"
        option = get_backend(limit.kind).raise_image_limit(most) if limit.kind in backend_kinds() else None
        if option:
            fix = (
                f"restart it with {option} and rerun the same "
                "`vlmparity run` (the refused samples are sent again)"
            )
        else:
            fix = f"raise the server's limit to {many} per request and rerun the same `vlmparity run`"
    elif limit.max_images is not None:
        why = f"--max-images {limit.max_images}, they have up to {most}"
        fix = f"rerun with --max-images {most} (or without it) if the server accepts {many}"
    else:
        why = f"the server refused them as having too many images, they have up to {most}"
        fix = f"raise the server's limit to {many} per request"
    return Unsupported(n, f"{label}: {', '.join(parts)}", why, f"{fix}, {rerun}")


def problems(
    joined_tasks: Sequence[TaskJoin],
    ha: Health,
    hb: Health,
    max_error_rate: float,
    limits: tuple[ImageLimit, ImageLimit] = (ImageLimit(), ImageLimit()),
) -> list[str]:
    """Infrastructure failures that make the comparison untrustworthy (exit 3).

    `limits` (reference, candidate) explain `unsupported` failures: the limit and what to do about it.
    """
    out = []
    mismatched = sum(len(t.mismatched) for t in joined_tasks)
    if mismatched:
        first = next(f"{t.task} {t.mismatched[0]!r}" for t in joined_tasks if t.mismatched)
        out.append(
            f"{mismatched} sample(s) were sent different requests (request_hash differs; first: {first}): "
            "excluded from the comparison; rerun both with the same data, generation and image options"
        )
    for h, side, limit in ((ha, "a", limits[0]), (hb, "b", limits[1])):
        if h.missing:
            out.append(
                f"{h.label} has no answer for {h.missing} of {h.n} sample(s) (an interrupted run?): "
                "rerun its `vlmparity run` command to finish it"
            )
        if h.n and h.error_rate > max_error_rate:
            gate = f"above --max-error-rate {100 * max_error_rate:g}%"
            advice = unsupported_advice(h.label, joined_tasks, side, limit)
            if advice is not None and advice.n == h.failures:
                # every failure is an image-limit refusal: one line saying so and what to do
                out.append(advice.text(f"{100 * h.error_rate:.1f}% of requests, {gate}; "))
                continue
            out.append(
                f"{h.label}: {h.failures} of {h.n} requests failed ({100 * h.error_rate:.1f}%: "
                f"{_failure_detail(h)}), {gate}; once the cause is fixed, rerun its `vlmparity run` with "
                "--rerun-errors (a plain rerun resends only transient failures)"
            )
            if advice is not None:
                out.append(advice.text())
    for t in joined_tasks:
        if not t.pairs:
            out.append(f"{t.task}: no sample of the two runs can be paired")
    return out


def notes(joined_tasks: Sequence[TaskJoin], a: str, b: str) -> list[str]:
    """Things worth saying that do not invalidate the comparison."""
    out = []
    for t in joined_tasks:
        if t.only_reference or t.only_candidate:
            out.append(
                f"{t.task}: {len(t.only_reference)} sample(s) only in {a}, {len(t.only_candidate)} only in "
                f"{b} (different sampling plans): compared on the {len(t.pairs)} in both"
            )
        if t.skipped:
            out.append(f"{t.task}: {len(t.skipped)} sample(s) skipped (--multi-image skip): not compared")
        fa, fb = fallback_counts(t.pairs)
        if fa or fb:
            out.append(
                f"{t.task}: {fa} answer(s) of {a} and {fb} of {b} had no option letter; their random letter "
                f"is drawn per sample (seeded by the sample id: {PAIRED_FALLBACK}), so identical answers get identical letters (the runs' own "
                "reported scores use lmms-eval's sequential draw and may differ slightly)"
            )
    return out


def fallback_counts(pairs: Sequence[Pair]) -> tuple[int, int]:
    """Answers given a random letter on each side (MMMU multiple choice without a parseable letter)."""
    return sum(p.a.random_fallback for p in pairs), sum(p.b.random_fallback for p in pairs)
