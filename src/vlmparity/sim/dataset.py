"""The questions the simulator knows, and recognising which one a request asks.

Datasets are local parquet folders/files (what `vlmparity synth` writes): MME (split "test": question_id,
image, question, answer, category) or MMMU (split "validation": id, question, options, image_1..7, answer,
question_type, ...), detected by their columns and read by `sim/parquet.py` (not the evaluation path's
loader). A request is recognised by the decoded pixels of its images (exact hash, else nearest thumbnail)
and by the question's text fragments appearing in the request text, so any image encoding and any prompt
template around the question is recognised. Each server builds and keeps its own `DatasetIndex`.
"""

from __future__ import annotations

import ast
import hashlib
import os
import pickle
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from vlmparity.errors import DataError
from vlmparity.sim.images import ImageError, ImagePrint, fingerprint_bytes
from vlmparity.sim.parquet import read_rows

MME_COLUMNS = frozenset({"question_id", "image", "question", "answer", "category"})
MMMU_COLUMNS = frozenset({"id", "question", "options", "image_1", "answer", "question_type"})
MMMU_IMAGE_COLUMNS = tuple(f"image_{i}" for i in range(1, 8))
# What the simulator reads of each kind (`subfield` is optional: the subject comes from the id first)
MME_READ = ("question_id", "image", "question", "answer", "category")
MMMU_READ = ("id", "question", "options", *MMMU_IMAGE_COLUMNS, "answer", "question_type", "subfield")
MME_SUFFIX = " Please answer yes or no."  # lmms-eval removes it before adding its own post-prompt
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

# Mean absolute difference (0-255 scale) between 16x16 thumbnails under which two images are "the same
# picture": JPEG at usual qualities stays well below it, different pictures are far above it.
THUMB_TOLERANCE = 6.0
MIN_TEXT_MATCH = 0.6  # share of a question's fragment characters that must appear in the request
MIN_TEXT_CHARS = 12  # ... or this many characters when all of the request's images are the sample's

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


def _image_bytes(cell: Any) -> bytes | None:
    data = cell.get("bytes") if isinstance(cell, dict) else cell
    return bytes(data) if isinstance(data, bytes | bytearray) and data else None


def mme_sample(row: Mapping[str, Any], prints: Sequence[ImagePrint]) -> SimSample:
    """An MME row (with its image's fingerprint) as a SimSample."""
    qid = str(row["question_id"])
    question = str(row["question"]).strip()
    return SimSample(
        task="mme",
        id=f"{qid}::{question}",  # as vlmparity.tasks.mme.sample_id
        group=str(row["category"]),
        kind="yesno",
        gold=str(row["answer"]).strip().rstrip(".").capitalize(),
        choices=(),
        fragments=tuple(text_fragments(question.replace(MME_SUFFIX, ""))),
        images=tuple(p.pixels for p in prints),
        question=question,
    )


