"""MMMU validation as lmms-eval 0.7.3 runs it with an OpenAI-compatible model (research §2).

Images interleaved with the text by `<image N>` placeholders (with lmms-eval's quirks), answers parsed by
MMMU's parsers (a seeded random letter when no letter is found), accuracy per subject, per domain and
overall; `mmmu_acc` is the overall accuracy rounded to 5 decimals. Also the dataset's schema and row rules,
the printed breakdown, and the scoring of lmms-eval samples lines (`vlmparity score --lmms-samples`).
"""

from __future__ import annotations

import ast
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from vlmparity.errors import DataError
from vlmparity.tasks.base import (
    ACCURACY,
    FALLBACK_PER_SAMPLE,
    FALLBACK_SEQUENTIAL,
    Answer,
    BreakdownTable,
    GroupScores,
    ImageData,
    ImagePart,
    LoggedLine,
    MetricSpec,
    OfflineScore,
    Part,
    Prompt,
    Sample,
    SampleScore,
    TaskResult,
    TextPart,
    register_task,
)
from vlmparity.tasks.mmmu_parse import (
    MC_PROMPT,
    candidate_from_json,
    construct_prompt,
    eval_multi_choice,
    eval_open,
    extract_subset_name,
    find_choice,
    multi_choice_info,
    parse_multi_choice,
    parse_open_response,
    printable_results,
    submission_value,
)
from vlmparity.tasks.offline_files import filtered_text, with_count
from vlmparity.tasks.reasoning import DEFAULT_REASONING_TAGS, TagPair, postprocess_response
from vlmparity.tasks.schema import ColumnSpec, RowProblem, TaskSchema

METRIC = "mmmu_acc"
MAX_TOKENS = 128
ACCURACY_MARGIN = 0.01  # 1 percentage point, as a fraction
MULTIPLE_CHOICE = "multiple-choice"
# Where a multiple-choice answer without a letter gets its random letter from:
# - sequential: one `random.Random(seed)` drawn in document order, as lmms-eval does (its reported score);
# - per_sample: `random.Random(f"{seed}:{sample_id}")`, so the letter depends on the sample alone and two
#   endpoints that gave the same unparseable answer get the same letter (paired comparisons).
FALLBACKS = (FALLBACK_SEQUENTIAL, FALLBACK_PER_SAMPLE)

_PLACEHOLDER = re.compile(r"<image \d+>")
_COLUMNS = ("id", "question", "options", "answer", "question_type")

SCHEMA = TaskSchema(
    task="mmmu_val",
    dataset="lmms-lab/MMMU (split validation)",
    id_columns=("id",),
    columns=(
        ColumnSpec("id"),
        ColumnSpec("question"),
        ColumnSpec("options"),
        # informational columns the scorer never reads: tolerate nulls rather than refuse a dataset
        ColumnSpec("explanation", nullable=True),
        *(ColumnSpec(f"image_{i}", "image", nullable=True) for i in range(1, 8)),
        ColumnSpec("img_type", nullable=True),
        ColumnSpec("answer"),
        ColumnSpec("topic_difficulty", nullable=True),
        ColumnSpec("question_type"),
        ColumnSpec("subfield", nullable=True),
    ),
)
_QUESTION_TYPES = ("multiple-choice", "open")
_IMAGE_REF = re.compile(r"<image (\d+)>")
_ID = re.compile(r"^([^_]+)_(.+?)_\d+$")  # validation_Art_Theory_12 -> subject Art_Theory
_OPTION_LINE = re.compile(r"^([A-Z])\. (.*)$")


def image_keys(ctx: str) -> list[str]:
    """Image columns a prompt refers to: `<image N>` → `image_N`, deduplicated, sorted as strings."""
    return sorted({m[1:-1].replace(" ", "_") for m in _PLACEHOLDER.findall(ctx)})


