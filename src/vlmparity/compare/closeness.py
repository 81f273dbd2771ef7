"""Token-level closeness between two runs, and a likely cause for every disagreement (issue 15).

Accuracy parity needs thousands of questions and cannot say *why* two engines disagree; the answers already
carry the fingerprints that can: `usage.prompt_tokens`, `finish_reason`, and (with `logprobs: true`) one
log-probability per generated token. For each paired sample this module computes a `Fingerprint`:

- exact text equality, token-sequence agreement (token ids when both servers gave them, else token texts)
  and the first divergence position;
- |Δ logprob| over the agreeing prefix (mean, max) and for the first generated token, and the two chosen
  tokens' log-probabilities at the divergence;
- the prompt-token and finish-reason differences;
- the kind of disagreement: `format-only` (texts differ, parsed answers equal), `answer flip`, `failure`
  (one side failed), `length-limit` (one side stopped at the length limit, the other did not);
- the likely cause, with its evidence (`cause_of`).

`closeness(joined)` aggregates per task and overall (token agreement rate, |Δ logprob| median / p95 / max
over every agreeing-prefix token, share of prompt-token mismatches), names the run's likely cause(s)
(`run_causes`) and states the numerical closeness against fixed thresholds (`statement`). None of this
enters the accuracy verdict or the exit code. Pure functions of the stores: nothing is sent.

Thresholds (documented in the user guide, "Numerical closeness"):
- CLOSE_P95 = 1e-4: faithful engines on the same weights and precision differ by rounding (~1e-5);
- NEAR_P95 = 1e-2: another precision (bf16/fp16 vs f32, int8 KV cache) moves log-probabilities by ~1e-3;
- TOKEN_AGREEMENT_CLOSE = 0.99: share of token-identical answers for "close";
- per-pair: a divergence is a numeric near-tie when the prompts are equal, the agreeing prefix differs by
  at most PREFIX_TOL = 0.05, both chosen tokens at the divergence had probability below TIE_PROB = 0.9 and
  their log-probabilities differ by at most TIE_DELTA = 0.5; "different weights or preprocessing" when the
  first token's |Δ| is at least LARGE_DELTA = 0.1 (or the very first token differs with confidence);
- run level: a prompt-token difference names a cause when it is the same on at least ALWAYS = 95 % of the
  samples with token counts: ±1 → BOS / chat template; the same multiple k of each sample's image count,
  with |k| >= 2 and either differing image counts or |k| >= IMAGE_MIN = 16 → image-token count; else the
  prompt or chat template; one side *alone* at the length limit on at least 2 % of the answers (and at
  least 2), the other side alone at most a tenth as often, names the max-tokens default.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from vlmparity.compare.join import Joined, LoadedRun, Pair
from vlmparity.store import ResultRecord, Store
from vlmparity.tokentrace import TokenTrace

CLOSE_P95 = 1e-4
NEAR_P95 = 1e-2
TOKEN_AGREEMENT_CLOSE = 0.99
PREFIX_TOL = 0.05
TIE_PROB = 0.9
TIE_DELTA = 0.5
LARGE_DELTA = 0.1
ALWAYS = 0.95
LENGTH_SHARE = 0.02  # one side alone at the length limit on at least 2 % of the answers (and 2 of them) ...
LENGTH_MIN = 2
IMAGE_MIN = 16  # a per-image prompt-token difference this large is the image-token count, not a template
LENGTH_OTHER = 0.1  # ... and the other side alone at most a tenth as often

# kinds of disagreement
FORMAT_ONLY = "format-only"
ANSWER_FLIP = "answer flip"
FAILURE = "failure"
LENGTH_LIMIT = "length-limit"

# causes
BOS = "BOS token / chat template"
IMAGE_TOKENS = "image-token count"
PROMPT = "prompt or chat template"
NEAR_TIE = "numeric near-tie"
WEIGHTS = "different weights or preprocessing"
PRECISION = "numeric precision"
MAX_TOKENS = "max-tokens default"
REQUEST_FAILURE = "request failure"
UNKNOWN = "unknown"

STATEMENT_CLOSE = "numerically close"
STATEMENT_NEAR = "numerically near"
STATEMENT_DIFFERENT = "numerically different"
STATEMENT_NOT_MEASURED = "not measured"


@dataclass(frozen=True)
class Fingerprint:
    """What two engines' answers to one sample say about how they differ."""

    task: str
    sample_id: str
    text_equal: bool
    answered: tuple[bool, bool]
    outcome: tuple[str, str]
    finish: tuple[str | None, str | None]
    prompt_tokens: tuple[int | None, int | None]
    completion_tokens: tuple[int | None, int | None]
    image_count: int
    compared: bool = False  # both sides had a token trace
    tokens_agree: bool | None = None
    first_divergence: int | None = None  # index of the first differing token (None: no divergence)
    prefix_len: int = 0
    prefix_mean: float | None = None  # mean |Δ logprob| over the agreeing prefix
    prefix_max: float | None = None
    first_delta: float | None = None  # |Δ logprob| of the first generated token (when it agrees)
    divergence_logprobs: tuple[float, float] | None = None  # chosen tokens' logprobs at the divergence
    kind: str | None = None  # None when the answers are the same text
    cause: str | None = None
    evidence: str = ""
    deltas: tuple[float, ...] = field(default=(), repr=False)  # the prefix |Δ|s (aggregated, not shown)

    @property
    def prompt_diff(self) -> int | None:
        a, b = self.prompt_tokens
        return None if a is None or b is None else b - a

    @property
    def finish_differs(self) -> bool:
        return self.finish[0] != self.finish[1]

    def summary(self) -> str:
        """One short line: what differs (for the terminal and the report's disagreement rows)."""
        parts = []
        d = self.prompt_diff
        if d is not None:
            parts.append(f"prompt tokens {d:+d}" if d else "prompt tokens equal")
        if self.compared:
            if self.tokens_agree:
                parts.append(f"tokens agree ({self.prefix_len})")
            else:
                parts.append(f"tokens diverge at {self.first_divergence}")
            if self.prefix_max is not None:
                parts.append(f"prefix |Δlp| max {_g(self.prefix_max)}")
            if self.first_delta is not None:
                parts.append(f"first-token |Δlp| {_g(self.first_delta)}")
            if self.divergence_logprobs is not None:
                la, lb = self.divergence_logprobs
                parts.append(f"lp at divergence {la:.3f}/{lb:.3f}")
        if self.finish_differs:
            parts.append(f"finish {self.finish[0]}/{self.finish[1]}")
        return "; ".join(parts)


