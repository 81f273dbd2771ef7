"""Scoring MMMU answers other tools wrote, without a server (`vlmparity score`).

An MMMU predictions file with its answer key (the official MMMU tool's `main_eval_only` input), and raw
responses (per-subject `output.json`) parsed as lmms-eval 0.7.3 does or as the official tool does.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import OfflineScore, Sample, SampleScore
from vlmparity.tasks.mmmu import MMMUTask, is_multiple_choice, make_sample, metric_dict
from vlmparity.tasks.mmmu_official import OFFICIAL_SEED, OFFICIAL_SUBJECT_ORDER, find_choice_official
from vlmparity.tasks.mmmu_parse import (
    Candidate,
    ChoiceParse,
    candidate_from_json,
    eval_multi_choice,
    eval_open,
    parse_multi_choice,
    parse_open_response,
)
from vlmparity.tasks.offline_files import json_kind, read_json
from vlmparity.tasks.reasoning import postprocess_response


def _gold(value: Any, where: str) -> str | list[str]:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value:
        return [str(v) for v in value]
    raise DataError(
        f"{where}: the gold answer {value!r} is neither a string nor a list", hint="check the file"
    )


def _target(gold: str | list[str]) -> str:
    return gold if isinstance(gold, str) else json.dumps(gold, ensure_ascii=False)


def score_mmmu_predictions(predictions: Path, answer_key: Path) -> OfflineScore:
    """Score `{id: answer}` against `{id: {question_type, ground_truth}}` as the official MMMU tool does.

    Multiple-choice: string equality (any of a gold list). Open: a string value is re-parsed with the open
    parser, a list is taken as the candidates; then eval_open against the gold (any of a gold list).
    """
    preds = read_json(predictions)
    key = read_json(answer_key)
    if not isinstance(preds, dict):
        raise DataError(
            f"{predictions}: expected a JSON object {{id: answer}}", hint="e.g. total_val_output.json"
        )
    _check_answer_key(key, answer_key)
    samples: list[Sample] = []
    scores: list[SampleScore] = []
    for doc_id, (sid, value) in enumerate(preds.items()):
        entry = key.get(sid)
        if not isinstance(entry, dict) or "ground_truth" not in entry:
            raise DataError(
                f"{predictions}: id {sid!r} is not in the answer key {answer_key.name}",
                hint="use the answer key of the same split",
            )
        gold = _gold(entry["ground_truth"], f"{answer_key}: {sid}")
        qtype = str(entry.get("question_type", ""))
        sample = make_sample(doc_id, sid, "", [], _target(gold), qtype, gold=_as_list(gold))
        parsed: Any
        if is_multiple_choice(qtype):
            parsed = value if isinstance(value, str) else json.dumps(value)
            correct = eval_multi_choice(gold, parsed)
        else:
            parsed = _open_candidates(value)
            correct = eval_open(gold, parsed)
        samples.append(sample)
        scores.append(
            SampleScore(sample_id=sid, correct=correct, parsed=parsed, details=metric_dict(sample, [parsed]))
        )
    notes = []
    unanswered = [k for k in key if k not in preds]
    if unanswered:
        notes.append(
            f"{len(unanswered)} answer-key id(s) have no prediction and are not counted (as upstream)"
        )
    result = MMMUTask().aggregate(samples, scores)
    return OfflineScore("mmmu-predictions", "mmmu_val", samples, scores, result, notes)


_KEY_SHAPE = '{id: {"question_type": ..., "ground_truth": ...}}'


def _check_answer_key(key: Any, path: Path) -> None:
    """A DataError saying what is expected when `key` is not shaped like MMMU's answer_dict_val.json."""
    if not isinstance(key, dict):
        count = f" of {len(key)} item{'' if len(key) == 1 else 's'}" if isinstance(key, list) else ""
        raise DataError(
            f"{path}: an MMMU answer key is a JSON object {_KEY_SHAPE}, this is a JSON {json_kind(key)}{count}",
            hint="use answer_dict_val.json from the MMMU repository",
        )
    bad = [
        (sid, entry)
        for sid, entry in key.items()
        if not (isinstance(entry, dict) and "ground_truth" in entry and "question_type" in entry)
    ]
    if bad:
        sid, entry = bad[0]
        shown = json.dumps(entry, ensure_ascii=False)
        shown = shown if len(shown) <= 60 else shown[:60] + "…"
        # {id: "C"} is the predictions' shape: the two files may have been swapped
        swapped = all(isinstance(e, str | list) for _, e in bad)
        raise DataError(
            f"{path}: an MMMU answer key is a JSON object {_KEY_SHAPE}, but {len(bad)} of {len(key)} "
            f"entries are not (e.g. {sid!r}: {shown})",
            hint="{id: answer} is the shape of the predictions (--mmmu-predictions); the answer key is "
            "MMMU's answer_dict_val.json"
            if swapped
            else "use answer_dict_val.json from the MMMU repository",
        )


