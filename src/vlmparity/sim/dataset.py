"""The questions the simulator knows, and recognising which one a request asks.

Datasets are local parquet folders/files (what `vlmparity synth` writes): MME (split "test": question_id,
image, question, answer, category) or MMMU (split "validation": id, question, options, image_1..7, answer,
question_type, ...), detected by their columns. A request is recognised by the decoded pixels of its
images (exact hash, else nearest thumbnail) and by the question's text fragments appearing in the
request text, so any image encoding and any prompt template around the question is recognised.
"""

from __future__ import annotations

import ast
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from vlmparity.data.sources import load_rows
from vlmparity.errors import DataError
from vlmparity.sim.images import ImageError, ImagePrint, fingerprint_bytes

MME_COLUMNS = frozenset({"question_id", "image", "question", "answer", "category"})
MMMU_COLUMNS = frozenset({"id", "question", "options", "image_1", "answer", "question_type"})
MMMU_IMAGE_COLUMNS = tuple(f"image_{i}" for i in range(1, 8))
MME_SUFFIX = " Please answer yes or no."  # lmms-eval removes it before adding its own post-prompt
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Mean absolute difference (0-255 scale) between 16x16 thumbnails under which two images are "the same
# picture": JPEG at usual qualities stays well below it, different pictures are far above it.
THUMB_TOLERANCE = 6.0
MIN_TEXT_MATCH = 0.6  # share of a question's fragment characters that must appear in the request

_IMAGE_TOKEN = re.compile(r"<image(?:[ _]?\d+)?>")


def normalise_text(text: str) -> str:
    """Request text as compared: `<image N>`/`<image>` tokens removed, whitespace collapsed."""
    return " ".join(_IMAGE_TOKEN.sub(" ", text).split())


def text_fragments(text: str) -> list[str]:
    """The pieces of a question between image tokens, whitespace-normalised, empty ones dropped."""
    return [" ".join(p.split()) for p in _IMAGE_TOKEN.split(text) if p.strip()]


@dataclass(frozen=True)
class SimSample:
    """One known question: what the answer model needs."""

    task: str  # "mme" | "mmmu_val"
    id: str  # MME: "<question_id>::<question>", MMMU: id
    group: str  # MME category / MMMU subject (what per-group accuracy is keyed by)
    kind: str  # "yesno" | "mc" | "open"
    gold: str  # "Yes"/"No", a letter, or the open answer string
    choices: tuple[str, ...]  # letters of a multiple-choice question
    fragments: tuple[str, ...]  # text that must appear in the request
    images: tuple[str, ...]  # pixel hashes of the sample's images
    question: str = ""  # the dataset's question text (for verbose answers)


@dataclass
class DatasetIndex:
    """Known samples plus the lookups recognition needs."""

    samples: list[SimSample] = field(default_factory=list)
    by_pixels: dict[str, list[int]] = field(default_factory=dict)  # pixel hash -> sample positions
    thumb_keys: list[str] = field(default_factory=list)  # pixel hash of each thumbnail row
    thumbs: np.ndarray = field(default_factory=lambda: np.zeros((0, 256), dtype=np.float32))

    def add(self, sample: SimSample, prints: Sequence[ImagePrint], thumbs: list[np.ndarray]) -> None:
        pos = len(self.samples)
        self.samples.append(sample)
        for p in prints:
            if p.pixels not in self.by_pixels:
                self.by_pixels[p.pixels] = []
                self.thumb_keys.append(p.pixels)
                thumbs.append(p.thumb)
            if pos not in self.by_pixels[p.pixels]:
                self.by_pixels[p.pixels].append(pos)

    def near(self, thumb: np.ndarray, limit: int = 16) -> list[tuple[str, float]]:
        """Known images whose thumbnail is within THUMB_TOLERANCE of `thumb`, nearest first."""
        if not len(self.thumb_keys):
            return []
        dist = np.abs(self.thumbs - thumb).mean(axis=1)
        order = np.argsort(dist)[:limit]
        return [(self.thumb_keys[i], float(dist[i])) for i in order if dist[i] <= THUMB_TOLERANCE]


