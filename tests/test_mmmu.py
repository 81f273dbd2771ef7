"""MMMU-val: request building (research §2.4), parsers (§2.6), scoring and aggregation (§2.5, §2.7)."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vlmparity.errors import DataError
from vlmparity.tasks.base import (
    Answer,
    GenerationParams,
    ImageData,
    Sample,
    TextPart,
    build_request,
    get_task,
)
from vlmparity.tasks.mmmu import MMMUTask, interleave, make_sample
from vlmparity.tasks.mmmu_parse import (
    DOMAIN_CAT2SUB_CAT,
    eval_multi_choice,
    eval_open,
    extract_numbers,
    extract_subset_name,
    normalize_str,
    parse_multi_choice,
    parse_open_response,
)

MC = "Answer with the option's letter from the given choices directly."
OPEN = "Answer the question using a single word or phrase."


def fake_encoder(image: ImageData) -> str:
    return "IMG" + image.data.decode()


def row(**kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "id": "validation_Art_1",
        "question": "Q",
        "options": "[]",
        "explanation": "",
        "img_type": "",
        "answer": "A",
        "topic_difficulty": "",
        "question_type": "multiple-choice",
        "subfield": "Painting",
    }
    for i in range(1, 8):
        base[f"image_{i}"] = f"{i}".encode()  # every column filled unless a test empties it
    base.update(kw)
    return base


def content_of(r: dict[str, Any]) -> list[dict[str, Any]]:
    task = MMMUTask()
    sample = task.samples_from_rows([r])[0]
    req = build_request(sample, task.prompt(sample), GenerationParams(), fake_encoder)
    assert req.body["max_tokens"] == 128
    assert len(req.body["messages"]) == 1 and req.body["messages"][0]["role"] == "user"
    return list(req.body["messages"][0]["content"])


def t(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def img(n: int) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": f"IMG{n}"}}


# ------------------------------------------------------------------------------------ request building


def test_registered_with_lmms_eval_defaults() -> None:
    task = get_task("mmmu_val")
    assert task.default_source == "lmms-lab-encoder/MMMU"
    assert "lmms-lab/MMMU" in task.legacy_sources  # type: ignore[attr-defined]
    assert task.split == "validation"


def test_images_placed_by_sorted_number_not_mention_order() -> None:
    content = content_of(row(question="Compare <image 2> with <image 1>", options="['x', 'y']"))
    assert content == [t("Compare"), img(1), t("with"), img(2), t(f"A. x\nB. y\n\n{MC}")]


def test_repeated_placeholder_drops_middle_text() -> None:
    content = content_of(row(question="<image 1> a <image 1> b <image 2> c", question_type="open"))
    assert content == [img(1), t("a"), img(2), t(f"c\n\n{OPEN}")]


def test_image_only_in_options_is_sent() -> None:
    content = content_of(row(question="Which one is a cat?", options="['<image 1>', '<image 2>']"))
    assert content == [t("Which one is a cat?\nA."), img(1), t("B."), img(2), t(MC)]


def test_research_example_question_and_option_images() -> None:
    content = content_of(row(question="Q<image 1>. Which?", options="['<image 3>', 'B opt']"))
    assert content == [t("Q"), img(1), t(". Which?\nA."), img(3), t(f"B. B opt\n\n{MC}")]


def test_open_question_ignores_options_and_unreferenced_images() -> None:
    content = content_of(row(question="How many <image 1> ?", question_type="open", options="['<image 3>']"))
    assert content == [t("How many"), img(1), t(f"?\n\n{OPEN}")]


def test_final_text_always_appended_even_empty() -> None:
    parts = interleave("Look <image 1>", 1)
    assert parts[-1] == TextPart("")
    assert len(parts) == 3


def test_prompt_text_keeps_literal_placeholders() -> None:
    task = MMMUTask()
    sample = task.samples_from_rows([row(question="See <image 1>.", options="['a', 'b']")])[0]
    assert task.prompt(sample).text == f"See <image 1>.\nA. a\nB. b\n\n{MC}"
    assert sample.group == "Art" and sample.cluster == "validation_Art_1"
    assert sample.fields["options"] == ["a", "b"]


def test_missing_referenced_image_names_row_and_column() -> None:
    with pytest.raises(DataError, match=r"validation_Art_1.*image_3"):
        MMMUTask().samples_from_rows([row(question="See <image 3>", image_3=None)])
    with pytest.raises(DataError, match=r"validation_Art_1.*image_9"):
        MMMUTask().samples_from_rows([row(question="See <image 9>")])


def test_rows_without_images_count_the_referenced_images() -> None:
    text_row = row(question="See <image 2> and <image 1>, not <image 2>")
    for i in range(1, 8):
        del text_row[f"image_{i}"]
    (sample,) = MMMUTask().samples_from_rows([text_row], images=False)
    # <image 1> and <image 2> (each once), not the seven filled columns; no bytes loaded
    assert sample.images == () and sample.omitted_images == 2 and sample.image_count == 2
    (full,) = MMMUTask().samples_from_rows([row(question="See <image 2> and <image 1>, not <image 2>")])
    assert [im.data for im in full.images] == [b"1", b"2"]
    assert replace(sample, omitted_images=0) == replace(full, images=())


def test_malformed_options_and_id_are_data_errors() -> None:
    with pytest.raises(DataError, match="options"):
        MMMUTask().samples_from_rows([row(options="not a list")])
    with pytest.raises(DataError, match="nonsense"):
        MMMUTask().samples_from_rows([row(id="nonsense")])


# ----------------------------------------------------------------------------------- multiple choice

CHOICES = ["A", "B", "C", "D"]
INDEX2ANS = {"A": "cat", "B": "dog", "C": "fish", "D": "bird"}


@pytest.mark.parametrize(
    ("response", "letter"),
    [
        ("A", "A"),
        ("(B)", "B"),
        ("The answer is C.", "C"),
        ("B. dog", "B"),
        ("Answer: D", "D"),
        ("A or B", "B"),
        ("(A) cat, not (C) fish", "C"),
        ("The animal shown is clearly a dog in this image", "B"),
    ],
)
def test_multi_choice_table(response: str, letter: str) -> None:
    parsed = parse_multi_choice(response, CHOICES, INDEX2ANS, random.Random(0))
    assert parsed.letter == letter
    assert not parsed.random_fallback


@pytest.mark.parametrize("response", ["C: fish", ""])
@pytest.mark.parametrize("seed", [0, 7])
def test_multi_choice_random_rows(response: str, seed: int) -> None:
    parsed = parse_multi_choice(response, CHOICES, INDEX2ANS, random.Random(seed))
    assert parsed.random_fallback
    assert parsed.letter == random.Random(seed).choice(CHOICES)


def test_eval_multi_choice() -> None:
    assert eval_multi_choice("B", "B")
    assert not eval_multi_choice("B", "C")
    assert eval_multi_choice(["A", "C"], "C")


def test_score_draws_one_rng_in_order_and_failures_draw_nothing() -> None:
    opts = ["cat", "dog", "fish", "bird"]
    samples = [make_sample(i, f"validation_Art_{i}", "Q", opts, "A", "multiple-choice") for i in range(4)]
    answers = [
        Answer(samples[0].id, "zzz"),
        Answer(samples[1].id, None),
        Answer(samples[2].id, "(C)"),
        Answer(samples[3].id, "???"),
    ]
    scores = MMMUTask().score(samples, answers, seed=3)
    rng = random.Random(3)
    first, second = rng.choice(CHOICES), rng.choice(CHOICES)
    assert [s.parsed for s in scores] == [first, None, "C", second]
    assert [s.random_fallback for s in scores] == [True, False, False, True]
    assert scores[1].correct is False
    assert scores[0].correct == (first == "A")


def _fallback_case() -> tuple[list[Sample], list[Answer], list[Answer]]:
    """Twelve MC samples answered without a letter; the second list parses sample 0 instead ("(C)")."""
    opts = ["cat", "dog", "fish", "bird"]
    samples = [make_sample(i, f"validation_Art_{i}", "Q", opts, "A", "multiple-choice") for i in range(12)]
    unparsed = [Answer(s.id, "I cannot tell") for s in samples]
    one_parsed = [Answer(samples[0].id, "(C)"), *unparsed[1:]]
    return samples, unparsed, one_parsed


def test_per_sample_fallback_depends_on_the_sample_only() -> None:
    samples, unparsed, one_parsed = _fallback_case()
    a = MMMUTask().score(samples, unparsed, seed=5, fallback="per_sample")
    b = MMMUTask().score(samples, one_parsed, seed=5, fallback="per_sample")
    expected = [random.Random(f"5:{s.id}").choice(CHOICES) for s in samples]
    assert [s.parsed for s in a] == expected
    assert [s.parsed for s in b] == ["C", *expected[1:]]  # identical raw answers → identical letters
    assert all(s.random_fallback for s in a) and not b[0].random_fallback


def test_sequential_fallback_shifts_when_one_sample_parses() -> None:
    """Why compare needs per_sample: under lmms-eval's one sequence, parsing sample 0 shifts every later draw."""
    samples, unparsed, one_parsed = _fallback_case()
    a = MMMUTask().score(samples, unparsed, seed=0)
    b = MMMUTask().score(samples, one_parsed, seed=0)
    rng = random.Random(0)
    draws = [rng.choice(CHOICES) for _ in samples]
    assert [s.parsed for s in a] == draws
    assert [s.parsed for s in b] == ["C", *draws[:-1]]
    assert [s.parsed for s in a[1:]] != [s.parsed for s in b[1:]]