def _g(x: float) -> str:
    return f"{x:.2g}"


def _sequence(trace: TokenTrace) -> tuple[Any, ...] | None:
    if trace.token_ids is not None:
        return trace.token_ids
    return trace.tokens


def fingerprint(
    task: str,
    pair: Pair,
    rec_a: ResultRecord | None,
    rec_b: ResultRecord | None,
    trace_a: TokenTrace | None,
    trace_b: TokenTrace | None,
) -> Fingerprint:
    """The per-sample fingerprint and, for a disagreement, its likely cause."""
    a, b = pair.a, pair.b
    fields_: dict[str, Any] = {
        "task": task,
        "sample_id": pair.sample.id,
        "text_equal": a.answered and b.answered and a.text == b.text,
        "answered": (a.answered, b.answered),
        "outcome": (a.outcome, b.outcome),
        "finish": (
            rec_a.finish_reason if rec_a is not None and a.answered else None,
            rec_b.finish_reason if rec_b is not None and b.answered else None,
        ),
        "prompt_tokens": (
            rec_a.prompt_tokens if rec_a is not None and a.answered else None,
            rec_b.prompt_tokens if rec_b is not None and b.answered else None,
        ),
        "completion_tokens": (
            rec_a.completion_tokens if rec_a is not None and a.answered else None,
            rec_b.completion_tokens if rec_b is not None and b.answered else None,
        ),
        "image_count": len(pair.sample.images) or pair.sample.omitted_images,
    }
    if a.answered and b.answered and trace_a is not None and trace_b is not None:
        sa, sb = _sequence(trace_a), _sequence(trace_b)
        if sa is None or sb is None:  # no token identities: the log-probabilities alone, position by position
            n = min(len(trace_a), len(trace_b)) if a.text == b.text else 0
            agree = a.text == b.text and len(trace_a) == len(trace_b)
            div = None if agree else n
        else:
            n = 0
            limit = min(len(sa), len(sb), len(trace_a), len(trace_b))
            while n < limit and sa[n] == sb[n]:
                n += 1
            agree = len(sa) == len(sb) and n == len(sa)
            div = None if agree else n
        lpa, lpb = trace_a.logprobs, trace_b.logprobs
        deltas = tuple(abs(lpa[i] - lpb[i]) for i in range(n))
        fields_.update(
            compared=True,
            tokens_agree=agree,
            first_divergence=div,
            prefix_len=n,
            prefix_mean=(sum(deltas) / n) if n else None,
            prefix_max=max(deltas) if n else None,
            first_delta=deltas[0] if n else None,
            divergence_logprobs=(
                (lpa[div], lpb[div]) if div is not None and div < len(lpa) and div < len(lpb) else None
            ),
            deltas=deltas,
        )
    fp = Fingerprint(**fields_)
    kind = kind_of(fp, pair)
    if kind is None:
        return fp
    cause, evidence = cause_of(fp)
    return _replace(fp, kind=kind, cause=cause, evidence=evidence)


