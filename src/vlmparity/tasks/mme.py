"""MME as lmms-eval 0.7.3 runs it with an OpenAI-compatible model (research §1).

Image first, then the question with " Please answer yes or no." replaced by lmms-eval's default
post-prompt; answers parsed by the Otter-style yes/no parser; per-image acc + acc_plus summed per category
into `mme_perception_score` (max 2000) and `mme_cognition_score` (max 800). Also the dataset's schema and
row rules, the per-category breakdown, and the scoring of lmms-eval samples lines.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from vlmparity.errors import DataError
from vlmparity.tasks.base import (
    ACCURACY,
    CLUSTER_SCORE,
    FALLBACK_SEQUENTIAL,
    Answer,
    BreakdownTable,
    GroupScores,
    ImageData,
    ImagePart,
    LoggedLine,
    MetricSpec,
    OfflineScore,
    Prompt,
    Sample,
    SampleScore,
    TaskResult,
    TextPart,
    register_task,
)
from vlmparity.tasks.offline_files import filtered_text, with_count
from vlmparity.tasks.reasoning import DEFAULT_REASONING_TAGS, TagPair, postprocess_response
from vlmparity.tasks.schema import ColumnSpec, RowProblem, TaskSchema

PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")

PERCEPTION_METRIC = "mme_perception_score"
COGNITION_METRIC = "mme_cognition_score"
ACCURACY_METRIC = "mme_acc"  # question accuracy: not an lmms-eval metric, the verdict's sensitive test
MAX_SCORE = {PERCEPTION_METRIC: 2000.0, COGNITION_METRIC: 800.0}  # 10 and 4 categories of at most 200
# 2.5 % of the maximum: 50 perception, 20 cognition points, i.e. the mean over categories of
# (acc + acc_plus) / 2 moving by 2.5 points. Not 1 % (20 / 8): one flipped answer in a 20-image
# category (OCR and three cognition categories) moves the score by 2.5 to 7.5 points, so a margin of
# one or two flips cannot be certified even by identical answers on the full benchmark. The 1-point
# accuracy margin on the pooled MME question accuracy remains the sensitive test; the score margins
# catch regressions concentrated in a few categories, which the pooled accuracy dilutes.
SCORE_MARGIN_FRACTION = 0.025
ACCURACY_MARGIN = 0.01  # 1 percentage point, as a fraction

PRE_PROMPT = ""
POST_PROMPT = "\nAnswer the question using a single word or phrase."
YES_NO_SUFFIX = " Please answer yes or no."
MAX_TOKENS = 16

_COLUMNS = ("question_id", "image", "question", "answer", "category")

SCHEMA = TaskSchema(
    task="mme",
    dataset="lmms-lab/MME (split test)",
    # question_id is the image path, shared by the Yes and the No question of one image
    id_columns=("question_id", "question"),
    columns=(
        ColumnSpec("question_id"),
        ColumnSpec("image", "image"),
        ColumnSpec("question"),
        ColumnSpec("answer"),
        ColumnSpec("category"),
    ),
)


def metric_for(category: str) -> str:
    """The metric a category feeds: perception for the 10 perception categories, cognition otherwise."""
    return PERCEPTION_METRIC if category in PERCEPTION else COGNITION_METRIC


def _is_perception(sample: Sample) -> bool:
    return sample.group in PERCEPTION


def _is_cognition(sample: Sample) -> bool:
    return sample.group in COGNITION


def doc_to_text(question: str, pre_prompt: str = PRE_PROMPT, post_prompt: str = POST_PROMPT) -> str:
    """lmms-eval's `mme_doc_to_text`: strip, drop the exact yes/no suffix when a prompt is added, wrap."""
    q = question.strip()
    if pre_prompt:
        q = pre_prompt + q.replace(YES_NO_SUFFIX, "")
    if post_prompt:
        q = q.replace(YES_NO_SUFFIX, "") + post_prompt
    return q