def test_unknown_fallback_rejected() -> None:
    samples, unparsed, _ = _fallback_case()
    with pytest.raises(ValueError, match="fallback"):
        MMMUTask().score(samples, unparsed, fallback="shuffled")


def test_reasoning_block_stripped_before_parsing() -> None:
    sample = make_sample(0, "validation_Art_1", "Q", ["cat", "dog"], "B", "multiple-choice")
    score = MMMUTask().score([sample], [Answer(sample.id, "<think>A? (A)</think>\n(B)")])[0]
    assert score.parsed == "B" and score.correct and not score.random_fallback


# -------------------------------------------------------------------------------------------- open


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("1,000", {1000.0, 0.0}),  # the simple pattern also catches the trailing "000"
        ("The answer is 3.5e3", {3500.0, 3.0}),  # "3" before ".5e3" matches the simple pattern
        ("So the result is 42.", {42.0}),  # shortest tail after an indicator
        ("Step 1\nThe value = 7", {7.0}),  # "=" counts only in the last line
        ("Paris", {"paris"}),
        ("C", {" c", "c "}),
        ("It is red. The end", {"red. the end"}),  # the capital-letter split never fires (lower-cased)
        ("Value is \nnothing", {"value is \nnothing"}),  # an empty tail is never kept
        ("-12.5 degrees", {"-12.5 degrees", -12.5}),
        ("12.004", {12.0}),
    ],
)
def test_parse_open_response(response: str, expected: set[Any]) -> None:
    parsed = parse_open_response(response)
    assert set(parsed) == expected
    assert len(parsed) == len(expected)  # no duplicates


