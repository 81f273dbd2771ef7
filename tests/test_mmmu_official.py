"""`score --mmmu-responses --mmmu-parser official|lmms-eval`: MMMU's own parse-and-eval beside lmms-eval's.

The expected letters below are derived by hand from the official rules (MMMU-Benchmark/MMMU
`mmmu/utils/eval_utils.py` `parse_multi_choice_response` and `main_parse_and_eval.py`):

1. the response exactly as stored; strip `, . ! ? ; : '` one after the other from both ends; pad with a space;
2. letters X with "(X)" in it; else letters with " X " (space on both sides) in it;
3. else, when the padded text has more than 5 whitespace-separated words, options whose lower-cased text
   occurs in the lower-cased response;
4. several: the one occurring last (ties to the first listed); none: `random.choice(all_choices)` from the
   global generator seeded once with 42, drawn in processing order (subjects in CAT_SHORT2LONG order, which
   is alphabetical, and file order inside a subject).

lmms-eval (research/lmms-eval.md §2.6) strips reasoning tags and whitespace first, tries "X " (trailing
space only) and then "X." before the option texts, and draws from `random.seed(0)` in document order.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks import mmmu_offline as offline
from vlmparity.tasks.mmmu_official import find_choice_official

OPTIONS = {"A": "cat", "B": "dog", "C": "fish", "D": "bird"}
FALLBACK = "random"  # marks an expected random fallback


def mc(sid: str, response: str, answer: str) -> dict[str, Any]:
    return {
        "id": sid,
        "question_type": "multiple-choice",
        "answer": answer,
        "all_choices": list(OPTIONS),
        "index2ans": dict(OPTIONS),
        "response": response,
    }


# (id, response, gold, lmms-eval's letter, the official letter); "random" = no letter found, a draw.
CASES: list[tuple[str, str, str, str, str]] = [
    # lmms-eval's "X." pass finds B; the official tool has no such pass and 2 words are too few for step 3
    ("validation_Accounting_1", "B. dog", "B", "B", FALLBACK),
    # lmms-eval's "X " pass takes the B of "Answer:B"; officially " B " is absent and the 7 words name "fish"
    ("validation_Accounting_2", "Answer:B since the picture shows a fish", "B", "B", "C"),
    # lmms-eval strips whitespace first; officially "A\n" has no " A " (the newline is not stripped)
    ("validation_Art_1", "A\n", "A", "A", FALLBACK),
    # lmms-eval removes the reasoning block and reads "C"; officially no " X " in 3 words
    ("validation_Art_2", "<think>It is B</think>C", "C", "C", FALLBACK),
    # lmms-eval: "A " and "D " both match, neither " A " nor " D " occurs (rfind -1 twice), tie -> first: A.
    # Officially no " X " and 4 words: a draw
    ("validation_Art_3", "Answer:D or maybe Answer:A", "D", "A", FALLBACK),
    # lmms-eval drops the reasoning block and finds nothing in 3 words (a draw); officially "(A)" is in the text
    ("validation_Art_4", "<think>the answer is (A)</think>I cannot tell", "A", FALLBACK, "A"),
    # both: a bracketed letter, and the last of two bare letters
    ("validation_Art_5", "(B)", "B", "B", "B"),
    ("validation_Art_6", "A or B", "B", "B", "B"),
]
OPEN_ITEM = {
    "id": "validation_Art_7",
    "question_type": "short-answer",
    "answer": "12",
    "response": "The answer is 12.",
}


def write_outputs(root: Path) -> Path:
    by_subject: dict[str, list[dict[str, Any]]] = {}
    for sid, response, gold, _, _ in CASES:
        by_subject.setdefault(sid.split("_")[1], []).append(mc(sid, response, gold))
    by_subject["Art"].append(OPEN_ITEM)
    for subject, items in by_subject.items():
        (root / subject).mkdir(parents=True)
        (root / subject / "output.json").write_text(json.dumps(items))
    # A backup folder that is no MMMU subject: lmms-eval's reader takes every <dir>/output.json (sorted:
    # it comes right after Accounting); the official tool reads only the 30 subject folders.
    (root / "Accounting_old").mkdir()
    (root / "Accounting_old" / "output.json").write_text(
        json.dumps([mc("validation_Accounting_9", "no idea", "A")])
    )
    return root


def expected_letters(which: int, seed: int, order: list[str]) -> dict[str, str]:
    """The letters of CASES column `which`, fallbacks drawn from the global generator seeded with `seed`."""
    fixed = {sid: row[which] for row in CASES for sid in [row[0]]}
    fixed["validation_Accounting_9"] = FALLBACK
    state = random.getstate()
    try:
        random.seed(seed)  # as eval_utils.py does at import (lmms-eval: at the start of simple_evaluate)
        out = {}
        for sid in order:
            letter = fixed[sid]
            out[sid] = random.choice(list(OPTIONS)) if letter == FALLBACK else letter
    finally:
        random.setstate(state)
    return out


MC_IDS = [c[0] for c in CASES]
OFFICIAL_ORDER = MC_IDS  # Accounting then Art: CAT_SHORT2LONG order; Accounting_old is not read
LMMS_ORDER = [*MC_IDS[:2], "validation_Accounting_9", *MC_IDS[2:]]  # sorted folders: Accounting_old second


def test_official_parse_differs_from_lmms_eval_where_the_rules_differ(tmp_path: Path) -> None:
    root = write_outputs(tmp_path / "outputs")
    official = offline.score_mmmu_responses(root, parser="official")
    lmms = offline.score_mmmu_responses(root)  # the default parser is lmms-eval's

    want_official = expected_letters(4, 42, OFFICIAL_ORDER)
    got_official = {s.sample_id: s.parsed for s in official.scores if s.sample_id in want_official}
    assert got_official == want_official
    assert "validation_Accounting_9" not in {s.sample_id for s in official.scores}
    assert [s.sample_id for s in official.scores if s.random_fallback] == [
        c[0] for c in CASES if c[4] == FALLBACK
    ]

    want_lmms = expected_letters(3, 0, LMMS_ORDER)
    assert {s.sample_id: s.parsed for s in lmms.scores if s.sample_id in want_lmms} == want_lmms
    assert [s.sample_id for s in lmms.scores if s.random_fallback] == [
        "validation_Accounting_9",
        "validation_Art_4",
    ]

    # correctness follows from the letters and the golds; the open item (12 after "is ") is right in both
    gold = {c[0]: c[2] for c in CASES} | {"validation_Accounting_9": "A"}
    for out, want in ((official, want_official), (lmms, want_lmms)):
        open_score = next(s for s in out.scores if s.sample_id == "validation_Art_7")
        assert open_score.correct and 12.0 in open_score.parsed
        right = sum(want[sid] == gold[sid] for sid in want) + 1
        assert out.result.counts["correct"] == right
        assert out.result.n == len(want) + 1
        assert out.result.metrics["mmmu_acc"] == round(right / (len(want) + 1), 5)


HOT_DOG = {"A": "dog", "B": "hot dog", "C": "cat", "D": "bird"}


@pytest.mark.parametrize(
    ("response", "index2ans", "expected"),
    [
        ("A", OPTIONS, "A"),
        ("(B)", OPTIONS, "B"),
        ("The answer is C.", OPTIONS, "C"),  # "." stripped, then " C "
        ("Answer: D", OPTIONS, "D"),
        ("A or B", OPTIONS, "B"),  # the last " X "
        ("(A) cat, not (C) fish", OPTIONS, "C"),  # the last "(X)"
        ("(B) or (A)", OPTIONS, "A"),
        ("The animal shown is clearly a dog in this image", OPTIONS, "B"),  # 9 words: option text
        # "dog" occurs last (inside "hot dog", which starts earlier): the later start wins
        ("I would say it is a hot dog here", HOT_DOG, "A"),
        (" B ", OPTIONS, "B"),
        ("  (C)\n", OPTIONS, "C"),
        ("B. dog", OPTIONS, None),  # no "X." pass
        ("C: fish", OPTIONS, None),  # ":" after the letter, and only 2 words
        ("B\n", OPTIONS, None),  # whitespace is not stripped
        ("", OPTIONS, None),
    ],
)
def test_official_letter_rules(response: str, index2ans: dict[str, str], expected: str | None) -> None:
    assert find_choice_official(response, list(index2ans), index2ans) == expected


def test_parser_and_fallbacks_are_always_named(tmp_path: Path) -> None:
    root = write_outputs(tmp_path / "outputs")
    official = offline.score_mmmu_responses(root, parser="official")
    assert official.notes[0].startswith("parser: official MMMU")
    assert official.notes[1].startswith("random fallbacks: 4 ")
    assert official.notes[1].endswith(
        "(seed 42): validation_Accounting_1, validation_Art_1, validation_Art_2, validation_Art_3"
    )
    assert any("Accounting_old" in n and "not in an MMMU subject folder" in n for n in official.notes)
    lmms = offline.score_mmmu_responses(root, seed=3)
    assert lmms.notes[0].startswith("parser: lmms-eval 0.7.3")
    assert lmms.notes[1].endswith("(seed 3): validation_Accounting_9, validation_Art_4")
    # none is said too
    (root / "Art" / "output.json").write_text(json.dumps([mc("validation_Art_5", "(B)", "B")]))
    (root / "Accounting" / "output.json").unlink()
    (root / "Accounting").rmdir()
    clean = offline.score_mmmu_responses(root, parser="official")
    assert clean.notes[1] == (
        "random fallbacks: 0 multiple-choice response(s) had no letter; random letter drawn (seed 42)"
    )


def test_official_seed_override_and_single_file(tmp_path: Path) -> None:
    root = write_outputs(tmp_path / "outputs")
    seeded = offline.score_mmmu_responses(root, parser="official", seed=7)
    assert {s.sample_id: s.parsed for s in seeded.scores if s.sample_id in MC_IDS} == expected_letters(
        4, 7, OFFICIAL_ORDER
    )
    one = offline.score_mmmu_responses(root / "Art" / "output.json", parser="official")
    art = [sid for sid in MC_IDS if "_Art_" in sid]
    assert {s.sample_id: s.parsed for s in one.scores if s.sample_id in art} == expected_letters(4, 42, art)


def test_official_bad_input_is_one_clear_error(tmp_path: Path) -> None:
    root = tmp_path / "o"
    (root / "Art").mkdir(parents=True)
    (root / "Art" / "output.json").write_text(json.dumps([mc("validation_Art_1", None, "A")]))  # type: ignore[arg-type]
    with pytest.raises(DataError, match=r"the response is null, not text; the official MMMU tool stops"):
        offline.score_mmmu_responses(root, parser="official")
    # lmms-eval scores a null response as an empty answer (one draw)
    assert offline.score_mmmu_responses(root).scores[0].random_fallback
    (root / "Music").mkdir()
    with pytest.raises(DataError, match=r"Music: no output\.json"):
        offline.score_mmmu_responses(root, parser="official")
    only_other = tmp_path / "p"
    (only_other / "notes").mkdir(parents=True)
    (only_other / "notes" / "output.json").write_text("[]")
    with pytest.raises(DataError, match="for any MMMU subject"):
        offline.score_mmmu_responses(only_other, parser="official")
    with pytest.raises(ConfigError, match="unknown MMMU parser"):
        offline.score_mmmu_responses(only_other, parser="mmmu")


def run_score(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", "score", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_parser_option(tmp_path: Path) -> None:
    root = write_outputs(tmp_path / "outputs")
    out = run_score("--mmmu-responses", str(root), "--mmmu-parser", "official")
    assert out.returncode == 0, out.stderr
    assert "note (mmmu_val): parser: official MMMU" in out.stdout
    assert "validation_Accounting_1, validation_Art_1, validation_Art_2, validation_Art_3" in out.stdout
    default = run_score("--mmmu-responses", str(root))
    assert "note (mmmu_val): parser: lmms-eval 0.7.3" in default.stdout
    assert "(seed 0): validation_Accounting_9, validation_Art_4" in default.stdout
    bad = run_score("--mmmu-responses", str(root), "--mmmu-parser", "mmmu")
    assert bad.returncode == 4 and bad.stderr.count("\n") == 1 and "lmms-eval, official" in bad.stderr
    alone = run_score("--lmms-samples", str(root), "--mmmu-parser", "official")
    assert alone.returncode == 4 and "--mmmu-parser goes with --mmmu-responses" in alone.stderr


# ------------------------------------------------------------------------------------------ oracles


def _no_letter_official(item: dict[str, Any]) -> bool:
    """Independent replay of steps 1-3 above: nothing a letter could be taken from (raw text)."""
    text = item["response"]
    for ch in ",.!?;:'":
        text = text.strip(ch)
    padded = f" {text} "
    letters = item["all_choices"]
    if any(f"({x})" in padded or f" {x} " in padded for x in letters):
        return False
    return not (
        len(padded.split()) > 5 and any(v.lower() in padded.lower() for v in item["index2ans"].values())
    )


@pytest.mark.oracles
def test_official_parser_on_llava_13b(oracles: Path) -> None:
    """MMMU's own parse-and-eval of LLaVA-1.5-13B's responses: 330/900 = 0.36667 with 2 random fallbacks."""
    folder = oracles / "mmmu" / "llava1.5_13b"
    official_preds = json.loads((folder / "total_val_output.json").read_text())
    items = {i["id"]: i for p in folder.glob("*/output.json") for i in json.loads(p.read_text())}
    out = offline.score_mmmu_responses(folder, parser="official")
    assert out.result.n == 900
    assert out.result.counts["correct"] == 330
    assert out.result.metrics["mmmu_acc"] == 0.36667
    fallbacks = [s.sample_id for s in out.scores if s.random_fallback]
    assert len(fallbacks) == 2
    assert set(fallbacks) == {
        sid for sid, i in items.items() if i["question_type"] == "multiple-choice" and _no_letter_official(i)
    }
    for score in out.scores:
        if items[score.sample_id]["question_type"] == "multiple-choice" and not score.random_fallback:
            assert score.parsed == official_preds[score.sample_id], score.sample_id
    # the draws: seed 42, fallbacks in subject order (alphabetical), one choice each
    random_letters = expected_official_draws([items[sid] for sid in sorted(fallbacks)])
    assert {s.sample_id: s.parsed for s in out.scores if s.random_fallback} == random_letters
    assert out.notes[1].endswith("(seed 42): " + ", ".join(sorted(fallbacks)))


def expected_official_draws(fallback_items: list[dict[str, Any]]) -> dict[str, str]:
    state = random.getstate()
    try:
        random.seed(42)
        return {i["id"]: random.choice(i["all_choices"]) for i in fallback_items}
    finally:
        random.setstate(state)


@pytest.mark.oracles
def test_cli_official_parser_on_llava_13b(oracles: Path) -> None:
    out = run_score("--mmmu-responses", str(oracles / "mmmu" / "llava1.5_13b"), "--mmmu-parser", "official")
    assert out.returncode == 0, out.stderr
    assert "mmmu_val: n=900, correct=330, random_fallback=2" in out.stdout
    assert "|**Overall**" in out.stdout and "|900|0.36667|" in out.stdout
    assert "note (mmmu_val): parser: official MMMU" in out.stdout
