"""The official MMMU parse-and-eval (MMMU-Benchmark/MMMU `mmmu/main_parse_and_eval.py`), as rules.

Written from the upstream behaviour, not copied. Where it differs from lmms-eval 0.7.3's parse
(`vlmparity.tasks.mmmu_parse`):

- the response is parsed exactly as stored: no reasoning-tag removal and no `.strip()` of whitespace first
  (only the punctuation strip both tools share), so `"A\\n"` finds no letter;
- the letter pass looks for `" X "` (a space on both sides) only; lmms-eval looks for `"X "` and then `"X."`,
  so `"Answer:B"`, `"B. dog"` and `"A/B"` find a letter in lmms-eval and none here;
- with several letters the one whose `" X "` (or `"(X)"`) occurs last wins, ties to the first listed, as in
  lmms-eval; the option-text pass (more than 5 words) is the same in both;
- a response without an answer draws `random.choice(all_choices)` from Python's global generator, seeded
  once with 42 when `utils/eval_utils.py` is imported; the draws follow the processing order: subjects in
  the order of `CAT_SHORT2LONG` (only folders named after an MMMU subject are read), items in file order.
  `random.seed(42)` then module-level `random.choice` draws exactly what `random.Random(42).choice` draws.

Open questions are parsed and judged with the same rules in both tools (`parse_open_response`,
`eval_open`); the official tool keeps the candidates in a `set`, whose order never changes correctness.
The gold answer is each item's own `answer` field, as `main_parse_and_eval.py` uses it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

OFFICIAL_SEED = 42

# `CAT_SHORT2LONG` in `mmmu/utils/data_utils.py`, in its insertion order (alphabetical by short name, which is
# also alphabetical by subject): `--subject ALL` evaluates the subjects in this order.
OFFICIAL_SUBJECT_ORDER: tuple[str, ...] = (
    "Accounting",
    "Agriculture",
    "Architecture_and_Engineering",
    "Art",
    "Art_Theory",
    "Basic_Medical_Science",
    "Biology",
    "Chemistry",
    "Clinical_Medicine",
    "Computer_Science",
    "Design",
    "Diagnostics_and_Laboratory_Medicine",
    "Economics",
    "Electronics",
    "Energy_and_Power",
    "Finance",
    "Geography",
    "History",
    "Literature",
    "Manage",
    "Marketing",
    "Materials",
    "Math",
    "Mechanical_Engineering",
    "Music",
    "Pharmacy",
    "Physics",
    "Psychology",
    "Public_Health",
    "Sociology",
)

_STRIP_CHARS = (",", ".", "!", "?", ";", ":", "'")


def find_choice_official(
    response: str, all_choices: Sequence[str], index2ans: Mapping[str, str]
) -> str | None:
    """The letter the official MMMU parser takes from `response`, or None when it would draw at random."""
    for ch in _STRIP_CHARS:  # one after the other, each from both ends; whitespace is left alone
        response = response.strip(ch)
    padded = f" {response} "

    bracketed = [c for c in all_choices if f"({c})" in padded]
    if bracketed:
        marks = {c: f"({c})" for c in bracketed}
        return _last(bracketed, lambda c: padded.rfind(marks[c]))
    spaced = [c for c in all_choices if f" {c} " in padded]
    if spaced:
        return _last(spaced, lambda c: padded.rfind(f" {c} "))
    if len(padded.split()) > 5:
        lowered = padded.lower()
        by_text = [c for c, text in index2ans.items() if text.lower() in lowered]
        if by_text:
            return _last(by_text, lambda c: lowered.rfind(index2ans[c].lower()))
    return None


def _last(candidates: list[str], position: Callable[[str], int]) -> str:
    """The candidate found furthest right; on equal positions the first in the list (numpy's argmax)."""
    best = candidates[0]
    best_pos = position(best)
    for c in candidates[1:]:
        pos = position(c)
        if pos > best_pos:
            best, best_pos = c, pos
    return best