def test_extract_numbers_order_and_normalize() -> None:
    assert extract_numbers("1,234 and 2e5 and 7") == [
        "1,234",
        "2e5",
        "234",
        "5",
        "7",
    ]  # the "5" of "2e5" also matches
    assert normalize_str(" 1,234.567 ") == [1234.57]
    assert normalize_str("Ab") == ["ab"]


def test_eval_open() -> None:
    assert eval_open("12", parse_open_response("12"))  # 0.7.3: the list, not its first string's chars
    assert eval_open("12", parse_open_response("about 12.001"))  # both round to 12.0
    assert not eval_open("12", ["12 apples"])  # numeric gold never matches a string candidate
    assert not eval_open("red", [12.0])
    assert eval_open("red", ["dark red"])  # string gold: substring of a string candidate
    assert eval_open("a", ["a cat"])  # single letters are padded: "a " is in "a cat"
    assert not eval_open("A", ["cat"])
    assert eval_open(["Tampa", "Florida"], ["florida"])  # official key: any listed answer
    assert not eval_open("['24/7', '3.429']", parse_open_response("3.429"))  # list literal string: no match


def test_subset_name() -> None:
    assert extract_subset_name("validation_Art_Theory_12") == "Art_Theory"
    assert extract_subset_name("dev_Diagnostics_and_Laboratory_Medicine_3") == (
        "Diagnostics_and_Laboratory_Medicine"
    )
    assert extract_subset_name("garbage") is None


