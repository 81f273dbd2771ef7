"""Calibrate the fixed-size and the group-sequential verdicts on full MME + MMMU-val (no HTTP).

Simulated paired runs (vlmparity.compare.calibration, vectorised): the reference answers each question
right with probability 0.8 (MME) or 0.5 (MMMU-val); the candidate answers a share `discordance` of the
questions differently, half each way (equal accuracy), plus a true drop (right answers turned wrong).
Each trial is one full comparison: MME (2374 questions, 1187 image pairs, 14 categories; mme_acc,
mme_perception_score, mme_cognition_score) and MMMU-val (900 questions, 30 subjects; mmmu_acc), four
metrics judged together, default margins unless the scenario says otherwise. The fixed-size verdict is
`verdict.decide` (vectorised, checked equal to it in tests/test_sequential.py); the sequential verdict is
`compare.sequential` with looks at 10 %, 20 %, ..., 100 % of the balanced order
(`data.sampling.sequential_keys`); a part (MME perception, MME cognition, MMMU-val) stops being sent once
every metric it feeds is equivalent, and its samples so far count as used.

Prints, per scenario and verdict: the share of trials ending equivalent / inconclusive / not
equivalent, and the mean and 90th-percentile share of the samples used. "False alarm" is `not
equivalent` with no true difference; "power" is `not equivalent` for a true drop; at a drop equal to
the margin `equivalent` is the error to keep <= alpha. Then, for the fixed size, the smallest margin
each benchmark certifies with probability 0.8 at full size (80th percentile of |d| + h at level alpha,
no true difference), per discordance: what to pass as --margin.

    python bench/verdict_calibration.py [--trials 1000] [--looks 10] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from vlmparity.compare import calibration as c
from vlmparity.compare import sequential as seq
from vlmparity.compare import verdict as v

MME_ACC, MMMU_ACC = 0.8, 0.5


@dataclass(frozen=True)
class Scenario:
    name: str
    discordance: float
    drop: float = 0.0  # on every question of both benchmarks (a fraction)
    category: str | None = None  # the drop only in this MME category (MMMU unchanged)
    margins: tuple[float, float, float] = c.DEFAULT_MARGINS
    note: str = ""


LOOSE = (0.02, 50.0, 40.0)  # margins full MME + MMMU-val can certify at 1 % discordance (table below)

SCENARIOS = (
    Scenario("identical answers", 0.0, note="false alarm; time to equivalence"),
    Scenario("no difference, 1 % discordance", 0.01, note="false alarm"),
    Scenario("no difference, 1 %, margins 2pp/50/40", 0.01, margins=LOOSE, note="false alarm; time to eq."),
    Scenario("no difference, 5 % discordance", 0.05, note="false alarm (realistic discordance)"),
    Scenario("1-pt drop, 1 % discordance", 0.01, 0.01, note="equivalent = error (at the margin)"),
    Scenario("2-pt drop, 1 % discordance", 0.01, 0.02, note="power"),
    Scenario("2-pt drop, 5 % discordance", 0.05, 0.02, note="power (realistic discordance)"),
    Scenario("5-pt drop, 1 % discordance", 0.01, 0.05, note="power; time to not equivalent"),
    Scenario(
        "20-pt drop in MME celebrity only", 0.01, 0.20, category="celebrity", note="power (concentrated)"
    ),
)


def simulate(
    layout: c.Layout, s: Scenario, trials: int, rng: np.random.Generator
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    n_mme = layout.mme.categories.size
    if s.category is not None:
        drop_mme = np.where(layout.mme.categories == s.category, s.drop, 0.0)
        drop_mmmu = 0.0
    else:
        drop_mme, drop_mmmu = np.full(n_mme, s.drop), s.drop
    mme = c.simulate(*c.flip_rates(MME_ACC, s.discordance, drop_mme), n_mme, trials, MME_ACC, rng)
    mmmu = c.simulate(*c.flip_rates(MMMU_ACC, s.discordance, drop_mmmu), 900, trials, MMMU_ACC, rng)
    return mme, mmmu


def rates(verdicts: np.ndarray) -> tuple[float, float, float]:
    return tuple(float(np.mean(verdicts == k)) for k in (v.EQUIVALENT, v.INCONCLUSIVE, v.NOT_EQUIVALENT))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--looks", type=int, default=seq.DEFAULT_LOOKS)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    layout = c.full_layout()
    times = seq.equal_looks(args.looks)
    d = seq.design(times, v.ALPHA, seq.weights_of(c.UNITS))
    print(
        f"full MME ({layout.mme.categories.size}) + MMMU-val ({layout.mmmu_subjects.size}) = {layout.total} "
        f"samples, {args.trials} trials per scenario, alpha {v.ALPHA}, accuracy MME {MME_ACC} MMMU {MMMU_ACC}; "
        f"default margins 1 pp / {c.DEFAULT_MARGINS[1]:g} / {c.DEFAULT_MARGINS[2]:g} points"
    )
    print(f"sequential: {args.looks} looks, {seq.SPENDING}")
    print("  equivalence boundaries  " + " ".join(f"{x:.2f}" for x in d.eq_bounds))
    for name, share, bounds in zip(c.METRICS, d.ne_alphas, d.ne_bounds, strict=True):
        print(f"  difference boundaries, {name} (alpha {share:.4f}): " + " ".join(f"{x:.2f}" for x in bounds))
    print()
    head = f"| {'scenario':40} | verdict    | equivalent | inconclusive | not equiv. | mean used | p90 used |"
    print(head)
    print("|" + "|".join("-" * (len(x)) for x in head.split("|")[1:-1]) + "|")
    for i, s in enumerate(SCENARIOS):
        rng = np.random.default_rng(args.seed * 1000 + i)
        mme, mmmu = simulate(layout, s, args.trials, rng)
        fixed = c.fixed_verdicts(c.comparison_stats(layout, mme, mmmu, 1.0, s.margins))
        out = c.sequential_verdicts(layout, mme, mmmu, times, margins=s.margins)
        for label, verdicts, used in (
            ("fixed size", fixed, np.ones(args.trials)),
            ("sequential", out.verdict, out.fraction_used),
        ):
            eq, inc, ne = rates(verdicts)
            name = s.name if label == "fixed size" else f"  ({s.note})"
            print(
                f"| {name:40} | {label:10} | {eq:10.3f} | {inc:12.3f} | {ne:10.3f} | "
                f"{used.mean():9.2f} | {np.percentile(used, 90):8.2f} |"
            )
    print()
    print("Fixed size: smallest margin certified with probability 0.8 at full size (no true difference; ")
    print("80th percentile of |d| + h at level alpha, the level Holm's last step judges at):")
    head2 = (
        f"| {'discordance':11} | {'mme_acc':>8} | {'perception':>10} | {'cognition':>9} | {'mmmu_acc':>8} |"
    )
    print(head2)
    print("|" + "|".join("-" * (len(x)) for x in head2.split("|")[1:-1]) + "|")
    for j, disc in enumerate((0.0, 0.01, 0.02, 0.05, 0.10)):
        rng = np.random.default_rng(args.seed * 1000 + 900 + j)
        mme, mmmu = simulate(layout, Scenario("", disc), args.trials, rng)
        stats_ = c.comparison_stats(layout, mme, mmmu, 1.0)
        cert = [np.percentile(np.abs(s.delta) + c.half_widths(s, v.ALPHA), 80) for s in stats_]
        print(
            f"| {disc * 100:9.0f} % | {cert[0] * 100:6.2f}pp | {cert[1]:10.1f} | {cert[2]:9.1f} | "
            f"{cert[3] * 100:6.2f}pp |"
        )
    print(f"\nelapsed {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
