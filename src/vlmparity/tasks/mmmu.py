"""MMMU validation as lmms-eval 0.7.3 runs it with an OpenAI-compatible model (research §2).

Images interleaved with the text by `<image N>` placeholders (with lmms-eval's quirks), answers parsed by
MMMU's parsers (a seeded random letter when no letter is found), accuracy per subject, per domain and
overall; `mmmu_acc` is the overall accuracy rounded to 5 decimals.
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
    ImageData,
    ImagePart,
    MetricSpec,
    Part,
    Prompt,
    Sample,
    SampleScore,
    TaskResult,
    TextPart,
    register_task,
)
from vlmparity.tasks.mmmu_parse import (
    construct_prompt,
    eval_multi_choice,
    eval_open,
    extract_subset_name,
    multi_choice_info,
    parse_multi_choice,
    parse_open_response,
    printable_results,
    submission_value,
)
from vlmparity.tasks.reasoning import DEFAULT_REASONING_TAGS, TagPair, postprocess_response

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
    compare_metrics = (METRIC,)  # what `compare` judges
    max_images = 7  # image_1 .. image_7: the most one MMMU-val question shows (and one request sends)
    lmms_version: str | float = 0.0
    artifact_keys: tuple[str, ...] = ("mmmu_acc_pass_at_k", "submission")

    def __init__(self, reasoning_tags: Sequence[TagPair] | None = DEFAULT_REASONING_TAGS) -> None:
        self.reasoning_tags = reasoning_tags

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        """`mmmu_acc`: questions resampled within subjects; margin 1 percentage point."""
        return (MetricSpec(METRIC, ACCURACY, margin=ACCURACY_MARGIN),)

    def stop_part(self, sample: Sample) -> str:
        return self.name

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


register_task("mmmu_val", MMMUTask)
