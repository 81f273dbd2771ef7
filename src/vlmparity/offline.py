"""Scoring without a server: read answers other tools wrote and score them as a live run would.

Four inputs: an official MME results folder, an MMMU predictions file with its answer key (the official
MMMU tool's `main_eval_only` input), MMMU raw responses (per-subject `output.json`), and lmms-eval
`--log_samples` jsonl files. Each reader returns `OfflineScore`s holding samples, scores and the
aggregated `TaskResult`, so the same tables print as after a live run.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import Answer, Sample, SampleScore, TaskResult
from vlmparity.tasks.mme import COGNITION, PERCEPTION, POST_PROMPT, MMETask
from vlmparity.tasks.mme import make_sample as make_mme_sample
from vlmparity.tasks.mmmu import MULTIPLE_CHOICE, MMMUTask, metric_dict
from vlmparity.tasks.mmmu import make_sample as make_mmmu_sample
from vlmparity.tasks.mmmu_official import OFFICIAL_SEED, OFFICIAL_SUBJECT_ORDER, find_choice_official
from vlmparity.tasks.mmmu_parse import (
    MC_PROMPT,
    Candidate,
    ChoiceParse,
    candidate_from_json,
    eval_multi_choice,
    eval_open,
    find_choice,
    parse_multi_choice,
    parse_open_response,
)
from vlmparity.tasks.reasoning import postprocess_response


@dataclass(frozen=True)
class OfflineScore:
    """One task scored from files: what was read, how each item scored, the aggregate, and notes."""

    kind: str  # mme-results | mmmu-predictions | mmmu-responses | lmms-samples
    task: str
    samples: list[Sample]
    scores: list[SampleScore]
    result: TaskResult
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file", hint="check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})", hint="check the file") from None
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{path}: not valid JSON ({exc.msg} at line {exc.lineno})", hint="check the file"
        ) from None


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


def _is_mc(question_type: Any) -> bool:
    # The official key calls open questions "short-answer", lmms-eval calls them "open": anything
    # that is not multiple-choice is scored as open, as both tools do.
    return bool(question_type == MULTIPLE_CHOICE)


# ------------------------------------------------------------------------------------------------- MME


def read_mme_results(folder: Path) -> tuple[list[Sample], list[Answer], list[str]]:
    """An official MME results folder: `<category>.txt` lines `image\\tquestion\\tground_truth\\tanswer`."""
    if not folder.is_dir():
        raise DataError(
            f"{folder}: not a folder", hint="pass the folder holding the 14 MME category .txt files"
        )
    files = {p.stem: p for p in folder.glob("*.txt")}
    known = [c for c in (*PERCEPTION, *COGNITION) if c in files]
    notes = [f"ignored {files[s].name}: not an MME category" for s in sorted(files) if s not in known]
    if not known:
        raise DataError(
            f"{folder}: no MME category files (existence.txt, OCR.txt, …)",
            hint="pass the folder the official MME tool scores",
        )
    missing = [c for c in (*PERCEPTION, *COGNITION) if c not in files]
    if missing:
        notes.append(f"categories absent (not counted, as in lmms-eval): {', '.join(missing)}")
    samples: list[Sample] = []
    answers: list[Answer] = []
    for category in known:
        path = files[category]
        try:
            lines = path.read_text(encoding="utf-8-sig").splitlines()  # tolerate a BOM
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({exc})", hint="MME result files are UTF-8 text") from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            cols = line.split("\t")
            if len(cols) < 4:
                raise DataError(
                    f"{path}:{lineno}: {len(cols)} tab-separated column(s), expected 4 "
                    "(image, question, ground truth, model answer)",
                    hint="a results folder needs the model's answer in the 4th column",
                )
            image, question, gt = cols[0], cols[1], cols[2]
            answer = "\t".join(cols[3:])  # a tab inside an answer stays part of it
            sample = make_mme_sample(len(samples), f"{category}/{image}", question, gt, category, None)
            samples.append(sample)
            answers.append(Answer(sample_id=sample.id, text=answer))
    return samples, answers, notes


def score_mme_results(folder: Path, *, allow_partial_pairs: bool = False) -> OfflineScore:
    """Score an official MME results folder with lmms-eval's parser and aggregation."""
    samples, answers, notes = read_mme_results(folder)
    task = MMETask()
    scores = task.score(samples, answers)
    result = task.aggregate(samples, scores, allow_partial_pairs=allow_partial_pairs)
    return OfflineScore("mme-results", task.name, samples, scores, result, notes)