def _replace(fp: Fingerprint, **changes: Any) -> Fingerprint:
    from dataclasses import replace

    return replace(fp, **changes)


def kind_of(fp: Fingerprint, pair: Pair) -> str | None:
    """The kind of disagreement, or None when both answered the same text (or both failed)."""
    ok_a, ok_b = fp.answered
    if ok_a != ok_b:
        return FAILURE
    if not ok_a:
        return None
    if fp.text_equal:
        return None
    if fp.finish_differs and "length" in fp.finish:
        return LENGTH_LIMIT
    if _same_parsed(pair.a.parsed, pair.b.parsed):
        return FORMAT_ONLY
    return ANSWER_FLIP


def _same_parsed(x: Any, y: Any) -> bool:
    def norm(v: Any) -> Any:
        return tuple(v) if isinstance(v, list) else v

    return bool(norm(x) == norm(y))


def cause_of(fp: Fingerprint) -> tuple[str, str]:
    """The likely cause of one disagreement and the evidence it rests on."""
    ok_a, ok_b = fp.answered
    if ok_a != ok_b:
        failed = fp.outcome[1] if ok_a else fp.outcome[0]
        return REQUEST_FAILURE, f"{'candidate' if ok_a else 'reference'} failed ({failed})"
    if fp.finish_differs and "length" in fp.finish:
        side = "reference" if fp.finish[0] == "length" else "candidate"
        ca, cb = fp.completion_tokens
        return MAX_TOKENS, f"the {side} stopped at the length limit (completion tokens {ca} vs {cb})"
    d = fp.prompt_diff
    if d:
        if abs(d) == 1:
            return BOS, f"prompt tokens differ by {d:+d}"
        if fp.image_count and d % fp.image_count == 0 and abs(d // fp.image_count) >= IMAGE_MIN:
            return IMAGE_TOKENS, f"prompt tokens differ by {d:+d} ({d // fp.image_count:+d} per image)"
        return PROMPT, f"prompt tokens differ by {d:+d}"
    if not fp.compared:
        return UNKNOWN, "no log-probabilities to compare" + ("" if d == 0 else " and no prompt-token counts")
    if fp.first_delta is not None and fp.first_delta >= LARGE_DELTA:
        return WEIGHTS, f"|Δ logprob| {_g(fp.first_delta)} already at the first token"
    if fp.first_divergence is not None and fp.divergence_logprobs is not None:
        la, lb = fp.divergence_logprobs
        prefix_ok = fp.prefix_max is None or fp.prefix_max <= PREFIX_TOL
        tie = max(la, lb) < math.log(TIE_PROB) and abs(la - lb) <= TIE_DELTA
        where = f"token {fp.first_divergence}"
        if prefix_ok and tie:
            prefix = "" if fp.prefix_max is None else f", prefix |Δ| max {_g(fp.prefix_max)}"
            return NEAR_TIE, (
                f"equal prompts, tokens agree up to {where}{prefix}; both picks uncertain there "
                f"(logprobs {la:.3f} / {lb:.3f})"
            )
        if fp.first_divergence == 0 and not tie:
            return WEIGHTS, f"the first token differs with confidence (logprobs {la:.3f} / {lb:.3f})"
        return UNKNOWN, f"diverges at {where} (logprobs {la:.3f} / {lb:.3f}), not a near-tie"
    return UNKNOWN, "same tokens, different text (detokenisation?)"


# ----- aggregates ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distribution:
    n: int
    median: float | None
    p95: float | None
    max: float | None

    @classmethod
    def of(cls, values: Sequence[float] | np.ndarray[Any, Any]) -> Distribution:
        arr = np.asarray(values, dtype=np.float64)
        if arr.size == 0:
            return cls(0, None, None, None)
        return cls(
            int(arr.size),
            float(np.median(arr)),
            float(np.quantile(arr, 0.95)),
            float(arr.max()),
        )

    def as_dict(self) -> dict[str, Any]:
        return {"n_tokens": self.n, "median": self.median, "p95": self.p95, "max": self.max}


@dataclass(frozen=True)
class Cause:
    """A likely cause for the run as a whole, with the evidence."""

    cause: str
    evidence: str


@dataclass(frozen=True)
class TaskCloseness:
    task: str
    n_pairs: int
    n_compared: int  # pairs with both token traces
    n_token_agree: int
    n_text_equal: int
    n_prompt_known: int
    n_prompt_mismatch: int
    deltas: Distribution  # |Δ logprob| over every agreeing-prefix token
    first_deltas: Distribution  # |Δ logprob| of the first generated token
    kinds: Mapping[str, int]
    causes: Mapping[str, int]

    @property
    def token_agreement(self) -> float | None:
        return self.n_token_agree / self.n_compared if self.n_compared else None

    @property
    def prompt_mismatch_share(self) -> float | None:
        return self.n_prompt_mismatch / self.n_prompt_known if self.n_prompt_known else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "pairs": self.n_pairs,
            "compared": self.n_compared,
            "token_agreement": self.token_agreement,
            "text_equal": self.n_text_equal,
            "prompt_token_mismatch_share": self.prompt_mismatch_share,
            "abs_logprob_delta": self.deltas.as_dict(),
            "first_token_abs_logprob_delta": self.first_deltas.as_dict(),
            "disagreements": dict(self.kinds),
            "causes": dict(self.causes),
        }


