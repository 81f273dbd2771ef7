"""Simulated paired runs for checking the verdict's error rates (no HTTP, no data sets).

A reference run answers each question right with probability `accuracy`. The candidate copies it
and then flips answers: `divergence` is the expected fraction of questions answered differently,
half in each direction, so both runs are equally accurate; `drop` (a fraction) flips that many
more right answers to wrong, a true accuracy loss of `drop`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from vlmparity.compare import verdict as v

# MME question counts per category (MME paper, research/lmms-eval.md §1.6): 2 questions per image.
MME_PERCEPTION = {
    "existence": 60,
    "count": 60,
    "position": 60,
    "color": 60,
    "posters": 294,
    "celebrity": 340,
    "scene": 400,
    "landmark": 400,
    "artwork": 400,
    "OCR": 40,
}
MME_COGNITION = {
    "commonsense_reasoning": 140,
    "numerical_calculation": 40,
    "text_translation": 40,
    "code_reasoning": 40,
}
MMMU_SUBJECTS = 30  # MMMU-val: 30 subjects x 30 questions = 900
MMMU_PER_SUBJECT = 30


@dataclass(frozen=True)
class MmeLayout:
    """Category, image and half (perception or cognition) of every MME question."""

    categories: NDArray[np.str_]
    images: NDArray[np.str_]
    perception: NDArray[np.bool_]


def mme_layout() -> MmeLayout:
    """The 2374 MME questions: 1187 images with two questions each."""
    counts = {**MME_PERCEPTION, **MME_COGNITION}
    cats = np.repeat(np.array(list(counts)), list(counts.values()))
    within = np.concatenate([np.arange(c) // 2 for c in counts.values()])
    images = np.char.add(np.char.add(cats, "/"), within.astype(str))
    return MmeLayout(cats, images, np.isin(cats, list(MME_PERCEPTION)))


def mmmu_subjects() -> NDArray[np.str_]:
    """Subject label of each of the 900 MMMU-val questions."""
    return np.repeat(np.array([f"subject_{i:02d}" for i in range(MMMU_SUBJECTS)]), MMMU_PER_SUBJECT)


def simulate_pairs(
    n: int, trials: int, accuracy: float, divergence: float, drop: float, rng: np.random.Generator
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Correctness of reference and candidate, shape (trials, n)."""
    a = rng.random((trials, n)) < accuracy
    p_lose = (divergence / 2 + drop) / accuracy  # P(B wrong | A right)
    p_gain = (divergence / 2) / (1 - accuracy)  # P(B right | A wrong)
    if not (0 <= p_lose <= 1 and 0 <= p_gain <= 1):
        raise ValueError("divergence/drop too large for this accuracy")
    u = rng.random((trials, n))
    flip = np.where(a, u < p_lose, u < p_gain)
    return a, a ^ flip


def mmmu_verdict(
    a: NDArray[np.bool_], b: NDArray[np.bool_], subjects: NDArray[np.str_], n_boot: int = 0
) -> v.Verdict:
    """Overall verdict of one simulated MMMU comparison (mmmu_acc, questions within subjects)."""
    return v.decide([v.compare_accuracy(a, b, metric="mmmu_acc", strata=subjects, n_boot=n_boot)])


def mme_verdict(a: NDArray[np.bool_], b: NDArray[np.bool_], layout: MmeLayout, n_boot: int = 0) -> v.Verdict:
    """Overall verdict of one simulated MME comparison: question accuracy, perception, cognition."""
    p, c = layout.perception, ~layout.perception
    results = [
        v.compare_accuracy(
            a, b, metric="mme_acc", clusters=layout.images, strata=layout.categories, n_boot=n_boot
        ),
        v.compare_mme_score(
            layout.categories[p], layout.images[p], a[p], b[p], metric="mme_perception_score", n_boot=n_boot
        ),
        v.compare_mme_score(
            layout.categories[c], layout.images[c], a[c], b[c], metric="mme_cognition_score", n_boot=n_boot
        ),
    ]
    return v.decide(results)


def verdict_rates(
    task: str,
    *,
    trials: int,
    divergence: float,
    drop: float = 0.0,
    accuracy: float = 0.6,
    seed: int = 0,
    n: int | None = None,
) -> dict[str, float]:
    """Fraction of simulated comparisons ending in each overall verdict (task: "mmmu" or "mme")."""
    rng = np.random.default_rng(seed)
    tally: Counter[str] = Counter()
    if task == "mme":
        layout = mme_layout()
        a, b = simulate_pairs(layout.categories.size, trials, accuracy, divergence, drop, rng)
        for i in range(trials):
            tally[mme_verdict(a[i], b[i], layout).verdict] += 1
    elif task == "mmmu":
        subjects = mmmu_subjects() if n is None else np.repeat(np.array(["all"]), n)
        a, b = simulate_pairs(subjects.size, trials, accuracy, divergence, drop, rng)
        for i in range(trials):
            tally[mmmu_verdict(a[i], b[i], subjects).verdict] += 1
    else:
        raise ValueError(f"unknown task {task!r}")
    return {k: tally[k] / trials for k in (v.EQUIVALENT, v.INCONCLUSIVE, v.NOT_EQUIVALENT)}
