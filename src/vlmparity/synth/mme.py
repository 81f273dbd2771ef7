"""Synthetic MME (`lmms-lab/MME`, split `test`): 14 categories, two Yes/No questions per drawn picture.

Each picture is a pure function of (seed, category, pair index), so a smaller set is a prefix of every
category of the full set and the output does not depend on how work is spread over processes. The pictures
of the ten perception categories are drawn in `mme_perception`, those of the four cognition ones in
`mme_cognition`.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from vlmparity.synth import draw as D
from vlmparity.synth.mme_cognition import COGNITION
from vlmparity.synth.mme_perception import PERCEPTION

# Real per-category question counts (research/lmms-eval.md §1.6), in our storage order: code_reasoning
# first and artwork second, so `--limit 250` covers one cognition and one perception category as the real
# set does; the others follow alphabetically (case-insensitive).
CATEGORY_COUNTS: dict[str, int] = {
    "code_reasoning": 40,
    "artwork": 400,
    "celebrity": 340,
    "color": 60,
    "commonsense_reasoning": 140,
    "count": 60,
    "existence": 60,
    "landmark": 400,
    "numerical_calculation": 40,
    "OCR": 40,
    "position": 60,
    "posters": 294,
    "scene": 400,
    "text_translation": 40,
}
FULL_SIZE = sum(CATEGORY_COUNTS.values())  # 2374
SUFFIX = " Please answer yes or no."
# Suffixes lmms-eval does not strip (it removes only the exact SUFFIX); the real data has such quirks.
QUIRK_SUFFIXES = (" Please answer yes or no", " please answer yes or no.", " Please answer  yes or no.")
QUIRK_PERIOD = 25  # one pair in 25 carries a quirk on one of its two questions: 2% of questions


@dataclass(frozen=True)
class MmePair:
    """One picture and its two questions (without the answer-format suffix)."""

    category: str
    index: int  # 1-based within the category
    image: bytes
    ext: str  # "png" or "jpg", matching the encoding
    yes: str
    no: str

    @property
    def question_id(self) -> str:
        return f"{self.category}/{self.index:04d}.{self.ext}"


def allocate_pairs(n: int | None) -> dict[str, int]:
    """Pairs per category for `n` questions: full counts for None, else proportional with at least one each.

    `n` is rounded down to an even number. Below 28 questions not every category fits, so the first n/2
    categories in storage order get one pair each.
    """
    full = {c: q // 2 for c, q in CATEGORY_COUNTS.items()}
    if n is None or n >= FULL_SIZE:
        return full
    pairs = max(0, n) // 2
    if pairs < len(full):
        return {c: (1 if i < pairs else 0) for i, c in enumerate(full)}
    total = sum(full.values())
    quota = {c: pairs * f / total for c, f in full.items()}
    alloc = {c: max(1, int(q)) for c, q in quota.items()}
    # Largest remainder first when adding, smallest remainder (among those above one) first when removing.
    order = sorted(full, key=lambda c: (-(quota[c] - int(quota[c])), list(full).index(c)))
    i = 0
    while sum(alloc.values()) < pairs:
        c = order[i % len(order)]
        if alloc[c] < full[c]:
            alloc[c] += 1
        i += 1
    for c in reversed(order):
        if sum(alloc.values()) <= pairs:
            break
        if alloc[c] > 1:
            alloc[c] -= 1
    return alloc


def pair_specs(n: int | None) -> list[tuple[str, int]]:
    """(category, 1-based pair index) for every pair of an `n`-question set, in storage order."""
    return [(c, i) for c, k in allocate_pairs(n).items() for i in range(1, k + 1)]


def question_suffixes(category: str, index: int) -> tuple[str, str]:
    """Suffixes of the Yes and No question of a pair: the exact one, or a quirk on one in 25 pairs."""
    ci = list(CATEGORY_COUNTS).index(category)
    # The offset spreads quirks over positions (none on the very first rows) and puts one in landmark's
    # first four pairs, so even a 56-question set has one.
    if (index - 1) % QUIRK_PERIOD != (7 * ci + 3) % QUIRK_PERIOD:
        return SUFFIX, SUFFIX
    quirk = QUIRK_SUFFIXES[(ci + (index - 1) // QUIRK_PERIOD) % len(QUIRK_SUFFIXES)]
    return (quirk, SUFFIX) if ci % 2 == 0 else (SUFFIX, quirk)


def make_pair(seed: int, category: str, index: int) -> MmePair:
    """Draw the picture and write the two questions of one pair."""
    rng = random.Random(f"mme:{seed}:{category}:{index}")
    img, fmt, yes, no = GENERATORS[category](rng)
    quality = rng.randint(84, 93)
    data = D.encode(img, fmt, quality=quality)
    return MmePair(category, index, data, "jpg" if fmt == "JPEG" else "png", yes, no)


def rows_for_pair(pair: MmePair) -> list[dict[str, object]]:
    """The two dataset rows of a pair (Yes first, as in the real set)."""
    yes_suffix, no_suffix = question_suffixes(pair.category, pair.index)
    base = {"question_id": pair.question_id, "image": pair.image, "category": pair.category}
    return [
        {**base, "question": pair.yes + yes_suffix, "answer": "Yes"},
        {**base, "question": pair.no + no_suffix, "answer": "No"},
    ]


# Every category's picture-and-questions generator, keyed by category name.
GENERATORS = {**PERCEPTION, **COGNITION}