@dataclass(frozen=True)
class Closeness:
    """Token-level closeness of a candidate to the reference: per task, overall, the run's causes."""

    reference: str
    candidate: str
    tasks: tuple[TaskCloseness, ...]
    overall: TaskCloseness
    fingerprints: tuple[Fingerprint, ...]  # every pair's (disagreements carry kind and cause)
    causes: tuple[Cause, ...]
    statement: str  # close | near | different | not measured
    statement_text: str

    @property
    def disagreements(self) -> list[Fingerprint]:
        return [f for f in self.fingerprints if f.kind is not None]

    def by_sample(self) -> dict[tuple[str, str], Fingerprint]:
        return {(f.task, f.sample_id): f for f in self.fingerprints}

    def as_dict(self, *, max_rows: int = 200) -> dict[str, Any]:
        rows = self.disagreements
        return {
            "statement": self.statement,
            "statement_text": self.statement_text,
            "thresholds": {
                "close_p95": CLOSE_P95,
                "near_p95": NEAR_P95,
                "token_agreement_close": TOKEN_AGREEMENT_CLOSE,
                "near_tie_prefix_tol": PREFIX_TOL,
                "near_tie_prob": TIE_PROB,
                "near_tie_delta": TIE_DELTA,
                "large_delta": LARGE_DELTA,
                "always_share": ALWAYS,
            },
            "causes": [{"cause": c.cause, "evidence": c.evidence} for c in self.causes],
            "overall": self.overall.as_dict(),
            "tasks": {t.task: t.as_dict() for t in self.tasks},
            "disagreements": [fingerprint_record(f) for f in rows[:max_rows]],
            "disagreements_total": len(rows),
        }