# ----------------------------------------------------------------------------------- MMMU predictions


def score_mmmu_predictions(predictions: Path, answer_key: Path) -> OfflineScore:
    """Score `{id: answer}` against `{id: {question_type, ground_truth}}` as the official MMMU tool does.

    Multiple-choice: string equality (any of a gold list). Open: a string value is re-parsed with the open
    parser, a list is taken as the candidates; then eval_open against the gold (any of a gold list).
    """
    preds = _read_json(predictions)
    key = _read_json(answer_key)
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
        sample = make_mmmu_sample(doc_id, sid, "", [], _target(gold), qtype, gold=_as_list(gold))
        parsed: Any
        if _is_mc(qtype):
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


def _json_kind(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def _check_answer_key(key: Any, path: Path) -> None:
    """A DataError saying what is expected when `key` is not shaped like MMMU's answer_dict_val.json."""
    if not isinstance(key, dict):
        count = f" of {len(key)} item{'' if len(key) == 1 else 's'}" if isinstance(key, list) else ""
        raise DataError(
            f"{path}: an MMMU answer key is a JSON object {_KEY_SHAPE}, this is a JSON {_json_kind(key)}{count}",
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
        items = _read_json(path)
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
                        f"{where} ({sid}): the response is {_json_kind(raw)}, not text; the official MMMU "
                        "tool stops on it",
                        hint="--mmmu-parser lmms-eval scores a null response as an empty answer",
                    )
                text = raw
            else:
                text = postprocess_response(str(raw) if raw is not None else None)
            if _is_mc(qtype):
                index2ans = item.get("index2ans")
                letters = item.get("all_choices")
                if not isinstance(index2ans, dict) or not isinstance(letters, list) or not letters:
                    raise DataError(
                        f"{where} ({sid}): multiple-choice without all_choices/index2ans", hint="check"
                    )
                letter_list = [str(x) for x in letters]
                answers = {str(k): str(v) for k, v in index2ans.items()}
                options = [answers.get(letter, "") for letter in letter_list]
                sample = make_mmmu_sample(
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
                sample = make_mmmu_sample(
                    len(samples), sid, "", [], _target(gold), qtype, gold=_as_list(gold)
                )
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


# ------------------------------------------------------------------------------ lmms-eval sample logs

_MME_KEYS = ("mme_perception_score", "mme_cognition_score")
_OPTION_LINE = re.compile(r"^([A-Z])\. (.*)$")


def _filtered_text(line: Mapping[str, Any], where: str) -> str:
    value: Any = line.get("filtered_resps")
    while isinstance(value, list):  # lmms-eval writes a string; some writers wrap it in lists
        value = value[0] if value else ""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise DataError(f"{where}: filtered_resps is not text", hint="is this an lmms-eval samples file?")
    return value


def _task_of(line: Mapping[str, Any]) -> str | None:
    if any(k in line for k in _MME_KEYS):
        return "mme"
    if "mmmu_acc" in line:
        return "mmmu_val"
    return None


def recover_options(ctx: str) -> list[str] | None:
    """The options of a multiple-choice MMMU prompt text (lmms-eval's `input`), or None if unclear."""
    suffix = "\n\n" + MC_PROMPT
    if not ctx.endswith(suffix):
        return None
    lines = ctx[: -len(suffix)].split("\n")
    found: list[str] = []
    for text in reversed(lines):
        m = _OPTION_LINE.match(text)
        if not m:
            break
        found.append(m.group(2))
        if m.group(1) == "A":
            break
    found.reverse()
    letters = [_OPTION_LINE.match(t) for t in lines[len(lines) - len(found) :]]
    if not found or any(m is None or m.group(1) != chr(65 + i) for i, m in enumerate(letters)):
        return None
    return found


def read_lmms_samples(paths: Sequence[Path]) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """Lines of lmms-eval `--log_samples` files, grouped by task (detected from the metric keys)."""
    by_task: dict[str, list[tuple[Path, dict[str, Any]]]] = {}
    for path in _expand(paths):
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise DataError(f"{path}: no such file", hint="check the path") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"{path}: cannot read ({exc})", hint="check the file") from None
        for lineno, raw in enumerate(text.splitlines(), start=1):
            if not raw.strip():
                continue
            try:
                line = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise DataError(
                    f"{path}:{lineno}: not valid JSON ({exc.msg})", hint="a samples .jsonl file"
                ) from None
            task = _task_of(line) if isinstance(line, dict) else None
            if task is None:
                raise DataError(
                    f"{path}:{lineno}: no mme_*_score or mmmu_acc entry",
                    hint="only lmms-eval samples files of mme and mmmu_val can be scored",
                )
            by_task.setdefault(task, []).append((path, line))
    if not by_task:
        raise DataError("no samples found in the given files", hint="pass lmms-eval *_samples_*.jsonl files")
    return by_task


def _expand(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            found = sorted(p.glob("*samples*.jsonl"))
            if not found:
                raise DataError(
                    f"{p}: no *samples*.jsonl files in this folder", hint="pass the files themselves"
                )
            out.extend(found)
        else:
            out.append(p)
    return out


def _ordered(lines: list[tuple[Path, dict[str, Any]]], task: str) -> list[tuple[Path, dict[str, Any]]]:
    seen: dict[int, Path] = {}
    for path, line in lines:
        doc_id = line.get("doc_id")
        if not isinstance(doc_id, int):
            raise DataError(
                f"{path}: a {task} line has no integer doc_id", hint="is this an lmms-eval samples file?"
            )
        if doc_id in seen:
            raise DataError(
                f"{task} doc_id {doc_id} appears twice ({seen[doc_id].name}, {path.name})",
                hint="pass one samples file per task and run",
            )
        seen[doc_id] = path
    return sorted(lines, key=lambda pl: int(pl[1]["doc_id"]))


def _score_lmms_mme(lines: list[tuple[Path, dict[str, Any]]], allow_partial_pairs: bool) -> OfflineScore:
    samples: list[Sample] = []
    answers: list[Answer] = []
    logged: list[float] = []
    for path, line in _ordered(lines, "mme"):
        where = f"{path}: doc_id {line['doc_id']}"
        entry = next(line[k] for k in _MME_KEYS if k in line)
        if not isinstance(entry, dict) or "question_id" not in entry or "category" not in entry:
            raise DataError(f"{where}: the MME entry lacks question_id/category", hint="check the file")
        ctx = str(line.get("input", ""))
        question = ctx[: -len(POST_PROMPT)] if ctx.endswith(POST_PROMPT) else ctx
        sample = make_mme_sample(
            int(line["doc_id"]),
            str(entry["question_id"]),
            question,
            str(line.get("target", "")),
            str(entry["category"]),
            None,
        )
        samples.append(sample)
        answers.append(Answer(sample_id=sample.id, text=_filtered_text(line, where)))
        logged.append(float(entry.get("score", -1)))
    task = MMETask(reasoning_tags=None)  # filtered_resps are already stripped of reasoning tags
    scores = task.score(samples, answers)
    result = task.aggregate(samples, scores, allow_partial_pairs=allow_partial_pairs)
    differs = sum(1 for s, v in zip(scores, logged, strict=True) if (1.0 if s.correct else 0.0) != v)
    notes = [f"{differs} item(s) score differently from the logged score"] if differs else []
    result = _with_count(result, "differs_from_log", differs)
    return OfflineScore("lmms-samples", "mme", samples, scores, result, notes)


def _score_lmms_mmmu(lines: list[tuple[Path, dict[str, Any]]]) -> OfflineScore:
    samples: list[Sample] = []
    scores: list[SampleScore] = []
    differs = 0
    unknown_fallback = 0
    for path, line in _ordered(lines, "mmmu_val"):
        where = f"{path}: doc_id {line['doc_id']}"
        entry = line["mmmu_acc"]
        if not isinstance(entry, dict) or "id" not in entry or "parsed_pred" not in entry:
            raise DataError(f"{where}: the mmmu_acc entry lacks id/parsed_pred", hint="check the file")
        sid = str(entry["id"])
        gold = str(entry.get("answer", line.get("target", "")))
        qtype = str(entry.get("question_type", ""))
        logged = entry["parsed_pred"][0] if entry["parsed_pred"] else ""
        text = _filtered_text(line, where).strip()
        options = recover_options(str(line.get("input", ""))) if _is_mc(qtype) else []
        sample = make_mmmu_sample(int(line["doc_id"]), sid, "", options or [], gold, qtype)
        if _is_mc(qtype):
            # The letter lmms-eval logged (its own random draw included); the options recovered from the
            # prompt text tell whether that letter was a random fallback.
            letter = str(logged)
            fallback = False
            if options:
                found = find_choice(
                    text,
                    [chr(65 + i) for i in range(len(options))],
                    {chr(65 + i): o for i, o in enumerate(options)},
                )
                fallback = found is None
                differs += int(found is not None and found != letter)
            else:
                unknown_fallback += 1
            score = SampleScore(
                sample_id=sid,
                correct=eval_multi_choice(gold, letter),
                parsed=letter,
                random_fallback=fallback,
                details=metric_dict(sample, [letter]),
            )
        else:
            cands = parse_open_response(text)  # 0.7.3: the candidate list (≤0.7.2 logged one string)
            correct = eval_open(gold, cands)
            logged_cands = (
                [candidate_from_json(v) for v in logged] if isinstance(logged, list) else list(str(logged))
            )
            differs += int(correct != eval_open(gold, logged_cands))
            score = SampleScore(
                sample_id=sid, correct=correct, parsed=cands, details=metric_dict(sample, [cands])
            )
        samples.append(sample)
        scores.append(score)
    result = MMMUTask().aggregate(samples, scores)
    notes = []
    if differs:
        notes.append(
            f"{differs} item(s) score differently from the log (logs of lmms-eval <= 0.7.2 score every open "
            "question wrong; here they are re-parsed as 0.7.3 does)"
        )
    if unknown_fallback:
        notes.append(
            f"{unknown_fallback} multiple-choice item(s): options not recoverable from the prompt, "
            "random fallbacks not detectable"
        )
    result = _with_count(result, "differs_from_log", differs)
    return OfflineScore("lmms-samples", "mmmu_val", samples, scores, result, notes)


def _with_count(result: TaskResult, key: str, value: int) -> TaskResult:
    return TaskResult(
        task=result.task,
        metrics=result.metrics,
        breakdown=result.breakdown,
        n=result.n,
        counts={**result.counts, key: value},
    )


def score_lmms_samples(paths: Sequence[Path], *, allow_partial_pairs: bool = False) -> list[OfflineScore]:
    """Score lmms-eval `--log_samples` files (mme and/or mmmu_val), one `OfflineScore` per task.

    MME is re-parsed from `filtered_resps`; MMMU multiple-choice uses the logged letter (lmms-eval's own
    random draw included), MMMU open is re-parsed from `filtered_resps` with 0.7.3's candidate list.
    """
    by_task = read_lmms_samples(paths)
    out = []
    if "mme" in by_task:
        out.append(_score_lmms_mme(by_task["mme"], allow_partial_pairs))
    if "mmmu_val" in by_task:
        out.append(_score_lmms_mmmu(by_task["mmmu_val"]))
    return out
