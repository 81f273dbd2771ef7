"""MMMU answer parsing and evaluation, as lmms-eval 0.7.3 and the official MMMU tool do it (research §2.3–2.7).

Pure functions over strings and lists. The quirks are deliberate: they are what makes the numbers match
(e.g. the open-answer sentence split never fires on capitals because the text is lower-cased first).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MC_PROMPT = "Answer with the option's letter from the given choices directly."
OPEN_PROMPT = "Answer the question using a single word or phrase."

# Verbatim from lmms-eval (research §2.7); the order is the order of the printed breakdown.
DOMAIN_CAT2SUB_CAT: dict[str, list[str]] = {
    "Art and Design": ["Art", "Art_Theory", "Design", "Music"],
    "Business": ["Accounting", "Economics", "Finance", "Manage", "Marketing"],
    "Science": ["Biology", "Chemistry", "Geography", "Math", "Physics"],
    "Health and Medicine": [
        "Basic_Medical_Science",
        "Clinical_Medicine",
        "Diagnostics_and_Laboratory_Medicine",
        "Pharmacy",
        "Public_Health",
    ],
    "Humanities and Social Science": ["History", "Literature", "Sociology", "Psychology"],
    "Tech and Engineering": [
        "Agriculture",
        "Architecture_and_Engineering",
        "Computer_Science",
        "Electronics",
        "Energy_and_Power",
        "Materials",
        "Mechanical_Engineering",
    ],
}

Candidate = str | float  # one normalised open-answer candidate

_STRIP_CHARS = (",", ".", "!", "?", ";", ":", "'")
_OPEN_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")
_BARE_PUNCT = (":", ",", ".", "!", "?", ";", ":", "'")
_NUM_COMMAS = re.compile(r"-?\b\d{1,3}(?:,\d{3})+\b")
_NUM_SCIENTIFIC = re.compile(r"-?\d+(?:\.\d+)?[eE][+-]?\d+")
_NUM_SIMPLE = re.compile(r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")
_SUB_SPLIT = re.compile(r"\.\s(?=[A-Z])|\n")


# --------------------------------------------------------------------------------------------- prompt text


def options_block(options: Sequence[str]) -> str:
    """`A. first\\nB. second…`: the options as lmms-eval lists them under the question."""
    return "\n".join(f"{chr(65 + i)}. {opt}" for i, opt in enumerate(options))


def multi_choice_info(options: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """(index2ans, all_choices): letters A, B, … mapped to the option texts, and the letters in order."""
    letters = [chr(65 + i) for i in range(len(options))]
    return dict(zip(letters, options, strict=True)), letters


def construct_prompt(question: str, options: Sequence[str], question_type: str) -> str:
    """lmms-eval's MMMU ctx text (default format): MC lists options and asks for a letter; open does not."""
    if question_type == "multiple-choice":
        return f"{question}\n{options_block(options)}\n\n{MC_PROMPT}"
    return f"{question}\n\n{OPEN_PROMPT}"


# ------------------------------------------------------------------------------------- multiple choice


@dataclass(frozen=True)
class ChoiceParse:
    """The parsed letter and whether it came from lmms-eval's `random.choice` fallback."""

    letter: str
    random_fallback: bool


def find_choice(response: str, all_choices: Sequence[str], index2ans: Mapping[str, str]) -> str | None:
    """The letter MMMU's multiple-choice parser finds in `response`, or None when it would draw at random."""
    for ch in _STRIP_CHARS:  # sequential, each from both ends
        response = response.strip(ch)
    padded = f" {response} "

    by_letter = True
    bracketed = False
    candidates = [c for c in all_choices if f"({c})" in padded]
    if candidates:
        bracketed = True
    if not candidates:
        candidates = [c for c in all_choices if f"{c} " in padded]
    if not candidates:
        candidates = [c for c in all_choices if f"{c}." in padded]
    if not candidates and len(padded.split()) > 5:
        lowered = padded.lower()
        candidates = [c for c, text in index2ans.items() if text.lower() in lowered]
        by_letter = False
    if not candidates:
        return None
    if len(candidates) == 1:
        return candidates[0]

    # Several candidates: the one mentioned last wins; ties (e.g. all -1) go to the first listed.
    def position(c: str) -> int:
        if not by_letter:
            return padded.lower().rfind(index2ans[c].lower())
        return padded.rfind(f"({c})" if bracketed else f" {c} ")

    positions = [position(c) for c in candidates]
    return candidates[positions.index(max(positions))]


def parse_multi_choice(
    response: str, all_choices: Sequence[str], index2ans: Mapping[str, str], rng: random.Random
) -> ChoiceParse:
    """MMMU's multiple-choice parser; without a letter it draws `rng.choice(all_choices)` as lmms-eval does."""
    letter = find_choice(response, all_choices, index2ans)
    if letter is not None:
        return ChoiceParse(letter, False)
    return ChoiceParse(rng.choice(list(all_choices)), True)


def eval_multi_choice(gold: str | Sequence[str], pred: str) -> bool:
    """String equality with the gold letter (membership when the gold is a list)."""
    if isinstance(gold, str):
        return gold == pred
    return pred in list(gold)


# ------------------------------------------------------------------------------------------------- open


