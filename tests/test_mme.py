"""MME: prompt (research §1.2), parser (§1.3), aggregation (§1.5) on the official question lists; §4.7 tags."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from vlmparity.errors import DataError
from vlmparity.tasks.base import Answer, GenerationParams, ImageData, Sample, build_request, get_task
from vlmparity.tasks.mme import COGNITION, PERCEPTION, MMETask, parse_pred_ans
from vlmparity.tasks.reasoning import postprocess_response, strip_reasoning_tags

SUFFIX = "\nAnswer the question using a single word or phrase."


def official_rows(oracles: Path) -> list[dict[str, Any]]:
    """The 2374 official questions as dataset rows (a fake image per picture, shared by its pair)."""
    rows = []
    for category in (*PERCEPTION, *COGNITION):
        path = oracles / "mme" / "questions" / f"{category}.txt"
        for line in path.read_text(encoding="utf-8").splitlines():
            image, question, answer = line.split("\t")
            qid = f"{category}/{image}"
            rows.append(
                {
                    "question_id": qid,
                    "image": qid.encode(),
                    "question": question,
                    "answer": answer,
                    "category": category,
                }
            )
    return rows


@pytest.fixture(scope="module")
def samples(oracles: Path) -> list[Sample]:
    return MMETask().samples_from_rows(official_rows(oracles))


def answer_all(samples: list[Sample], pick: Any) -> list[Answer]:
    return [Answer(s.id, pick(s)) for s in samples]


def test_official_list_shape(samples: list[Sample]) -> None:
    assert len(samples) == 2374
    pairs: dict[str, list[str]] = {}
    for s in samples:
        pairs.setdefault(s.cluster, []).append(s.target)
    assert len(pairs) == 1187
    assert all(sorted(v) == ["No", "Yes"] for v in pairs.values())  # one Yes and one No per image


def test_registered_with_lmms_eval_defaults() -> None:
    task = get_task("mme")
    assert task.default_source == "lmms-lab-encoder/MME"
    assert "lmms-lab/MME" in task.legacy_sources  # type: ignore[attr-defined]
    assert task.split == "test"


# ------------------------------------------------------------------------------------------ prompt


def test_prompt_text_for_real_questions(samples: list[Sample]) -> None:
    task = MMETask()
    by_question = {str(s.fields["question"]): s for s in samples}
    first = by_question["""Is the word in the logo "angie's"? Please answer yes or no."""]
    assert task.prompt(first).text == """Is the word in the logo "angie's"?""" + SUFFIX
    # two spaces before "Please": only the exact " Please answer yes or no." goes, one space stays
    spaced = by_question["Is there a brown giraffe in the image?  Please answer yes or no."]
    assert task.prompt(spaced).text == "Is there a brown giraffe in the image? " + SUFFIX
    fullwidth = by_question["Is the trash can under the cup in the image？ Please answer yes or no."]
    assert task.prompt(fullwidth).text == "Is the trash can under the cup in the image？" + SUFFIX


def test_prompt_keeps_a_suffix_that_differs() -> None:
    rows = [
        {
            "question_id": "color/x.jpg",
            "image": b"x",
            "question": " Is it red? please answer yes or no. ",
            "answer": "Yes",
            "category": "color",
        },
    ]
    sample = MMETask().samples_from_rows(rows)[0]
    assert MMETask().prompt(sample).text == "Is it red? please answer yes or no." + SUFFIX
    assert sample.id == "color/x.jpg::Is it red? please answer yes or no."


def test_request_is_image_first_then_text() -> None:
    rows = [
        {
            "question_id": "OCR/1.jpg",
            "image": b"P",
            "question": "Is it? Please answer yes or no.",
            "answer": "Yes",
            "category": "OCR",
        }
    ]
    task = MMETask()
    sample = task.samples_from_rows(rows)[0]
    req = build_request(sample, task.prompt(sample), GenerationParams(), lambda im: "IMG" + im.data.decode())
    assert req.body["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": "IMGP"}},
                {"type": "text", "text": "Is it?" + SUFFIX},
            ],
        }
    ]
    assert req.body["max_tokens"] == 16
    assert sample.images == (ImageData.from_bytes(b"P"),)
    assert (sample.group, sample.cluster) == ("OCR", "OCR/1.jpg")


def test_bad_rows_are_data_errors() -> None:
    good = {"question_id": "OCR/1.jpg", "image": b"P", "question": "Q", "answer": "Yes", "category": "OCR"}
    with pytest.raises(DataError, match="image"):
        MMETask().samples_from_rows([{**good, "image": None}])
    with pytest.raises(DataError, match="Maybe"):
        MMETask().samples_from_rows([{**good, "answer": "Maybe"}])
    with pytest.raises(DataError, match="category"):
        MMETask().samples_from_rows([{k: v for k, v in good.items() if k != "category"}])


def test_rows_without_images_give_scoring_samples() -> None:
    good = {"question_id": "OCR/1.jpg", "image": b"P", "question": "Q", "answer": "Yes", "category": "OCR"}
    full = MMETask().samples_from_rows([good])[0]
    text = MMETask().samples_from_rows([{k: v for k, v in good.items() if k != "image"}], images=False)[0]
    # the same sample for scoring, without the bytes; it still counts its one image
    assert replace(text, omitted_images=0) == replace(full, images=())
    assert text.images == () and text.image_count == 1 == full.image_count
    with pytest.raises(DataError, match="answer"):
        MMETask().samples_from_rows([{"question_id": "a", "question": "Q", "category": "OCR"}], images=False)


def test_the_two_questions_of_one_image_share_it() -> None:
    # a loader that interned the bytes (one object for both rows) gets one ImageData for both
    image = b"PNG-bytes"
    rows = [
        {"question_id": "OCR/1.jpg", "image": image, "question": q, "answer": a, "category": "OCR"}
        for q, a in (("Is it A?", "Yes"), ("Is it B?", "No"))
    ]
    first, second = MMETask().samples_from_rows(rows)
    assert first.images[0] is second.images[0]
    # sha256(b"PNG-bytes"), computed once for both
    assert first.images[0].key == "12594c3ffd80f58680b4355dbbb3e78a6af7b09ec6a56ed875ff53bf39bee76d"


# ------------------------------------------------------------------------------------------ parser


@pytest.mark.parametrize(
    ("response", "label"),
    [
        ("Yes.", "yes"),
        ("yes, it is", "yes"),
        ("YES", "yes"),
        ("y", "yes"),
        ("Y.", "yes"),
        ("Yes, there is no dog", "yes"),
        ("No", "no"),
        ("no.", "no"),
        ("Not really", "no"),
        ("None", "no"),
        ("Nope", "no"),
        ("nothing", "no"),
        ("n", "no"),
        ("No, there is no dog", "no"),
        ("**Yes**", "other"),
        ("The answer is yes", "other"),
        ("Answer: Yes", "other"),
        ("", "other"),
    ],
)
def test_parse_pred_ans_table(response: str, label: str) -> None:
    assert parse_pred_ans(response) == label


# ------------------------------------------------------------------------------------- aggregation


def test_all_right_is_2000_and_800(samples: list[Sample]) -> None:
    task = MMETask()
    result = task.aggregate(samples, task.score(samples, answer_all(samples, lambda s: s.target)))
    assert result.metrics == {"mme_perception_score": 2000.0, "mme_cognition_score": 800.0}
    assert all(c["acc"] == 100.0 and c["acc_plus"] == 100.0 for c in result.breakdown["categories"].values())
    assert result.n == 2374 and result.counts["images"] == 1187


def test_yes_to_everything_is_50_per_category(samples: list[Sample]) -> None:
    task = MMETask()
    result = task.aggregate(samples, task.score(samples, answer_all(samples, lambda s: "Yes")))
    assert result.metrics == {"mme_perception_score": 500.0, "mme_cognition_score": 200.0}
    cats = result.breakdown["categories"]
    assert set(cats) == set(PERCEPTION) | set(COGNITION)
    assert all((c["acc"], c["acc_plus"], c["score"]) == (50.0, 0.0, 50.0) for c in cats.values())
    # half the questions right: std(ddof=1) of n 0/1 values with n/2 ones is sqrt(n/(4(n-1)))
    n_perc = 2374 - (140 + 40 + 40 + 40)
    clt = result.breakdown["stderr_clt"]["mme_perception_score"]
    assert clt == pytest.approx(math.sqrt(n_perc / (4 * (n_perc - 1))) / math.sqrt(n_perc), rel=1e-12)


def test_mixed_hand_computed(samples: list[Sample]) -> None:
    # existence (30 images): image 1 both wrong, image 2 one wrong, rest right.
    # code_reasoning (20 images): "No" to everything. Everything else right.
    existence = [s for s in samples if s.group == "existence"]
    img1, img2 = existence[0].cluster, existence[2].cluster
    assert existence[1].cluster == img1 and existence[3].cluster == img2  # pairs are consecutive

    def pick(s: Sample) -> str:
        flip = {"Yes": "No", "No": "Yes"}
        if s.cluster == img1 or s.id == existence[2].id:
            return flip[s.target]
        if s.group == "code_reasoning":
            return "No"
        return s.target

    task = MMETask()
    result = task.aggregate(samples, task.score(samples, answer_all(samples, pick)))
    ex = result.breakdown["categories"]["existence"]
    assert ex["acc"] == pytest.approx(57 / 60 * 100)
    assert ex["acc_plus"] == pytest.approx(28 / 30 * 100)
    assert ex["score"] == pytest.approx((28 * 200 + 0 + 50) / 30)  # 188.333…
    assert result.breakdown["categories"]["code_reasoning"]["score"] == 50.0
    assert result.metrics["mme_perception_score"] == pytest.approx(9 * 200 + 5650 / 30, rel=1e-12)
    assert result.metrics["mme_cognition_score"] == 650.0


def test_only_present_categories_and_metrics_count(samples: list[Sample]) -> None:
    task = MMETask()
    subset = [s for s in samples if s.group in ("OCR", "color")]
    result = task.aggregate(subset, task.score(subset, answer_all(subset, lambda s: s.target)))
    assert result.metrics == {"mme_perception_score": 400.0}  # no cognition sample, no cognition metric


def test_split_pair_is_an_error_unless_allowed(samples: list[Sample]) -> None:
    task = MMETask()
    subset = samples[:3]  # the third question's partner is cut off, as an odd --limit does
    scores = task.score(subset, answer_all(subset, lambda s: s.target))
    with pytest.raises(DataError, match=subset[2].cluster):
        task.aggregate(subset, scores)
    result = task.aggregate(subset, scores, allow_partial_pairs=True)
    cat = result.breakdown["categories"][subset[0].group]
    # image 1 complete and right: 200; image 2 one question, right: acc 100, acc_plus 0
    assert cat["score"] == 150.0 and cat["acc"] == 100.0 and cat["acc_plus"] == 50.0
    assert result.counts["partial_pairs"] == 1


def test_excluded_failures_score_the_remaining_question(samples: list[Sample]) -> None:
    task = MMETask()
    subset = samples[:4]
    answers = [Answer(s.id, s.target) for s in subset]
    answers[3] = Answer(subset[3].id, None)
    scores = task.score(subset, answers)
    assert scores[3].correct is False and scores[3].parsed is None
    parity = task.aggregate(subset, scores)
    assert parity.breakdown["categories"][subset[0].group]["score"] == (200 + 50) / 2
    excluded = [*scores[:3], replace(scores[3], scored=False)]
    result = task.aggregate(subset, excluded)  # the pair is present; one of its answers is excluded
    assert result.breakdown["categories"][subset[0].group]["score"] == (200 + 100) / 2
    assert result.counts["excluded"] == 1 and result.n == 3


def test_details_are_lmms_eval_metric_dicts(samples: list[Sample]) -> None:
    task = MMETask()
    ocr = next(s for s in samples if s.group == "OCR")
    code = next(s for s in samples if s.group == "code_reasoning")
    s1, s2 = task.score([ocr, code], [Answer(ocr.id, ocr.target), Answer(code.id, "maybe")])
    assert s1.details == {
        "mme_perception_score": {"question_id": ocr.cluster, "category": "OCR", "score": 1.0}
    }
    assert s2.details == {
        "mme_cognition_score": {"question_id": code.cluster, "category": "code_reasoning", "score": 0.0}
    }
    assert (s1.parsed, s2.parsed) == (ocr.target.lower(), "other")


# --------------------------------------------------------------------------------- reasoning tags


@pytest.mark.parametrize(
    ("raw", "cleaned"),
    [
        ("<think>hmm, no</think> Yes", "Yes"),
        ("<analysis>a</analysis>\n<think>b</think>No", "No"),
        ("<think>a</think>x<think>b</think> y", "x y"),
        ("I reasoned</think>\nYes", "Yes"),  # end tag without start: keep what follows the last one
        ("<think>never closed Yes", "<think>never closed Yes"),
        ("<THINK>x</THINK>Yes", "<THINK>x</THINK>Yes"),  # case-sensitive
        ("  plain  ", "plain"),
    ],
)
def test_strip_reasoning_tags(raw: str, cleaned: str) -> None:
    assert strip_reasoning_tags(raw) == cleaned


def test_postprocess_none_and_disabled_tags() -> None:
    assert postprocess_response(None) == ""
    assert postprocess_response(" <think>x</think>Yes ", tags=None) == "<think>x</think>Yes"


def test_thinking_answer_is_scored_after_the_block(samples: list[Sample]) -> None:
    yes_q = next(s for s in samples if s.target == "Yes")
    score = MMETask().score([yes_q], [Answer(yes_q.id, "<think>No? no...</think>\n\nYes.")])[0]
    assert score.correct and score.parsed == "yes"
    raw = MMETask(reasoning_tags=None).score([yes_q], [Answer(yes_q.id, "<think>No</think>Yes")])[0]
    assert not raw.correct and raw.parsed == "other"
