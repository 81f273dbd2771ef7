"""Scoring an official MME results folder without a server (`vlmparity score --mme-results`)."""

from __future__ import annotations

from pathlib import Path

from vlmparity.errors import DataError
from vlmparity.tasks.base import Answer, OfflineScore, Sample
from vlmparity.tasks.mme import COGNITION, PERCEPTION, MMETask, make_sample


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
            sample = make_sample(len(samples), f"{category}/{image}", question, gt, category, None)
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