def check_is_number(text: str) -> bool:
    """True when `float(text without commas)` succeeds (Python's float rules, as upstream)."""
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def normalize_str(text: str) -> list[Candidate]:
    """One answer string as candidates: a number → [rounded float]; a single char c → [" c", "c "]."""
    text = text.strip()
    if check_is_number(text):
        return [round(float(text.replace(",", "")), 2)]
    text = text.lower()
    if len(text) == 1:  # padded so that one letter does not match inside any word
        return [" " + text, text + " "]
    return [text]


def extract_numbers(text: str) -> list[str]:
    """Numbers with thousands commas, then scientific notation, then plain numbers (each list in text order)."""
    return _NUM_COMMAS.findall(text) + _NUM_SCIENTIFIC.findall(text) + _NUM_SIMPLE.findall(text)


def _key_responses(response: str) -> list[str]:
    resp = response.strip().strip(".").lower()
    subs = _SUB_SPLIT.split(resp)
    keys: list[str] = []
    for index, sub in enumerate(subs):
        indicators = [*_OPEN_INDICATORS, "="] if index == len(subs) - 1 else list(_OPEN_INDICATORS)
        shortest: str | None = None
        for ind in indicators:
            if ind not in sub:
                continue
            tail = sub.split(ind)[-1].strip()
            # Upstream tests `not shortest`, so an empty tail never sticks: the next indicator replaces it.
            if not shortest or len(tail) < len(shortest):
                shortest = tail
        if shortest and shortest.strip() not in _BARE_PUNCT:
            keys.append(shortest)
    return keys or [resp]


def parse_open_response(response: str) -> list[Candidate]:
    """MMMU's open-answer parser: key phrases after indicator words plus the numbers in them, normalised.

    Duplicates are removed keeping the first occurrence (upstream uses `set`, whose order is arbitrary;
    only the submission value depends on the order, never correctness).
    """
    keys = _key_responses(response)
    preds: list[str] = list(keys)
    for key in keys:
        preds.extend(extract_numbers(key))
    out: list[Candidate] = []
    for pred in preds:
        for cand in normalize_str(pred):
            if cand not in out:
                out.append(cand)
    return out


def normalize_gold(gold: str | Sequence[str]) -> list[Candidate]:
    """Normalised gold answers; a list (official answer key) means any of them is accepted."""
    if isinstance(gold, str):
        return normalize_str(gold)
    out: list[Candidate] = []
    for g in gold:
        out.extend(normalize_str(str(g)))
    return out


def eval_open(gold: str | Sequence[str], preds: Iterable[Candidate]) -> bool:
    """Correct if a string candidate contains a string gold, or a numeric candidate equals a numeric gold."""
    norm = normalize_gold(gold)
    for pred in preds:
        if isinstance(pred, str):
            if any(isinstance(g, str) and g in pred for g in norm):
                return True
        elif pred in [g for g in norm if not isinstance(g, str)]:
            return True
    return False


def candidate_from_json(value: Any) -> Candidate:
    """A candidate read back from JSON: numbers become floats, everything else stays a string."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int | float):
        return float(value)
    return str(value)


# ---------------------------------------------------------------------------------------------- subsets


def extract_subset_name(sample_id: str) -> str | None:
    """Subject from an MMMU id: `validation_Art_Theory_12` → `Art_Theory` (None if it does not fit)."""
    split = sample_id.split("_")[0]
    match = re.match(rf"^{re.escape(split)}_(.+?)_\d+$", sample_id)
    return match.group(1) if match else None


def submission_value(parsed: Any) -> str:
    """lmms-eval 0.7.3's `to_submission_answer`: the first candidate of a list, as a string."""
    if isinstance(parsed, list):
        return str(parsed[0]) if parsed else ""
    return str(parsed)


# ------------------------------------------------------------------------------------------ aggregation


def _ins_level_acc(subject_results: Mapping[str, Mapping[str, float]]) -> float:
    total = 0.0
    num = 0
    for res in subject_results.values():
        total += res["acc"] * res["num_example"]
        num += int(res["num_example"])
    return 0.0 if num == 0 else total / num


def printable_results(correct_by_subject: Mapping[str, Sequence[bool]]) -> dict[str, dict[str, float]]:
    """lmms-eval's printed MMMU breakdown: per domain ("Overall-<Domain>"), its subjects, then "Overall".

    Accuracies are rounded to 5 decimals; domain and overall figures are Σ(acc·n)/Σn over subjects present.
    A domain with no subject present is listed with num 0 and acc 0, as upstream does.
    """
    per_subject: dict[str, dict[str, float]] = {}
    for subject, flags in correct_by_subject.items():
        n = len(flags)
        per_subject[subject] = {"acc": (sum(flags) / n) if n else 0.0, "num_example": n}
    out: dict[str, dict[str, float]] = {}
    for domain, subjects in DOMAIN_CAT2SUB_CAT.items():
        present = {s: per_subject[s] for s in subjects if s in per_subject}
        out[f"Overall-{domain}"] = {
            "num": int(sum(r["num_example"] for r in present.values())),
            "acc": round(_ins_level_acc(present), 5),
        }
        for s, r in present.items():
            out[s] = {"num": int(r["num_example"]), "acc": round(r["acc"], 5)}
    out["Overall"] = {
        "num": int(sum(r["num_example"] for r in per_subject.values())),
        "acc": round(_ins_level_acc(per_subject), 5),
    }
    return out