def fingerprint_record(f: Fingerprint) -> dict[str, Any]:
    return {
        "task": f.task,
        "sample_id": f.sample_id,
        "kind": f.kind,
        "cause": f.cause,
        "evidence": f.evidence,
        "text_equal": f.text_equal,
        "tokens_agree": f.tokens_agree,
        "first_divergence": f.first_divergence,
        "prefix_abs_logprob_delta_mean": f.prefix_mean,
        "prefix_abs_logprob_delta_max": f.prefix_max,
        "first_token_abs_logprob_delta": f.first_delta,
        "prompt_token_diff": f.prompt_diff,
        "finish_reason": list(f.finish),
    }


def _task_closeness(task: str, fps: Sequence[Fingerprint]) -> TaskCloseness:
    compared = [f for f in fps if f.compared]
    known = [f for f in fps if f.prompt_diff is not None]
    deltas = np.fromiter((d for f in compared for d in f.deltas), dtype=np.float64)
    return TaskCloseness(
        task=task,
        n_pairs=len(fps),
        n_compared=len(compared),
        n_token_agree=sum(1 for f in compared if f.tokens_agree),
        n_text_equal=sum(1 for f in fps if f.text_equal),
        n_prompt_known=len(known),
        n_prompt_mismatch=sum(1 for f in known if f.prompt_diff),
        deltas=Distribution.of(deltas),
        first_deltas=Distribution.of([f.first_delta for f in compared if f.first_delta is not None]),
        kinds=dict(Counter(f.kind for f in fps if f.kind is not None)),
        causes=dict(Counter(f.cause for f in fps if f.cause is not None)),
    )


def run_causes(fps: Sequence[Fingerprint], overall: TaskCloseness) -> list[Cause]:
    """The likely causes for the run as a whole (none when the two engines compute the same thing)."""
    out: list[Cause] = []
    known = [f for f in fps if f.prompt_diff is not None]
    differing = [f for f in known if f.prompt_diff]
    if known and len(differing) >= ALWAYS * len(known):
        diffs = Counter(f.prompt_diff for f in differing)
        top, count = diffs.most_common(1)[0]
        assert top is not None
        per_image = Counter(
            f.prompt_diff // f.image_count
            for f in differing
            if f.prompt_diff and f.image_count and f.prompt_diff % f.image_count == 0
        )
        k, k_count = per_image.most_common(1)[0] if per_image else (0, 0)
        image_counts = {f.image_count for f in differing}
        scales = len(image_counts) > 1  # the difference grows with the number of images
        where = f"on {count}/{len(known)} samples"
        if k and k_count >= ALWAYS * len(known) and abs(k) >= 2 and (scales or abs(k) >= IMAGE_MIN):
            how = (
                "the difference scales with the number of images" if scales else "every sample has one image"
            )
            out.append(
                Cause(
                    IMAGE_TOKENS,
                    f"prompt tokens differ by {k:+d} per image on {k_count}/{len(known)} samples ({how})",
                )
            )
        elif abs(top) == 1 and count >= ALWAYS * len(known):
            out.append(Cause(BOS, f"prompt tokens differ by {top:+d} {where}"))
        elif count >= ALWAYS * len(known):
            out.append(Cause(PROMPT, f"prompt tokens differ by {top:+d} {where}"))
        else:
            out.append(Cause(PROMPT, f"prompt tokens differ on {len(differing)}/{len(known)} samples"))
    answered = [f for f in fps if all(f.answered)]
    if answered:
        a_only = sum(1 for f in answered if f.finish[0] == "length" and f.finish[1] != "length")
        b_only = sum(1 for f in answered if f.finish[1] == "length" and f.finish[0] != "length")
        floor = max(LENGTH_MIN, math.ceil(LENGTH_SHARE * len(answered)))
        for side, mine, other in (("candidate", b_only, a_only), ("reference", a_only, b_only)):
            if mine >= floor and other <= mine * LENGTH_OTHER:
                out.append(
                    Cause(
                        MAX_TOKENS,
                        f"the {side} alone stopped at the length limit on {mine} of {len(answered)} answers "
                        f"(the other side alone on {other})",
                    )
                )
    compared = [f for f in fps if f.compared and f.prompt_diff in (0, None)]
    if compared:
        firsts = [f.first_delta for f in compared if f.first_delta is not None]
        med_first = float(np.median(firsts)) if firsts else None
        ties = [f for f in compared if f.cause == NEAR_TIE]
        if med_first is not None and med_first >= LARGE_DELTA:
            out.append(
                Cause(
                    WEIGHTS, f"median |Δ logprob| of the first token {_g(med_first)} on {len(firsts)} samples"
                )
            )
        elif ties:
            p95 = overall.deltas.p95
            out.append(
                Cause(
                    NEAR_TIE,
                    f"{len(ties)} divergence(s), each at a near-tie with equal prompts and an agreeing prefix"
                    + (
                        ""
                        if p95 is None
                        else f"; |Δ logprob| p95 {_g(p95)} over {overall.deltas.n} agreeing tokens"
                    ),
                )
            )
        elif overall.deltas.p95 is not None and overall.deltas.p95 > CLOSE_P95:
            out.append(
                Cause(
                    PRECISION,
                    f"|Δ logprob| p95 {_g(overall.deltas.p95)} (median {_g(overall.deltas.median or 0.0)}) "
                    f"over {overall.deltas.n} agreeing tokens, no token flipped",
                )
            )
    return out