def interleave(ctx: str, n_images: int) -> tuple[Part, ...]:
    """lmms-eval's `mmmu_doc_to_messages` content for a ctx text and its `n_images` sorted images.

    The text is cut at each placeholder (any of `<image 1>`…`<image 7>`); before image i comes segment i,
    stripped, if non-empty; the last segment is always appended, even empty. Images go by sorted number,
    not by mention order, and a repeated placeholder leaves fewer images than cuts: middle segments drop.
    """
    text = ctx
    for i in range(1, 8):
        text = text.replace(f"<image {i}>", "<image>")
    segments = text.split("<image>")
    parts: list[Part] = []
    for i in range(n_images):
        if i < len(segments) - 1 and segments[i].strip():
            parts.append(TextPart(segments[i].strip()))
        parts.append(ImagePart(i))
    parts.append(TextPart(segments[-1].strip()))
    return tuple(parts)


def parse_options(raw: Any, row_id: str) -> list[str]:
    """The options column: a string holding a Python list literal (or already a list)."""
    if isinstance(raw, list | tuple):
        return [str(o) for o in raw]
    try:
        value = ast.literal_eval(str(raw))
    except (ValueError, SyntaxError) as exc:
        raise DataError(
            f"MMMU row {row_id}: column options is not a list literal ({exc.__class__.__name__})",
            hint="options must look like \"['cat', 'dog']\"",
        ) from None
    if not isinstance(value, list | tuple):
        raise DataError(f"MMMU row {row_id}: column options is not a list", hint="e.g. \"['cat', 'dog']\"")
    return [str(o) for o in value]


def subject_of(sample_id: str) -> str:
    """The subject recovered from the id, as lmms-eval does; a malformed id is a data error."""
    subject = extract_subset_name(sample_id)
    if subject is None:
        raise DataError(
            f"MMMU id {sample_id!r} does not look like <split>_<Subject>_<n>",
            hint="MMMU ids look like validation_Art_Theory_12",
        )
    return subject


def make_sample(
    doc_id: int,
    sample_id: str,
    question: str,
    options: list[str],
    answer: str,
    question_type: str,
    images: Mapping[str, bytes | None] | None = None,
    subfield: str = "",
    gold: Sequence[str] | None = None,
) -> Sample:
    """One MMMU sample. `images` maps column names (image_1…) to bytes; None skips image checks (offline).

    `gold` is a list of accepted answers (the official answer key's form); by default the answer string.
    """
    ctx = construct_prompt(question, options, question_type)
    keys = image_keys(ctx)
    data: list[ImageData] = []
    if images is not None:
        for key in keys:
            blob = images.get(key)
            if not blob:
                raise DataError(
                    f"MMMU row {sample_id}: the prompt refers to <{key.replace('_', ' ')}> "
                    f"but column {key} holds no image",
                    hint="check the dataset: every referenced image must be present",
                )
            data.append(ImageData.from_bytes(bytes(blob)))
    return Sample(
        task="mmmu_val",
        id=sample_id,
        doc_id=doc_id,
        target=answer,
        group=subject_of(sample_id),
        cluster=sample_id,
        images=tuple(data),
        fields={
            "question": question,
            "options": options,
            "question_type": question_type,
            "answer": answer,
            "subfield": subfield,
            "subject": subject_of(sample_id),
            "image_keys": keys,
            "ctx": ctx,
            "gold": list(gold) if gold is not None else answer,
        },
    )


def metric_dict(sample: Sample, parsed_preds: list[Any]) -> dict[str, Any]:
    """lmms-eval's per-sample MMMU output (what a samples .jsonl line holds)."""
    item = {
        "id": sample.id,
        "subdomain": sample.group,
        "question_type": sample.fields["question_type"],
        "answer": sample.target,
        "parsed_pred": parsed_preds,
    }
    first = parsed_preds[0] if parsed_preds else ""
    return {
        "mmmu_acc": item,
        "mmmu_acc_pass_at_k": dict(item),
        "submission": {sample.id: submission_value(first)},
    }


