"""Offline scoring (`vlmparity score`) on the oracles and on hand-made files, library and CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vlmparity import offline
from vlmparity.errors import DataError
from vlmparity.tasks import mme_offline, mmmu_offline
from vlmparity.tasks.mmmu import recover_options

MC = "Answer with the option's letter from the given choices directly."
SUFFIX = "\nAnswer the question using a single word or phrase."


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", "score", *args], capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------------------- MMMU predictions


@pytest.mark.parametrize(
    ("key", "correct", "acc"),
    [("answer_dict_val.before-2023-12-14.json", 328, 0.36444), ("answer_dict_val.json", 330, 0.36667)],
)
def test_official_predictions_score(oracles: Path, key: str, correct: int, acc: float) -> None:
    mmmu = oracles / "mmmu"
    out = mmmu_offline.score_mmmu_predictions(mmmu / "llava1.5_13b" / "total_val_output.json", mmmu / key)
    assert out.result.n == 900
    assert out.result.counts["correct"] == correct
    assert out.result.metrics["mmmu_acc"] == acc
    assert round(correct / 900, 5) == acc


def test_prediction_list_values_and_gold_lists(tmp_path: Path) -> None:
    key = {
        "validation_Math_1": {"question_type": "short-answer", "ground_truth": ["24/7", "3.429"]},
        "validation_Math_2": {"question_type": "short-answer", "ground_truth": "12"},
        "validation_Math_3": {"question_type": "multiple-choice", "ground_truth": ["A", "C"]},
        "validation_Math_4": {"question_type": "multiple-choice", "ground_truth": "B"},
    }
    preds = {"validation_Math_1": "3.429", "validation_Math_2": ["12", 12.0], "validation_Math_3": "C"}
    (tmp_path / "key.json").write_text(json.dumps(key))
    (tmp_path / "preds.json").write_text(json.dumps(preds))
    out = mmmu_offline.score_mmmu_predictions(tmp_path / "preds.json", tmp_path / "key.json")
    assert [s.correct for s in out.scores] == [True, True, True]
    assert out.result.metrics["mmmu_acc"] == 1.0
    assert any("1 answer-key id" in n for n in out.notes)  # Math_4 unanswered, not counted


def test_prediction_not_in_key_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "key.json").write_text("{}")
    (tmp_path / "preds.json").write_text(json.dumps({"validation_Art_1": "A"}))
    with pytest.raises(DataError, match="validation_Art_1"):
        mmmu_offline.score_mmmu_predictions(tmp_path / "preds.json", tmp_path / "key.json")


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ({"validation_Art_1": "A"}, "but 1 of 1 entries are not (e.g. 'validation_Art_1': \"A\")"),
        (
            {
                "validation_Art_1": {"question_type": "multiple-choice", "ground_truth": "A"},
                "validation_Art_2": {"ground_truth": "B"},
            },
            'but 1 of 2 entries are not (e.g. \'validation_Art_2\': {"ground_truth": "B"})',
        ),
        ([{"id": "validation_Art_1", "ground_truth": "A"}], "this is a JSON array of 1 item"),
        ("A", "this is a JSON string"),
    ],
)
def test_answer_key_of_the_wrong_shape_says_what_is_expected(tmp_path: Path, key: Any, expected: str) -> None:
    """Not "id ... is not in the answer key": the key's shape is wrong, and the error says the right one."""
    (tmp_path / "key.json").write_text(json.dumps(key))
    (tmp_path / "preds.json").write_text(json.dumps({"validation_Art_1": "A"}))
    with pytest.raises(DataError) as info:
        mmmu_offline.score_mmmu_predictions(tmp_path / "preds.json", tmp_path / "key.json")
    message = str(info.value)
    assert message.startswith(
        f"{tmp_path / 'key.json'}: an MMMU answer key is a JSON object "
        '{id: {"question_type": ..., "ground_truth": ...}}'
    )
    assert expected in message
    assert "is not in the answer key" not in message


def test_flat_answer_key_hints_at_the_predictions_shape(tmp_path: Path) -> None:
    (tmp_path / "preds.json").write_text(json.dumps({"validation_Art_1": "A"}))
    with pytest.raises(DataError) as info:
        mmmu_offline.score_mmmu_predictions(tmp_path / "preds.json", tmp_path / "preds.json")
    assert info.value.hint is not None and "--mmmu-predictions" in info.value.hint