@dataclass(frozen=True)
class Match:
    """A recognised sample and how it was recognised."""

    sample: SimSample
    text_share: float
    images_matched: int
    distance: float  # summed thumbnail distance of fuzzy image matches (0 = all exact)


def detect_kind(columns: Iterable[str]) -> str | None:
    """'mme' or 'mmmu_val' from a table's column names, None if neither."""
    cols = set(columns)
    if cols >= MME_COLUMNS:
        return "mme"
    if cols >= MMMU_COLUMNS:
        return "mmmu_val"
    return None


def _schema_columns(path: Path) -> list[str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*.parquet") if p.is_file())
    if not files:
        raise DataError(f"no parquet files in {path}", hint="pass a folder written by `vlmparity synth`")
    try:
        return list(pq.read_schema(files[0]).names)
    except Exception as err:  # pyarrow raises several types for unreadable files
        raise DataError(f"cannot read parquet file {files[0]}: {err}") from None


def _mmmu_subject(sample_id: str, row: Mapping[str, Any]) -> str:
    split = sample_id.split("_")[0]
    found = re.match(rf"^{re.escape(split)}_(.+?)_\d+$", sample_id)
    if found:
        return found.group(1)
    return str(row.get("subfield") or "unknown")


def _parse_options(raw: Any) -> list[str]:
    if isinstance(raw, list):
        return [str(x) for x in raw]
    try:
        value = ast.literal_eval(str(raw or "[]"))
    except (ValueError, SyntaxError):
        return []
    return [str(x) for x in value] if isinstance(value, list | tuple) else []


def _fingerprint_cells(cells: Iterable[Any], where: str) -> list[ImagePrint]:
    prints = []
    for cell in cells:
        if cell is None:
            continue
        data = cell.get("bytes") if isinstance(cell, dict) else cell
        if not isinstance(data, bytes | bytearray):
            continue
        try:
            prints.append(fingerprint_bytes(bytes(data)))
        except ImageError as err:
            raise DataError(f"{where}: image cannot be decoded: {err.detail}") from None
    return prints


def mme_sample(row: Mapping[str, Any]) -> tuple[SimSample, list[ImagePrint]]:
    """An MME row as a SimSample plus its image fingerprints."""
    qid = str(row["question_id"])
    question = str(row["question"]).strip()
    gold = str(row["answer"]).strip().rstrip(".").capitalize()
    prints = _fingerprint_cells([row.get("image")], f"MME {qid}")
    sample = SimSample(
        task="mme",
        id=f"{qid}::{question}",  # as vlmparity.tasks.mme.sample_id
        group=str(row["category"]),
        kind="yesno",
        gold=gold,
        choices=(),
        fragments=tuple(text_fragments(question.replace(MME_SUFFIX, ""))),
        images=tuple(p.pixels for p in prints),
        question=question,
    )
    return sample, prints


def mmmu_sample(row: Mapping[str, Any]) -> tuple[SimSample, list[ImagePrint]]:
    """An MMMU row as a SimSample plus its image fingerprints."""
    sid = str(row["id"])
    options = _parse_options(row.get("options"))
    is_mc = str(row.get("question_type", "")).strip() == "multiple-choice" and bool(options)
    fragments = text_fragments(str(row["question"]))
    if is_mc:
        for opt in options:
            fragments.extend(text_fragments(opt))
    prints = _fingerprint_cells((row.get(col) for col in MMMU_IMAGE_COLUMNS), f"MMMU {sid}")
    sample = SimSample(
        task="mmmu_val",
        id=sid,
        group=_mmmu_subject(sid, row),
        kind="mc" if is_mc else "open",
        gold=str(row["answer"]).strip(),
        choices=tuple(LETTERS[: len(options)]) if is_mc else (),
        fragments=tuple(fragments),
        images=tuple(dict.fromkeys(p.pixels for p in prints)),
        question=str(row["question"]),
    )
    return sample, prints


def samples_from_source(path: str | Path) -> list[tuple[SimSample, list[ImagePrint]]]:
    """Load one dataset folder/file and turn its rows into samples (kind detected from the columns)."""
    source = Path(path)
    if not source.exists():
        raise DataError(
            f"sim dataset {str(source)!r} does not exist", hint="write one with `vlmparity synth`"
        )
    kind = detect_kind(_schema_columns(source))
    if kind is None:
        raise DataError(
            f"sim dataset {str(source)!r} is neither MME nor MMMU",
            hint=f"MME needs columns {sorted(MME_COLUMNS)}, MMMU needs {sorted(MMMU_COLUMNS)}",
        )
    rows = load_rows(source, split="test" if kind == "mme" else "validation")
    build = mme_sample if kind == "mme" else mmmu_sample
    return [build(row) for row in rows]


_CACHE: dict[tuple[Any, ...], DatasetIndex] = {}
_CACHE_LOCK = threading.Lock()


def _source_stamp(path: Path) -> tuple[Any, ...]:
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    return tuple((str(f.resolve()), f.stat().st_mtime_ns, f.stat().st_size) for f in files)


def build_index(paths: Sequence[str | Path]) -> DatasetIndex:
    """Index every dataset in `paths`; cached in-process by the files' names, sizes and mtimes."""
    stamp = tuple(_source_stamp(Path(p)) if Path(p).exists() else (str(p),) for p in paths)
    with _CACHE_LOCK:
        cached = _CACHE.get(stamp)
        if cached is not None:
            return cached
        index = DatasetIndex()
        thumbs: list[np.ndarray] = []
        for path in paths:
            for sample, prints in samples_from_source(path):
                index.add(sample, prints, thumbs)
        if thumbs:
            index.thumbs = np.stack(thumbs)
        _CACHE[stamp] = index
        return index


def text_share(sample: SimSample, text: str) -> tuple[float, int]:
    """Share (and number) of the sample's fragment characters found in the normalised request text."""
    total = sum(len(f) for f in sample.fragments)
    if total == 0:
        return 1.0, 0
    found = sum(len(f) for f in sample.fragments if f in text)
    return found / total, found


def recognise(index: DatasetIndex, prints: Sequence[ImagePrint], text: str) -> Match | None:
    """The known sample this request asks (images by pixels, then text), or None."""
    norm = normalise_text(text)
    candidates: dict[int, list[float]] = {}  # sample position -> [images matched, summed distance]
    for p in prints:
        exact = index.by_pixels.get(p.pixels)
        hits = [(p.pixels, 0.0)] if exact else index.near(p.thumb)
        seen: set[int] = set()
        for key, dist in hits:
            for pos in index.by_pixels[key]:
                if pos in seen:  # one request image counts once per sample (nearest hit first)
                    continue
                seen.add(pos)
                entry = candidates.setdefault(pos, [0, 0.0])
                entry[0] += 1
                entry[1] += dist
    if not prints:
        return _recognise_text_only(index, norm)
    best: tuple[tuple[float, ...], Match] | None = None
    for pos, (n_images, dist) in candidates.items():
        sample = index.samples[pos]
        share, chars = text_share(sample, norm)
        if share < MIN_TEXT_MATCH:
            continue
        rank = (share, n_images, chars, -dist, -pos)
        if best is None or rank > best[0]:
            best = (rank, Match(sample, share, int(n_images), dist))
    return best[1] if best else None


def _recognise_text_only(index: DatasetIndex, norm: str) -> Match | None:
    """A request without images: recognised only if exactly one sample's whole text appears in it."""
    found: list[tuple[int, int]] = []
    for pos, sample in enumerate(index.samples):
        if sample.fragments and all(f in norm for f in sample.fragments):
            found.append((sum(len(f) for f in sample.fragments), pos))
    if not found:
        return None
    found.sort(reverse=True)
    if len(found) > 1 and found[0][0] == found[1][0]:
        return None  # the same question is asked of several images: ambiguous without pixels
    return Match(index.samples[found[0][1]], 1.0, 0, 0.0)