def _as_list(gold: str | list[str]) -> list[str] | None:
    return gold if isinstance(gold, list) else None


def _open_candidates(value: Any) -> list[Candidate]:
    if isinstance(value, list):
        return [candidate_from_json(v) for v in value]
    return parse_open_response(str(value))


# ------------------------------------------------------------------------------------- MMMU responses


MMMU_PARSERS = ("lmms-eval", "official")
# lmms-eval's parse is the default: every other MMMU number vlmparity prints (run, compare, report, score of
# lmms-eval logs) is lmms-eval 0.7.3's, so raw responses scored offline compare with a live run's figures.
DEFAULT_MMMU_PARSER = "lmms-eval"
_LMMS_SEED = 0  # lmms-eval's default python seed (--seed 0,1234,1234,1234)


def _response_files(folder: Path) -> list[Path]:
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder", hint="pass the folder holding <Subject>/output.json")
    files = sorted(folder.glob("*/output.json"))
    if (folder / "output.json").is_file():
        files.insert(0, folder / "output.json")
    if not files:
        raise DataError(f"{folder}: no <Subject>/output.json files", hint="pass the MMMU outputs folder")
    return files


def _official_response_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The files `main_parse_and_eval.py --subject ALL` reads, in its order, and notes on what it skips."""
    if folder.is_file():
        return [folder], []
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder", hint="pass the folder holding <Subject>/output.json")
    files: list[Path] = []
    for subject in OFFICIAL_SUBJECT_ORDER:
        if not (folder / subject).is_dir():
            continue
        path = folder / subject / "output.json"
        if not path.is_file():
            raise DataError(
                f"{folder / subject}: no output.json (the official tool stops on this folder too)",
                hint="remove the folder or add its output.json",
            )
        files.append(path)
    known = set(OFFICIAL_SUBJECT_ORDER)
    ignored = [p for p in sorted(folder.glob("*/output.json")) if p.parent.name not in known]
    if (folder / "output.json").is_file():
        ignored.insert(0, folder / "output.json")
    notes = [
        f"ignored {p.relative_to(folder)}: not in an MMMU subject folder (the official tool reads only those)"
        for p in ignored
    ]
    if not files:
        raise DataError(
            f"{folder}: no <Subject>/output.json files for any MMMU subject",
            hint="pass the MMMU outputs folder (Accounting/output.json, …)",
        )
    return files, notes


def score_mmmu_responses(
    folder: Path, *, seed: int | None = None, parser: str = DEFAULT_MMMU_PARSER
) -> OfflineScore:
    """Parse raw MMMU responses (`output.json` per subject) and score them.

    `parser="lmms-eval"` (default) scores like a live run: reasoning tags stripped and `.strip()` first,
    lmms-eval's letter parse, fallbacks drawn from one `random.Random(seed)` (seed 0 by default) in file order
    (subjects sorted, items in file order). `parser="official"` reproduces MMMU's `main_parse_and_eval.py`
    (see `vlmparity.tasks.mmmu_official`): raw text, its own letter parse, `random.seed(42)` by default and
    its subject order. Notes always name the parser and list the random fallbacks.
    """
    if parser not in MMMU_PARSERS:
        raise ConfigError(f"unknown MMMU parser {parser!r}", hint=f"use one of: {', '.join(MMMU_PARSERS)}")
    official = parser == "official"
    if seed is None:
        seed = OFFICIAL_SEED if official else _LMMS_SEED
    if official:
        files, notes = _official_response_files(folder)
    else:
        files, notes = _response_files(folder), []
    rng = random.Random(seed)
    samples: list[Sample] = []
    scores: list[SampleScore] = []
    for path in files:
        items = read_json(path)
        if not isinstance(items, list):
            raise DataError(f"{path}: expected a JSON list of responses", hint="an MMMU output.json")
        for pos, item in enumerate(items):
            where = f"{path}: item {pos}"
            if not isinstance(item, dict) or any(k not in item for k in ("id", "response", "answer")):
                raise DataError(
                    f"{where}: needs id, question_type, answer and response", hint="check the file"
                )
            sid = str(item["id"])
            gold = _gold(item["answer"], f"{where} ({sid})")
            qtype = str(item.get("question_type", ""))
            raw = item["response"]
            if official:
                if not isinstance(raw, str):
                    raise DataError(
                        f"{where} ({sid}): the response is {json_kind(raw)}, not text; the official MMMU "
                        "tool stops on it",
                        hint="--mmmu-parser lmms-eval scores a null response as an empty answer",
                    )
                text = raw
            else:
                text = postprocess_response(str(raw) if raw is not None else None)
            if is_multiple_choice(qtype):
                index2ans = item.get("index2ans")
                letters = item.get("all_choices")
                if not isinstance(index2ans, dict) or not isinstance(letters, list) or not letters:
                    raise DataError(
                        f"{where} ({sid}): multiple-choice without all_choices/index2ans", hint="check"
                    )
                letter_list = [str(x) for x in letters]
                answers = {str(k): str(v) for k, v in index2ans.items()}
                options = [answers.get(letter, "") for letter in letter_list]
                sample = make_sample(
                    len(samples), sid, "", options, _target(gold), qtype, gold=_as_list(gold)
                )
                if official:
                    found = find_choice_official(text, letter_list, answers)
                    choice = (
                        ChoiceParse(found, False)
                        if found is not None
                        else ChoiceParse(rng.choice(letter_list), True)
                    )
                else:
                    choice = parse_multi_choice(text, letter_list, answers, rng)
                score = SampleScore(
                    sample_id=sid,
                    correct=eval_multi_choice(gold, choice.letter),
                    parsed=choice.letter,
                    random_fallback=choice.random_fallback,
                    details=metric_dict(sample, [choice.letter]),
                )
            else:
                sample = make_sample(len(samples), sid, "", [], _target(gold), qtype, gold=_as_list(gold))
                cands = parse_open_response(text)
                score = SampleScore(
                    sample_id=sid,
                    correct=eval_open(gold, cands),
                    parsed=cands,
                    details=metric_dict(sample, [cands]),
                )
            samples.append(sample)
            scores.append(score)
    result = MMMUTask().aggregate(samples, scores)
    if official:
        notes.insert(
            0,
            f"parser: official MMMU (main_parse_and_eval.py: raw responses, its letter parse, "
            f"random.seed({seed}), subjects in CAT_SHORT2LONG order)",
        )
    else:
        notes.insert(
            0,
            f"parser: lmms-eval 0.7.3 (reasoning tags stripped, its letter parse, random.Random({seed}) "
            "in file order); --mmmu-parser official for MMMU's own",
        )
    fallbacks = [s.sample_id for s in scores if s.random_fallback]
    notes.insert(
        1,
        f"random fallbacks: {len(fallbacks)} multiple-choice response(s) had no letter; "
        f"random letter drawn (seed {seed})" + (": " + ", ".join(fallbacks) if fallbacks else ""),
    )
    return OfflineScore("mmmu-responses", "mmmu_val", samples, scores, result, notes)