class MMMUTask:
    """lmms-eval's `mmmu_val` task (default kwargs, interleaved chat messages)."""

    name = "mmmu_val"
    default_source = "lmms-lab-encoder/MMMU"
    legacy_sources: tuple[str, ...] = ("lmms-lab/MMMU",)
    split = "validation"
    metric_names: tuple[str, ...] = (METRIC,)
    max_tokens = MAX_TOKENS
    max_images = 7  # image_1 .. image_7: the most one MMMU-val question shows (and one request sends)
    lmms_version: str | float = 0.0
    artifact_keys: tuple[str, ...] = ("mmmu_acc_pass_at_k", "submission")
    schema = SCHEMA

    def __init__(self, reasoning_tags: Sequence[TagPair] | None = DEFAULT_REASONING_TAGS) -> None:
        self.reasoning_tags = reasoning_tags

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        """`mmmu_acc`: questions resampled within subjects; margin 1 percentage point."""
        return (MetricSpec(METRIC, ACCURACY, margin=ACCURACY_MARGIN),)

    def stop_part(self, sample: Sample) -> str:
        return self.name

    def check_rows(self, rows: Sequence[Mapping[str, Any]], *, images: bool = True) -> list[RowProblem]:
        """The subject in the id, `options` a list literal, a known question type, referenced images present."""
        return [p for index, row in enumerate(rows) for p in _row_problems(index, row, images=images)[:1]]

    def breakdown_tables(self, result: TaskResult) -> list[BreakdownTable]:
        """lmms-eval's printed MMMU results: each domain's overall, its subjects, then Overall."""
        printable: Mapping[str, Mapping[str, Any]] = result.breakdown.get("printable_results", {})
        rows: list[tuple[str, ...]] = []
        for name, v in printable.items():
            label = f"**{name}**" if name.startswith("Overall") else f"  {name}"
            rows.append((label, str(v["num"]), f"{v['acc']:.5f}"))
        return [BreakdownTable(("Subject", "Num", "Acc"), tuple(rows))]

    def group_scores(self, result: TaskResult, samples: Sequence[Sample]) -> GroupScores | None:
        """Each subject's accuracy and its questions (subjects of `samples` only, not the domain overalls)."""
        printable: Mapping[str, Mapping[str, Any]] = result.breakdown.get("printable_results", {}) or {}
        subjects = {s.group for s in samples}
        values = {
            k: (float(x["acc"]), int(x["num"])) for k, x in printable.items() if k in subjects and x["num"]
        }
        return GroupScores("subject", "fraction", 1.0, values)

    def score_logged(self, lines: Sequence[LoggedLine], *, allow_partial_pairs: bool = False) -> OfflineScore:
        """Multiple-choice: the logged letter (lmms-eval's own random draw included); open: re-parsed from
        `filtered_resps` with 0.7.3's candidate list."""
        return score_logged_lines(lines)

    def samples_from_rows(self, rows: Iterable[Mapping[str, Any]], *, images: bool = True) -> list[Sample]:
        """Rows of the HF dataset (images as bytes or None), in storage order → samples.

        `images=False`: rows without the image columns (scoring only); each sample counts the images its
        prompt refers to (`Sample.omitted_images`), as many as it would carry.
        """
        samples = []
        for doc_id, row in enumerate(rows):
            missing = [c for c in _COLUMNS if c not in row]
            if missing:
                raise DataError(
                    f"MMMU row {doc_id}: missing column(s) {', '.join(missing)}",
                    hint=f"an MMMU dataset has the columns {', '.join(_COLUMNS)}, image_1..image_7",
                )
            sid = str(row["id"])
            cells = {k: v for k, v in row.items() if k.startswith("image_")} if images else None
            sample = make_sample(
                doc_id,
                sid,
                str(row["question"]),
                parse_options(row["options"], sid),
                str(row["answer"]),
                str(row["question_type"]),
                images=cells,
                subfield=str(row.get("subfield") or ""),
            )
            if not images:
                sample = replace(sample, omitted_images=len(sample.fields["image_keys"]))
            samples.append(sample)
        return samples

    def prompt(self, sample: Sample) -> Prompt:
        """Interleaved text and images exactly as lmms-eval's chat path builds them; 128 tokens."""
        ctx = str(sample.fields["ctx"])
        return Prompt(parts=interleave(ctx, len(sample.images)), max_tokens=MAX_TOKENS, text=ctx)

    def score(
        self,
        samples: Sequence[Sample],
        answers: Sequence[Answer],
        *,
        seed: int = 0,
        fallback: str = FALLBACK_SEQUENTIAL,
    ) -> list[SampleScore]:
        """Parse and judge each answer; MC fallbacks draw from one `random.Random(seed)` in the order given.

        `fallback="per_sample"` draws each from `random.Random(f"{seed}:{sample_id}")` instead.
        """
        if len(samples) != len(answers):
            raise ValueError("score() needs one answer per sample")
        if fallback not in FALLBACKS:
            raise ValueError(f"unknown fallback {fallback!r}; choose one of {', '.join(FALLBACKS)}")
        rng = random.Random(seed)
        out = []
        for sample, answer in zip(samples, answers, strict=True):
            if answer.text is None:  # a failure: wrong, and it consumes no random draw
                out.append(
                    SampleScore(
                        sample_id=sample.id, correct=False, parsed=None, details=metric_dict(sample, [])
                    )
                )
                continue
            own = rng if fallback == FALLBACK_SEQUENTIAL else random.Random(f"{seed}:{sample.id}")
            out.append(score_text(sample, postprocess_response(answer.text, self.reasoning_tags), own))
        return out

    def aggregate(
        self,
        samples: Sequence[Sample],
        scores: Sequence[SampleScore],
        *,
        allow_partial_pairs: bool = False,  # accepted for a uniform call; MMMU has no pairs
    ) -> TaskResult:
        """Accuracy per subject and domain (lmms-eval's printed breakdown); `mmmu_acc` = overall, 5 decimals.

        Scores with `scored=False` (failures excluded by the caller's policy) are left out.
        """
        by_id = {s.sample_id: s for s in scores}
        by_subject: dict[str, list[bool]] = {}
        kept: list[SampleScore] = []
        for sample in samples:
            sc = by_id.get(sample.id)
            if sc is None:
                raise DataError(f"MMMU sample {sample.id} has no score", hint="score every sample first")
            if not sc.scored:
                continue
            kept.append(sc)
            by_subject.setdefault(sample.group, []).append(sc.correct)
        printable = printable_results(by_subject)
        counts = {
            "correct": sum(1 for s in kept if s.correct),
            "random_fallback": sum(1 for s in kept if s.random_fallback),
            "failed": sum(1 for s in kept if s.parsed is None),
            "excluded": len(samples) - len(kept),
        }
        return TaskResult(
            task=self.name,
            metrics={METRIC: round(printable["Overall"]["acc"], 5)},
            breakdown={"printable_results": printable},
            n=len(kept),
            counts=counts,
        )