def statement(overall: TaskCloseness) -> tuple[str, str]:
    """The numerical-closeness statement and its one-line explanation (thresholds: module docstring)."""
    if not overall.n_compared or overall.deltas.p95 is None:
        return STATEMENT_NOT_MEASURED, (
            "numerical closeness not measured (no log-probabilities stored for both runs; run with --logprobs)"
        )
    agree = overall.token_agreement or 0.0
    p95 = overall.deltas.p95
    figures = (
        f"tokens agree on {agree:.1%} of {overall.n_compared} answers, |Δ logprob| p95 {_g(p95)} "
        f"(median {_g(overall.deltas.median or 0.0)}, max {_g(overall.deltas.max or 0.0)})"
    )
    share = overall.prompt_mismatch_share
    if share:
        figures += f"; prompt tokens differ on {share:.0%} of samples"
    if p95 <= CLOSE_P95 and agree >= TOKEN_AGREEMENT_CLOSE:
        return STATEMENT_CLOSE, f"{STATEMENT_CLOSE}: {figures}"
    if p95 <= NEAR_P95:
        return STATEMENT_NEAR, f"{STATEMENT_NEAR}: {figures}"
    return STATEMENT_DIFFERENT, f"{STATEMENT_DIFFERENT}: {figures}"


def _traces(run: LoadedRun) -> dict[tuple[str, str], TokenTrace]:
    with Store.open(run.ref.directory, create=False) as store:
        return store.traces(run.ref.run.run_id)


def _records(run: LoadedRun, task: str) -> dict[str, ResultRecord]:
    score = run.scores[task]
    return {s.id: r for s, r in zip(score.samples, score.records, strict=True) if r is not None}


def closeness(joined: Joined) -> Closeness:
    """Fingerprints, aggregates, causes and the statement for one reference/candidate pair."""
    ta, tb = _traces(joined.reference), _traces(joined.candidate)
    per_task: list[TaskCloseness] = []
    all_fps: list[Fingerprint] = []
    for t in joined.tasks:
        ra, rb = _records(joined.reference, t.task), _records(joined.candidate, t.task)
        fps = [
            fingerprint(
                t.task,
                p,
                ra.get(p.sample.id),
                rb.get(p.sample.id),
                ta.get((t.task, p.sample.id)),
                tb.get((t.task, p.sample.id)),
            )
            for p in t.pairs
        ]
        per_task.append(_task_closeness(t.task, fps))
        all_fps.extend(fps)
    overall = _task_closeness("overall", all_fps)
    causes = run_causes(all_fps, overall)
    word, text = statement(overall)
    return Closeness(
        reference=joined.reference.label,
        candidate=joined.candidate.label,
        tasks=tuple(per_task),
        overall=overall,
        fingerprints=tuple(all_fps),
        causes=tuple(causes),
        statement=word,
        statement_text=text,
    )