def mmmu_sample(row: Mapping[str, Any], prints: Sequence[ImagePrint]) -> SimSample:
    """An MMMU row (with its images' fingerprints) as a SimSample."""
    sid = str(row["id"])
    options = _parse_options(row.get("options"))
    is_mc = str(row.get("question_type", "")).strip() == "multiple-choice" and bool(options)
    fragments = text_fragments(str(row["question"]))
    if is_mc:
        for opt in options:
            fragments.extend(text_fragments(opt))
    return SimSample(
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


Indexed = list[tuple[SimSample, list[ImagePrint]]]


def _row_label(kind: str, row: Mapping[str, Any]) -> str:
    return f"MME {row.get('question_id')}" if kind == "mme" else f"MMMU {row.get('id')}"


def _fingerprint_rows(kind: str, rows: Sequence[Mapping[str, Any]]) -> list[list[ImagePrint]]:
    """Fingerprints of every row's images; each distinct image is decoded once, on a few threads
    (Pillow's decoders and hashlib release the GIL)."""
    columns = ("image",) if kind == "mme" else MMMU_IMAGE_COLUMNS
    per_row: list[list[bytes]] = []
    distinct: dict[bytes, tuple[bytes, str]] = {}
    for row in rows:
        keys = []
        for column in columns:
            data = _image_bytes(row.get(column))
            if data is None:
                continue
            key = hashlib.blake2b(data, digest_size=16).digest()
            distinct.setdefault(key, (data, _row_label(kind, row)))
            keys.append(key)
        per_row.append(keys)

    def one(item: tuple[bytes, tuple[bytes, str]]) -> tuple[bytes, ImagePrint]:
        key, (data, where) = item
        try:
            return key, fingerprint_bytes(data)
        except ImageError as err:
            raise DataError(f"{where}: image cannot be decoded: {err.detail}") from None

    workers = max(1, min(4, os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sim-index") as pool:
        prints = dict(pool.map(one, distinct.items()))
    return [[prints[k] for k in keys] for keys in per_row]


def samples_from_source(path: str | Path) -> Indexed:
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
    if kind == "mme":
        rows = read_rows(source, "test", MME_READ, ("image",))
    else:
        rows = read_rows(source, "validation", MMMU_READ, MMMU_IMAGE_COLUMNS)
    build = mme_sample if kind == "mme" else mmmu_sample
    prints = _fingerprint_rows(kind, rows)
    return [(build(row, p), p) for row, p in zip(rows, prints, strict=True)]


# ---- the on-disk cache, so that a later sim start skips decoding --------------------------------------

INDEX_FORMAT = 1  # bump when SimSample, fingerprints or the recognition text rules change
CACHE_MIN_SECONDS = 2.0  # only sets slow to index are kept on disk
CACHE_KEEP = 16  # most recently used entries kept on disk


def cache_dir() -> Path | None:
    """Where source indexes are kept: $VLMPARITY_SIM_CACHE ("off" disables), else ~/.cache/vlmparity/sim-index."""
    value = os.environ.get("VLMPARITY_SIM_CACHE")
    if value is not None:
        return None if value.strip().lower() in ("", "0", "off", "none") else Path(value)
    return Path.home() / ".cache" / "vlmparity" / "sim-index"


def _content_stamp(path: Path) -> tuple[Any, ...]:
    """Names, sizes and sha256 of a source's parquet files: the same data anywhere hits the same entry."""
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    stamp = []
    for f in files:
        digest = hashlib.sha256()
        with f.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        stamp.append((f.name, f.stat().st_size, digest.hexdigest()))
    return tuple(stamp)


def _prune(folder: Path, keep: int = CACHE_KEEP) -> None:
    entries = sorted(folder.glob("*.pkl"), key=lambda f: f.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        old.unlink(missing_ok=True)


def _indexed_source(path: Path) -> Indexed:
    folder = cache_dir()
    if folder is None or not path.exists():
        return samples_from_source(path)
    stamp = repr((INDEX_FORMAT, _content_stamp(path)))
    file = folder / f"{hashlib.sha256(stamp.encode()).hexdigest()[:32]}.pkl"
    if file.is_file():
        try:
            with file.open("rb") as fh:
                stored = pickle.load(fh)  # our own cache file, keyed by the dataset files' content
            if stored[0] == stamp:
                os.utime(file)  # recently used entries survive pruning
                return list(stored[1])
        except Exception:  # a stale or damaged cache entry is rebuilt
            pass
    started = time.monotonic()
    indexed = samples_from_source(path)
    if time.monotonic() - started > CACHE_MIN_SECONDS:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = file.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
            with tmp.open("wb") as fh:
                pickle.dump((stamp, indexed), fh, protocol=pickle.HIGHEST_PROTOCOL)
            os.replace(tmp, file)
            _prune(folder)
        except OSError:  # a read-only home is no reason to fail
            pass
    return indexed


def build_index(paths: Sequence[str | Path]) -> DatasetIndex:
    """Index every dataset in `paths` (the caller, a server, keeps the index); a set slow to index is
    kept on disk by file contents (see `cache_dir`), so the next start skips decoding its images."""
    index = DatasetIndex()
    thumbs: list[np.ndarray] = []
    for path in paths:
        for sample, prints in _indexed_source(Path(path)):
            index.add(sample, prints, thumbs)
    if thumbs:
        index.thumbs = np.stack(thumbs)
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
        all_images = n_images == len(prints) > 0
        # lmms-eval drops the text between repeated placeholders (research §2.4): when every request
        # image is one of the sample's, a clear part of the text is evidence enough.
        if share < MIN_TEXT_MATCH and not (all_images and chars >= MIN_TEXT_CHARS):
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