def score_text(sample: Sample, text: str, rng: random.Random) -> SampleScore:
    """Score one post-processed response text (MC letter via `rng` fallback, or open candidates)."""
    gold = sample.fields.get("gold", sample.target)
    if sample.fields["question_type"] == MULTIPLE_CHOICE:
        index2ans, letters = multi_choice_info(list(sample.fields["options"]))
        if not letters:
            raise DataError(f"MMMU {sample.id} is multiple-choice but has no options", hint="check the data")
        choice = parse_multi_choice(text, letters, index2ans, rng)
        return SampleScore(
            sample_id=sample.id,
            correct=eval_multi_choice(gold, choice.letter),
            parsed=choice.letter,
            random_fallback=choice.random_fallback,
            details=metric_dict(sample, [choice.letter]),
        )
    candidates = parse_open_response(text)
    return SampleScore(
        sample_id=sample.id,
        correct=eval_open(gold, candidates),
        parsed=candidates,
        details=metric_dict(sample, [candidates]),
    )


def mmmu_options(value: str) -> list[Any] | None:
    """Parse an MMMU `options` cell (a Python list literal) as lmms-eval does; None if it is not a list."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, list) else None


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


def _row_problems(index: int, row: Mapping[str, Any], *, images: bool) -> list[RowProblem]:
    """What is wrong with one row, most basic first (a later check may assume an earlier one passed)."""
    if _ID.match(row["id"]) is None:
        hint = "the subject is read from the id, e.g. validation_Art_Theory_12"
        return [RowProblem(index, "id", "does not look like <split>_<Subject>_<n>", hint)]
    options = mmmu_options(row["options"])
    if options is None:
        problem = f"is not a Python list literal: {_short(row['options'])}"
        return [RowProblem(index, "options", problem, "expected e.g. \"['cat', 'dog']\" or \"[]\"")]
    if row["question_type"] not in _QUESTION_TYPES:
        problem = f"is {row['question_type']!r}, expected one of {', '.join(_QUESTION_TYPES)}"
        return [RowProblem(index, "question_type", problem)]
    # an image the prompt refers to must be present (lmms-eval would crash converting None);
    # its prompt shows the options of multiple-choice questions only
    text = row["question"]
    if row["question_type"] == MULTIPLE_CHOICE:
        text += " " + " ".join(str(o) for o in options)
    for number in sorted({int(n) for n in _IMAGE_REF.findall(text)}):
        column = f"image_{number}"
        if not 1 <= number <= 7 or (images and row.get(column) is None):
            problem = f"the question refers to <image {number}> but the cell is empty"
            return [RowProblem(index, column, problem)]
    return []


def is_multiple_choice(question_type: Any) -> bool:
    """The official key calls open questions "short-answer", lmms-eval calls them "open": anything that is
    not multiple-choice is scored as open, as both tools do."""
    return bool(question_type == MULTIPLE_CHOICE)


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


def _logged_mc(sample: Sample, text: str, logged: Any) -> tuple[SampleScore, bool]:
    """The logged letter's score (lmms-eval's own random draw included), and whether it differs from the
    letter found in the text; the options recovered from the prompt tell whether it was a fallback."""
    letter = str(logged)
    options = list(sample.fields["options"])
    fallback = differs = False
    if options:
        letters = [chr(65 + i) for i in range(len(options))]
        found = find_choice(text, letters, dict(zip(letters, options, strict=True)))
        fallback = found is None
        differs = found is not None and found != letter
    score = SampleScore(
        sample_id=sample.id,
        correct=eval_multi_choice(sample.target, letter),
        parsed=letter,
        random_fallback=fallback,
        details=metric_dict(sample, [letter]),
    )
    return score, differs


def _logged_open(sample: Sample, text: str, logged: Any) -> tuple[SampleScore, bool]:
    cands = parse_open_response(text)  # 0.7.3: the candidate list (≤0.7.2 logged one string)
    correct = eval_open(sample.target, cands)
    logged_cands = [candidate_from_json(v) for v in logged] if isinstance(logged, list) else list(str(logged))
    score = SampleScore(
        sample_id=sample.id, correct=correct, parsed=cands, details=metric_dict(sample, [cands])
    )
    return score, correct != eval_open(sample.target, logged_cands)


def score_logged_lines(lines: Sequence[LoggedLine]) -> OfflineScore:
    """MMMU lines of lmms-eval samples files (doc_id order) scored as `MMMUTask.score_logged` says."""
    samples: list[Sample] = []
    scores: list[SampleScore] = []
    differs = 0
    unknown_fallback = 0
    for path, line in lines:
        where = f"{path}: doc_id {line['doc_id']}"
        entry = line[METRIC]
        if not isinstance(entry, dict) or "id" not in entry or "parsed_pred" not in entry:
            raise DataError(f"{where}: the mmmu_acc entry lacks id/parsed_pred", hint="check the file")
        gold = str(entry.get("answer", line.get("target", "")))
        qtype = str(entry.get("question_type", ""))
        logged = entry["parsed_pred"][0] if entry["parsed_pred"] else ""
        text = filtered_text(line, where).strip()
        mc = is_multiple_choice(qtype)
        options = recover_options(str(line.get("input", ""))) if mc else []
        sample = make_sample(int(line["doc_id"]), str(entry["id"]), "", options or [], gold, qtype)
        unknown_fallback += int(mc and not options)
        score, differ = (_logged_mc if mc else _logged_open)(sample, text, logged)
        differs += int(differ)
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
    result = with_count(result, "differs_from_log", differs)
    return OfflineScore("lmms-samples", "mmmu_val", samples, scores, result, notes)


register_task("mmmu_val", MMMUTask)