# -------------------------------------------------------------------------------------- aggregation


def test_aggregate_by_subject_and_domain() -> None:
    task = MMMUTask()
    samples = [
        make_sample(i, f"validation_Art_{i}", "Q", ["x", "y"], "A", "multiple-choice") for i in range(3)
    ]
    samples.append(make_sample(3, "validation_Math_1", "Q", [], "5", "open"))
    answers = [Answer(samples[0].id, "A"), Answer(samples[1].id, "A"), Answer(samples[2].id, "B")]
    answers.append(Answer(samples[3].id, "x = 5"))
    scores = task.score(samples, answers)
    result = task.aggregate(samples, scores)
    printable = result.breakdown["printable_results"]
    assert list(printable) == [
        "Overall-Art and Design",
        "Art",
        "Overall-Business",
        "Overall-Science",
        "Math",
        "Overall-Health and Medicine",
        "Overall-Humanities and Social Science",
        "Overall-Tech and Engineering",
        "Overall",
    ]
    assert printable["Art"] == {"num": 3, "acc": 0.66667}
    assert printable["Overall-Art and Design"] == {"num": 3, "acc": 0.66667}
    assert printable["Overall-Business"] == {"num": 0, "acc": 0.0}
    assert printable["Math"] == {"num": 1, "acc": 1.0}
    assert printable["Overall"] == {"num": 4, "acc": 0.75}
    assert result.metrics == {"mmmu_acc": 0.75}
    assert result.counts["random_fallback"] == 0
    assert result.n == 4


def test_aggregate_leaves_out_excluded_scores() -> None:
    from dataclasses import replace

    task = MMMUTask()
    samples = [
        make_sample(i, f"validation_Art_{i}", "Q", ["x", "y"], "A", "multiple-choice") for i in range(2)
    ]
    scores = task.score(samples, [Answer(samples[0].id, "A"), Answer(samples[1].id, None)])
    assert task.aggregate(samples, scores).metrics["mmmu_acc"] == 0.5  # parity: a failure is wrong
    excluded = [scores[0], replace(scores[1], scored=False)]
    result = task.aggregate(samples, excluded)
    assert result.metrics["mmmu_acc"] == 1.0 and result.counts["excluded"] == 1


def test_details_are_lmms_eval_metric_dicts() -> None:
    sample = make_sample(0, "validation_Math_2", "Q", [], "12", "open")
    score = MMMUTask().score([sample], [Answer(sample.id, "12")])[0]
    assert score.details["mmmu_acc"] == {
        "id": "validation_Math_2",
        "subdomain": "Math",
        "question_type": "open",
        "answer": "12",
        "parsed_pred": [[12.0]],
    }
    assert score.details["submission"] == {"validation_Math_2": "12.0"}


def test_domain_table_is_verbatim() -> None:
    assert sum(len(v) for v in DOMAIN_CAT2SUB_CAT.values()) == 30
    assert DOMAIN_CAT2SUB_CAT["Humanities and Social Science"] == [
        "History",
        "Literature",
        "Sociology",
        "Psychology",
    ]


# ------------------------------------------------------------------------------------------ oracles


def _oracle_outputs(oracles: Path) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    for path in sorted((oracles / "mmmu" / "llava1.5_13b").glob("*/output.json")):
        items.extend(json.loads(path.read_text()))
    return items


def test_oracle_outputs_cover_validation(oracles: Path) -> None:
    items = _oracle_outputs(oracles)
    assert len(items) == 900
    subjects = {extract_subset_name(i["id"]) for i in items}
    assert subjects == {s for subs in DOMAIN_CAT2SUB_CAT.values() for s in subs}