def parse_pred_ans(pred: str) -> str:
    """The yes/no label lmms-eval reads from an answer: "yes", "no" or "other" (research §1.3)."""
    s = pred.lower().strip().replace(".", "")
    if s in ("yes", "no"):
        return s
    if len(s) == 1:
        return {"y": "yes", "n": "no"}.get(s, "other")
    head = s[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return "other"


def normalize_gt(answer: str) -> str:
    """The ground-truth label: lower-cased, stripped, dots removed."""
    return answer.lower().strip().replace(".", "")


def sample_id(question_id: str, question: str) -> str:
    """MME's stable sample id: the image path and the stripped question (two questions share an image)."""
    return f"{question_id}::{question.strip()}"


def make_sample(
    doc_id: int,
    question_id: str,
    question: str,
    answer: str,
    category: str,
    image: bytes | ImageData | None,
) -> Sample:
    """One MME sample; `image` may be None only for scoring (offline, or data loaded without images)."""
    gt = normalize_gt(answer)
    sid = sample_id(question_id, question)
    if gt not in ("yes", "no"):
        raise DataError(
            f"MME row {doc_id} ({sid}): answer {answer!r} is not Yes/No",
            hint="the MME answer column must hold Yes or No",
        )
    return Sample(
        task="mme",
        id=sid,
        doc_id=doc_id,
        target=answer,
        group=category,
        cluster=question_id,
        images=()
        if image is None
        else (image if isinstance(image, ImageData) else ImageData.from_bytes(image),),
        fields={"question_id": question_id, "question": question, "category": category, "answer": answer},
    )


def image_scores(flags: Sequence[bool], complete: bool) -> tuple[float, float]:
    """(acc, acc_plus) of one image in percent: acc over its questions, acc_plus 100 iff a complete pair is right."""
    acc = sum(1.0 if f else 0.0 for f in flags) / len(flags) * 100.0
    acc_plus = 100.0 if complete and len(flags) == 2 and all(flags) else 0.0
    return acc, acc_plus


def clt_stderr(values: Sequence[float]) -> float | None:
    """std(values, ddof=1)/sqrt(n): lmms-eval's `_stderr_clt` over per-question 0/1 scores (None if n < 2)."""
    n = len(values)
    if n < 2:
        return None
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return math.sqrt(var) / math.sqrt(n)


class MMETask:
    """lmms-eval's `mme` task (default kwargs, chat message layout)."""

    name = "mme"
    default_source = "lmms-lab-encoder/MME"
    legacy_sources: tuple[str, ...] = ("lmms-lab/MME",)
    split = "test"
    metric_names: tuple[str, ...] = (COGNITION_METRIC, PERCEPTION_METRIC)
    max_tokens = MAX_TOKENS
    max_images = 1  # images one request sends at most (`launch vllm` sizes --limit-mm-per-prompt by it)
    lmms_version: str | float = "Yaml"
    artifact_keys: tuple[str, ...] = ()
    schema = SCHEMA

    def __init__(self, reasoning_tags: Sequence[TagPair] | None = DEFAULT_REASONING_TAGS) -> None:
        self.reasoning_tags = reasoning_tags

    def metric_specs(self) -> tuple[MetricSpec, ...]:
        """`mme_acc` (question accuracy, images as clusters within categories; margin 1 point), then the two
        scores (images resampled within categories; margin 2.5 % of the maximum: 50 and 20 points)."""
        return (
            MetricSpec(ACCURACY_METRIC, ACCURACY, margin=ACCURACY_MARGIN, lmms_eval=False),
            MetricSpec(
                PERCEPTION_METRIC,
                CLUSTER_SCORE,
                margin=MAX_SCORE[PERCEPTION_METRIC] * SCORE_MARGIN_FRACTION,
                max_value=MAX_SCORE[PERCEPTION_METRIC],
                members=_is_perception,
            ),
            MetricSpec(
                COGNITION_METRIC,
                CLUSTER_SCORE,
                margin=MAX_SCORE[COGNITION_METRIC] * SCORE_MARGIN_FRACTION,
                max_value=MAX_SCORE[COGNITION_METRIC],
                members=_is_cognition,
            ),
        )

    def stop_part(self, sample: Sample) -> str:
        """Perception and cognition stop apart: "mme/<the score the sample's category feeds>"."""
        return f"{self.name}/{metric_for(sample.group)}"

    def check_rows(self, rows: Sequence[Mapping[str, Any]], *, images: bool = True) -> list[RowProblem]:
        """Every answer Yes or No (as lmms-eval normalises it), then exactly two questions per image."""
        return check_mme_rows(rows)

    def breakdown_tables(self, result: TaskResult) -> list[BreakdownTable]:
        """Per category: images, acc, acc_plus and score (acc + acc_plus), then the two sums."""
        return [breakdown_table(result)]

    def group_scores(self, result: TaskResult, samples: Sequence[Sample]) -> GroupScores | None:
        """Each category's score (acc + acc_plus, of 200) and its questions; perception categories first."""
        cats: Mapping[str, Mapping[str, Any]] = result.breakdown.get("categories", {}) or {}
        values = {c: (float(x["score"]), int(x["questions"])) for c, x in cats.items()}
        return GroupScores("category", "points", 200.0, values, rank=(*PERCEPTION, *COGNITION))

    def score_logged(self, lines: Sequence[LoggedLine], *, allow_partial_pairs: bool = False) -> OfflineScore:
        """Re-parse each logged `filtered_resps` (already stripped of reasoning tags) as a live run would."""
        return score_logged_lines(lines, allow_partial_pairs=allow_partial_pairs)

    def samples_from_rows(self, rows: Iterable[Mapping[str, Any]], *, images: bool = True) -> list[Sample]:
        """Rows of the HF dataset (images as bytes), in storage order → samples.

        `images=False`: rows without the image column (scoring only); each sample counts its one image.
        """
        samples = []
        needed = _COLUMNS if images else tuple(c for c in _COLUMNS if c != "image")
        # id(bytes) -> its ImageData: the two rows of an image share one bytes object when the loader
        # interned them (data.sources does), and then one sha256 and one ImageData serve both
        shared: dict[int, ImageData] = {}
        for doc_id, row in enumerate(rows):
            missing = [c for c in needed if c not in row]
            if missing:
                raise DataError(
                    f"MME row {doc_id}: missing column(s) {', '.join(missing)}",
                    hint=f"an MME dataset has the columns {', '.join(_COLUMNS)}",
                )
            fields = (
                str(row["question_id"]),
                str(row["question"]),
                str(row["answer"]),
                str(row["category"]),
            )
            if not images:
                samples.append(replace(make_sample(doc_id, *fields, None), omitted_images=1))
                continue
            image = row["image"]
            if not isinstance(image, bytes | bytearray) or not image:
                raise DataError(
                    f"MME row {doc_id} ({row['question_id']}): column image holds no image",
                    hint="every MME question needs its image",
                )
            data = shared.get(id(image))
            if data is None or data.data is not image:  # not that very object (a bytearray is copied)
                data = ImageData.from_bytes(bytes(image))
                shared[id(image)] = data
            samples.append(make_sample(doc_id, *fields, data))
        return samples

    def prompt(self, sample: Sample) -> Prompt:
        """Image first, then the question with the default post-prompt; 16 tokens."""
        text = doc_to_text(str(sample.fields["question"]))
        return Prompt(parts=(ImagePart(0), TextPart(text)), max_tokens=MAX_TOKENS, text=text)

    def score(
        self,
        samples: Sequence[Sample],
        answers: Sequence[Answer],
        *,
        seed: int = 0,
        fallback: str = FALLBACK_SEQUENTIAL,
    ) -> list[SampleScore]:
        """Parse each answer to yes/no/other and compare with the ground truth; failures are wrong."""
        if len(samples) != len(answers):
            raise ValueError("score() needs one answer per sample")
        out = []
        for sample, answer in zip(samples, answers, strict=True):
            qid = str(sample.fields["question_id"])
            category = str(sample.fields["category"])
            if answer.text is None:
                label = None
                correct = False
            else:
                label = parse_pred_ans(postprocess_response(answer.text, self.reasoning_tags))
                correct = label == normalize_gt(sample.target)
            details = {
                metric_for(category): {
                    "question_id": qid,
                    "category": category,
                    "score": 1.0 if correct else 0.0,
                }
            }
            out.append(SampleScore(sample_id=sample.id, correct=correct, parsed=label, details=details))
        return out

    def aggregate(
        self,
        samples: Sequence[Sample],
        scores: Sequence[SampleScore],
        *,
        allow_partial_pairs: bool = False,
    ) -> TaskResult:
        """Per-image acc/acc_plus, per-category mean of acc + acc_plus, summed into the two metrics.

        Like lmms-eval, an image with only one of its two questions among `samples` is an error unless
        `allow_partial_pairs`. Scores with `scored=False` (failures excluded by the caller's policy) are
        left out: such an image keeps acc over its remaining question and gets acc_plus 0, and an image
        with no scored question drops out of its category's mean. A category with none drops out.
        """
        by_id = {s.sample_id: s for s in scores}
        # category → question_id → [correct of each scored question]; insertion order = document order,
        # which fixes the order of the floating-point sums exactly as upstream's dicts do.
        present: dict[str, dict[str, int]] = {}
        flags: dict[str, dict[str, list[bool]]] = {}
        per_metric: dict[str, list[float]] = {PERCEPTION_METRIC: [], COGNITION_METRIC: []}
        excluded = 0
        for sample in samples:
            category = str(sample.fields["category"])
            qid = str(sample.fields["question_id"])
            present.setdefault(category, {}).setdefault(qid, 0)
            present[category][qid] += 1
            sc = by_id.get(sample.id)
            if sc is None:
                raise DataError(f"MME sample {sample.id} has no score", hint="score every sample first")
            if not sc.scored:
                excluded += 1
                continue
            flags.setdefault(category, {}).setdefault(qid, []).append(sc.correct)
            per_metric[metric_for(category)].append(1.0 if sc.correct else 0.0)

        partial = 0
        for category, counts_by_image in present.items():
            for qid, count in counts_by_image.items():
                if count != 2:
                    if not allow_partial_pairs or count > 2:
                        raise DataError(
                            f"MME image {qid} ({category}) has {count} question(s) here, not its pair of 2",
                            hint="MME scores images pairwise: keep both questions of each image "
                            "(sample or limit by whole pairs)",
                        )
                    partial += 1

        categories: dict[str, dict[str, Any]] = {}
        for category, flags_by_image in flags.items():
            accs: list[float] = []
            pluses: list[float] = []
            total = 0.0
            for qid, fl in flags_by_image.items():
                acc, acc_plus = image_scores(fl, complete=present[category][qid] == 2)
                accs.append(acc)
                pluses.append(acc_plus)
                total += acc_plus + acc
            n_img = len(flags_by_image)
            categories[category] = {
                "metric": metric_for(category),
                "images": n_img,
                "questions": sum(len(fl) for fl in flags_by_image.values()),
                "acc": sum(accs) / n_img,
                "acc_plus": sum(pluses) / n_img,
                "score": total / n_img,
            }

        # Like lmms-eval, a metric exists only if some sample feeds it (a --limit may cut one out).
        fed = {metric_for(c) for c in present}
        metrics = {
            m: sum(c["score"] for c in categories.values() if c["metric"] == m)
            for m in (COGNITION_METRIC, PERCEPTION_METRIC)
            if m in fed
        }
        breakdown = {
            "categories": categories,
            "stderr_clt": {m: clt_stderr(v) for m, v in per_metric.items()},
            "n_by_metric": {m: len(v) for m, v in per_metric.items()},
        }
        n_scored = sum(len(v) for v in per_metric.values())
        counts = {
            "images": sum(len(v) for v in flags.values()),
            "partial_pairs": partial,
            "excluded": excluded,
            "failed": sum(1 for s in scores if s.parsed is None and s.scored),
        }
        return TaskResult(task=self.name, metrics=metrics, breakdown=breakdown, n=n_scored, counts=counts)


def check_mme_rows(rows: Sequence[Mapping[str, Any]]) -> list[RowProblem]:
    """The rows whose answer is not Yes/No, then those whose image does not have exactly 2 questions."""
    problems: list[RowProblem] = []
    for index, row in enumerate(rows):
        # lmms-eval asserts this normalised ground truth is yes or no
        if normalize_gt(row["answer"]) not in ("yes", "no"):
            problems.append(RowProblem(index, "answer", f"is {row['answer']!r}, expected Yes or No"))
    # lmms-eval's aggregation asserts exactly two questions (Yes and No) per image
    counts = Counter(row["question_id"] for row in rows)
    for index, row in enumerate(rows):
        n = counts[row["question_id"]]
        if n != 2:
            problems.append(
                RowProblem(
                    index,
                    "question_id",
                    f"image has {n} question(s), MME needs exactly 2 per image",
                    hint="MME scores images by their Yes/No question pair",
                )
            )
    return problems


def breakdown_table(result: TaskResult) -> BreakdownTable:
    """Per MME category: images, acc, acc_plus and score (acc + acc_plus), then the two sums."""
    categories: Mapping[str, Mapping[str, Any]] = result.breakdown.get("categories", {})
    order = [c for c in (*PERCEPTION, *COGNITION) if c in categories]
    order += [c for c in categories if c not in order]
    rows: list[tuple[str, ...]] = []
    for cat in order:
        c = categories[cat]
        kind = "perception" if c["metric"] == PERCEPTION_METRIC else "cognition"
        rows.append(
            (cat, kind, str(c["images"]), f"{c['acc']:.2f}", f"{c['acc_plus']:.2f}", f"{c['score']:.2f}")
        )
    for metric, label in ((PERCEPTION_METRIC, "Perception"), (COGNITION_METRIC, "Cognition")):
        if metric in result.metrics:
            rows.append((f"**{label}**", "", "", "", "", f"{result.metrics[metric]:.2f}"))
    return BreakdownTable(("Category", "Type", "Images", "acc", "acc_plus", "Score"), tuple(rows))


def score_logged_lines(lines: Sequence[LoggedLine], *, allow_partial_pairs: bool = False) -> OfflineScore:
    """MME lines of lmms-eval samples files (doc_id order), re-parsed from `filtered_resps`."""
    samples: list[Sample] = []
    answers: list[Answer] = []
    logged: list[float] = []
    for path, line in lines:
        where = f"{path}: doc_id {line['doc_id']}"
        entry = next(line[k] for k in (PERCEPTION_METRIC, COGNITION_METRIC) if k in line)
        if not isinstance(entry, dict) or "question_id" not in entry or "category" not in entry:
            raise DataError(f"{where}: the MME entry lacks question_id/category", hint="check the file")
        ctx = str(line.get("input", ""))
        question = ctx[: -len(POST_PROMPT)] if ctx.endswith(POST_PROMPT) else ctx
        sample = make_sample(
            int(line["doc_id"]),
            str(entry["question_id"]),
            question,
            str(line.get("target", "")),
            str(entry["category"]),
            None,
        )
        samples.append(sample)
        answers.append(Answer(sample_id=sample.id, text=filtered_text(line, where)))
        logged.append(float(entry.get("score", -1)))
    task = MMETask(reasoning_tags=None)  # filtered_resps are already stripped of reasoning tags
    scores = task.score(samples, answers)
    result = task.aggregate(samples, scores, allow_partial_pairs=allow_partial_pairs)
    differs = sum(1 for s, v in zip(scores, logged, strict=True) if (1.0 if s.correct else 0.0) != v)
    notes = [f"{differs} item(s) score differently from the logged score"] if differs else []
    result = with_count(result, "differs_from_log", differs)
    return OfflineScore("lmms-samples", "mme", samples, scores, result, notes)


register_task("mme", MMETask)