# ----------------------------------------------------------------------------------- MMMU responses


def _no_letter(item: dict[str, Any]) -> bool:
    """Independent reading of research §2.6 steps 1–6: nothing a letter could be taken from."""
    text = item["response"].strip()
    for ch in ",.!?;:'":
        text = text.strip(ch)
    padded = f" {text} "
    letters = item["all_choices"]
    if any(f"({x})" in padded or f"{x} " in padded or f"{x}." in padded for x in letters):
        return False
    by_text = len(padded.split()) > 5 and any(v.lower() in padded.lower() for v in item["index2ans"].values())
    return not by_text


def test_raw_responses_reproduce_official_parse(oracles: Path) -> None:
    folder = oracles / "mmmu" / "llava1.5_13b"
    official = json.loads((folder / "total_val_output.json").read_text())
    items = {i["id"]: i for p in folder.glob("*/output.json") for i in json.loads(p.read_text())}
    out = mmmu_offline.score_mmmu_responses(folder)
    assert len(out.scores) == 900
    fallbacks = []
    for score in out.scores:
        item = items[score.sample_id]
        expected = official[score.sample_id]
        if item["question_type"] == "multiple-choice":
            if score.random_fallback:
                fallbacks.append(item)
                continue
            assert score.parsed == expected, score.sample_id
        else:
            # The official file keeps one candidate per open question (as a string): it must be one of ours.
            try:
                value: Any = float(expected)
            except ValueError:
                value = expected
            assert value in score.parsed, (score.sample_id, score.parsed, expected)
    assert len(fallbacks) > 0
    assert all(_no_letter(i) for i in fallbacks)
    assert {i["id"] for i in fallbacks} == {
        i["id"] for i in items.values() if i["question_type"] == "multiple-choice" and _no_letter(i)
    }
    assert out.result.counts["random_fallback"] == len(fallbacks)
    assert any(fallbacks[0]["id"] in n for n in out.notes)


# ------------------------------------------------------------------------------------- MME folders


