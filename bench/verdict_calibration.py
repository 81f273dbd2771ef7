"""How often does the verdict call equally accurate backends `not equivalent`, and does it catch drops?

Simulates paired runs without HTTP (vlmparity.compare.calibration): the reference answers each
question right with probability --accuracy; the candidate answers a fraction `divergence` of questions
differently, half each way (equal accuracy), plus `drop` extra right-to-wrong flips (a true loss).
At MMMU-val size (900 questions, 30 subjects) and MME size (2374 questions, 1187 images, 14
categories; metrics mme_acc, mme_perception_score, mme_cognition_score with Holm), it prints the
share of trials ending `equivalent`, `inconclusive` and `not equivalent`, with default margins. A drop
of exactly the accuracy margin (1 point) is where `equivalent` is the wrong answer: it should stay
near alpha = 5 % or below.

    python bench/verdict_calibration.py [--trials 200] [--accuracy 0.6] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

from vlmparity.compare import calibration
from vlmparity.compare import verdict as v

DIVERGENCES = (0.01, 0.02, 0.05, 0.10)
DROPS = (0.0, 0.01, 0.02, 0.05)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--accuracy", type=float, default=0.6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    print(
        f"trials={args.trials} accuracy={args.accuracy} alpha={v.ALPHA} margins: accuracy "
        f"{v.ACCURACY_MARGIN * 100:g} pt, perception {v.MME_MARGIN['mme_perception_score']:g}, "
        f"cognition {v.MME_MARGIN['mme_cognition_score']:g}"
    )
    print(
        f"{'task':5} {'n':>5} {'diverge':>7} {'drop':>5}  {'equivalent':>10} {'inconcl.':>8} {'not equiv.':>10}"
    )
    for task, n in (("mmmu", 900), ("mme", 2374)):
        for i, divergence in enumerate(DIVERGENCES):
            for j, drop in enumerate(DROPS):
                rates = calibration.verdict_rates(
                    task,
                    trials=args.trials,
                    divergence=divergence,
                    drop=drop,
                    accuracy=args.accuracy,
                    seed=args.seed + 100 * i + j,
                )
                if drop == 0:
                    note = "  <- false alarm (not equivalent)"
                elif drop == v.ACCURACY_MARGIN:
                    note = "  <- at the margin (false equivalence)"
                else:
                    note = "  <- power"
                print(
                    f"{task:5} {n:5d} {divergence:7.2f} {drop * 100:4.0f}pt  "
                    f"{rates[v.EQUIVALENT]:10.3f} {rates[v.INCONCLUSIVE]:8.3f} {rates[v.NOT_EQUIVALENT]:10.3f}{note}"
                )
    print(f"elapsed {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