def mme_folder(oracles: Path, dest: Path, answer: Any) -> Path:
    dest.mkdir()
    for path in sorted((oracles / "mme" / "questions").glob("*.txt")):
        lines = []
        for line in path.read_text(encoding="utf-8").splitlines():
            image, question, gt = line.split("\t")
            lines.append(f"{image}\t{question}\t{gt}\t{answer(gt)}")
        (dest / path.name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return dest


def test_mme_folder_all_right_and_all_yes(oracles: Path, tmp_path: Path) -> None:
    right = mme_offline.score_mme_results(mme_folder(oracles, tmp_path / "right", lambda gt: gt))
    assert right.result.metrics == {"mme_perception_score": 2000.0, "mme_cognition_score": 800.0}
    yes = mme_offline.score_mme_results(mme_folder(oracles, tmp_path / "yes", lambda gt: "Yes"))
    assert yes.result.metrics == {"mme_perception_score": 500.0, "mme_cognition_score": 200.0}
    assert yes.samples[0].cluster == "existence/" + yes.samples[0].cluster.split("/")[1]


def test_mme_blank_template_and_split_pair(oracles: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="4"):
        mme_offline.score_mme_results(oracles / "mme" / "questions")
    folder = mme_folder(oracles, tmp_path / "r", lambda gt: gt)
    ocr = folder / "OCR.txt"
    ocr.write_text("\n".join(ocr.read_text().splitlines()[1:]) + "\n")
    with pytest.raises(DataError, match=r"OCR/0001\.jpg"):
        mme_offline.score_mme_results(folder)
    partial = mme_offline.score_mme_results(folder, allow_partial_pairs=True)
    # OCR: 19 images right (200), one with a single right answer (100): 3900/20 = 195
    assert partial.result.breakdown["categories"]["OCR"]["score"] == 195.0
    assert partial.result.metrics["mme_perception_score"] == 1995.0


def test_mme_folder_with_some_categories(oracles: Path, tmp_path: Path) -> None:
    folder = mme_folder(oracles, tmp_path / "r", lambda gt: gt)
    for path in folder.glob("*.txt"):
        if path.stem not in ("OCR", "code_reasoning"):
            path.unlink()
    (folder / "notes.txt").write_text("hello\n")
    out = mme_offline.score_mme_results(folder)
    assert out.result.metrics == {"mme_perception_score": 200.0, "mme_cognition_score": 200.0}
    assert any("notes.txt" in n for n in out.notes)


# ------------------------------------------------------------------------------- lmms-eval samples


def mme_line(doc_id: int, qid: str, cat: str, target: str, resp: Any, score: float) -> dict[str, Any]:
    key = "mme_cognition_score" if cat == "code_reasoning" else "mme_perception_score"
    return {
        "doc_id": doc_id,
        "target": target,
        "filtered_resps": resp,
        "doc_hash": "h",
        key: {"question_id": qid, "category": cat, "score": score},
        "input": f"Question {doc_id}?" + SUFFIX,
    }


def mmmu_line(
    doc_id: int, sid: str, qtype: str, answer: str, resp: str, parsed: Any, ctx: str
) -> dict[str, Any]:
    item = {
        "id": sid,
        "subdomain": sid.split("_")[1],
        "question_type": qtype,
        "answer": answer,
        "parsed_pred": [parsed],
    }
    return {
        "doc_id": doc_id,
        "target": answer,
        "filtered_resps": [resp],
        "doc_hash": "h",
        "mmmu_acc": item,
        "mmmu_acc_pass_at_k": item,
        "submission": {sid: str(parsed)},
        "input": ctx,
    }


def write_jsonl(path: Path, lines: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


@pytest.fixture
def lmms_files(tmp_path: Path) -> list[Path]:
    mme = [
        mme_line(0, "code_reasoning/0020.png", "code_reasoning", "Yes", "Yes", 1.0),
        mme_line(1, "code_reasoning/0020.png", "code_reasoning", "No", "yes", 0.0),
        mme_line(3, "OCR/0001.jpg", "OCR", "No", ["No."], 1.0),  # out of order on purpose
        mme_line(2, "OCR/0001.jpg", "OCR", "Yes", "Yes", 1.0),
    ]
    mmmu = [
        mmmu_line(0, "validation_Art_1", "multiple-choice", "B", "B", "B", f"Which?\nA. cat\nB. dog\n\n{MC}"),
        # no letter in the response: lmms-eval drew "A" at random, and it happens to be right
        mmmu_line(
            1, "validation_Art_2", "multiple-choice", "A", "I cannot tell", "A", f"Which?\nA. x\nB. y\n\n{MC}"
        ),
        # a log of lmms-eval <= 0.7.2: open answer flattened to one string (always scored wrong there)
        mmmu_line(2, "validation_Math_1", "open", "12", "12", "12.0", "How many?\n\n" + SUFFIX.strip()),
        mmmu_line(3, "validation_Math_2", "open", "6", "x = 5", [5.0], "What is x?\n\n" + SUFFIX.strip()),
    ]
    return [
        write_jsonl(tmp_path / "s_samples_mme.jsonl", mme),
        write_jsonl(tmp_path / "s_samples_mmmu_val.jsonl", mmmu),
    ]


def test_lmms_samples(lmms_files: list[Path]) -> None:
    mme, mmmu = offline.score_lmms_samples(lmms_files)
    assert mme.task == "mme"
    assert [s.doc_id for s in mme.samples] == [0, 1, 2, 3]
    assert mme.result.metrics == {"mme_cognition_score": 50.0, "mme_perception_score": 200.0}
    assert mme.result.counts["differs_from_log"] == 0
    assert mme.samples[0].id == "code_reasoning/0020.png::Question 0?"
    assert mmmu.task == "mmmu_val"
    assert [s.correct for s in mmmu.scores] == [True, True, True, False]
    assert [s.random_fallback for s in mmmu.scores] == [False, True, False, False]
    assert mmmu.result.metrics["mmmu_acc"] == 0.75
    assert mmmu.result.counts["random_fallback"] == 1
    assert mmmu.result.counts["differs_from_log"] == 1


def test_lmms_samples_bad_input(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no mme"):
        offline.score_lmms_samples([write_jsonl(tmp_path / "x.jsonl", [{"doc_id": 0, "acc": 1}])])
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match=r"bad\.jsonl:1"):
        offline.score_lmms_samples([bad])
    dup = write_jsonl(tmp_path / "d.jsonl", [mme_line(0, "OCR/1", "OCR", "Yes", "Yes", 1.0)] * 2)
    with pytest.raises(DataError, match="twice"):
        offline.score_lmms_samples([dup])


def test_recover_options() -> None:
    assert recover_options(f"Q?\nA. cat\nB. dog\n\n{MC}") == ["cat", "dog"]
    assert recover_options(f"Q?\nA. cat\nsecond line\nB. dog\n\n{MC}") is None
    assert recover_options("Q?\n\nAnswer the question using a single word or phrase.") is None


# ---------------------------------------------------------------------------------------------- CLI


def table_rows(stdout: str) -> list[list[str]]:
    """The cells of every markdown table row printed (padding removed)."""
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in stdout.splitlines()
        if line.startswith("|")
    ]


def assert_lmms_table(stdout: str) -> None:
    header = next(r for r in table_rows(stdout) if r[0] == "Tasks")
    assert header[:8] == ["Tasks", "Filter", "n-shot", "Metric", "", "Value", "", "Stderr"]


def test_cli_mme_results(oracles: Path, tmp_path: Path) -> None:
    folder = mme_folder(oracles, tmp_path / "r", lambda gt: gt)
    out = run_cli("--mme-results", str(folder))
    assert out.returncode == 0, out.stderr
    assert_lmms_table(out.stdout)
    rows = table_rows(out.stdout)
    assert rows[0][8] == "Stderr_CLT"
    assert ["mme", "none", "0", "mme_cognition_score", "↑", "800.0000", "±", "N/A", "0.0000"] in rows
    assert ["mme", "none", "0", "mme_perception_score", "↑", "2000.0000", "±", "N/A", "0.0000"] in rows
    assert "code_reasoning" in out.stdout and "celebrity" in out.stdout  # the category breakdown


def test_cli_mmmu_predictions(oracles: Path) -> None:
    mmmu = oracles / "mmmu"
    out = run_cli(
        "--mmmu-predictions",
        str(mmmu / "llava1.5_13b" / "total_val_output.json"),
        "--answer-key",
        str(mmmu / "answer_dict_val.before-2023-12-14.json"),
    )
    assert out.returncode == 0, out.stderr
    assert_lmms_table(out.stdout)
    assert ["mmmu_val", "none", "0", "mmmu_acc", "↑", "0.3644", "±", "N/A"] in table_rows(out.stdout)
    assert "Stderr_CLT" not in out.stdout
    assert "Overall-Art and Design" in out.stdout and "|**Overall**" in out.stdout
    assert "0.36444" in out.stdout


def test_cli_mmmu_responses(oracles: Path) -> None:
    out = run_cli("--mmmu-responses", str(oracles / "mmmu" / "llava1.5_13b"), "--seed", "0")
    assert out.returncode == 0, out.stderr
    assert_lmms_table(out.stdout)
    assert "mmmu_acc" in out.stdout and "Mechanical_Engineering" in out.stdout
    assert "random_fallback=" in out.stdout


def test_cli_lmms_samples(lmms_files: list[Path]) -> None:
    out = run_cli("--lmms-samples", str(lmms_files[0]), "--lmms-samples", str(lmms_files[1]))
    assert out.returncode == 0, out.stderr
    assert_lmms_table(out.stdout)
    assert "mme_perception_score" in out.stdout and "|mmmu_val" in out.stdout
    assert "0.7500" in out.stdout
    assert "OCR" in out.stdout and "Overall-Science" in out.stdout
    folder = run_cli("--lmms-samples", str(lmms_files[0].parent))  # a folder of *samples*.jsonl
    assert folder.returncode == 0 and folder.stdout == out.stdout


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "preds.json"
    bad.write_text("{oops")
    out = run_cli("--mmmu-predictions", str(bad), "--answer-key", str(bad))
    assert out.returncode == 3
    assert out.stderr.startswith("vlmparity: error: ") and out.stderr.count("\n") == 1
    assert "not valid JSON" in out.stderr
    none = run_cli()
    assert none.returncode == 4 and "exactly one input" in none.stderr
    alone = run_cli("--mmmu-predictions", str(bad))
    assert alone.returncode == 4 and "--answer-key" in alone.stderr
