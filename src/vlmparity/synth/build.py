"""Synthetic MME and MMMU-val sets: parquet folders laid out like `huggingface-cli download` leaves them.

The real sets cannot be redistributed (and this project has no network for them), so tests, the demo and the
simulator use these: same columns and types, same category/subject structure and sizes, pictures drawn with
Pillow whose content decides the answer. The same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from vlmparity.errors import ConfigError, DataError
from vlmparity.synth import mme, mmmu

# Bump when generated content changes, so caches keyed on it (tests/conftest.py) are rebuilt.
SYNTH_VERSION = "1"
MME_FILE = "data/test-00000-of-00001.parquet"
MMMU_FILE = "data/validation-00000-of-00001.parquet"
ROW_GROUP_SIZE = 100  # what the hub's image datasets use; keeps streaming reads small
PARALLEL_MIN_ITEMS = 200  # below this, starting worker processes costs more than it saves

MME_COLUMNS = ("question_id", "image", "question", "answer", "category")
MMMU_IMAGE_COLUMNS = tuple(f"image_{i}" for i in range(1, mmmu.MAX_IMAGES + 1))
MMMU_COLUMNS = ("id", "question", "options", "explanation", *MMMU_IMAGE_COLUMNS, "img_type", "answer",
                "topic_difficulty", "question_type", "subfield")  # fmt: skip

_IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

T = TypeVar("T")
R = TypeVar("R")


def mme_rows(n: int | None = None, seed: int = 0, *, workers: int | None = None) -> list[dict[str, Any]]:
    """Rows of a synthetic MME test split in storage order (image as encoded bytes), without writing files."""
    _check(n, seed)
    pairs = _map(_mme_pair, [(seed, c, i) for c, i in mme.pair_specs(n)], workers)
    _check_distinct(pair.image for pair in pairs)
    return [row for pair in pairs for row in mme.rows_for_pair(pair)]


def mmmu_rows(n: int | None = None, seed: int = 0, *, workers: int | None = None) -> list[dict[str, Any]]:
    """Rows of a synthetic MMMU validation split in storage order (images as bytes or None), without files."""
    _check(n, seed)
    rows = _map(_mmmu_row, [(seed, s, k) for s, k in mmmu.question_specs(n)], workers)
    _check_distinct(r[c] for r in rows for c in MMMU_IMAGE_COLUMNS if r[c] is not None)
    return rows


def write_mme(
    out_dir: str | Path, n: int | None = None, seed: int = 0, *, workers: int | None = None
) -> Path:
    """Write a synthetic `lmms-lab/MME` test split (n questions, default all 2374) under out_dir; return it."""
    rows = mme_rows(n, seed, workers=workers)
    for row in rows:
        row["image"] = {"bytes": row["image"], "path": str(row["question_id"]).split("/")[-1]}
    out = Path(out_dir)
    _write_parquet(out / MME_FILE, rows, MME_COLUMNS, image_columns=("image",))
    _write_card(out, "lmms-lab/MME", "test", MME_FILE, n=len(rows), seed=seed, columns=MME_COLUMNS,
                image_columns=("image",))  # fmt: skip
    return out


def write_mmmu(
    out_dir: str | Path, n: int | None = None, seed: int = 0, *, workers: int | None = None
) -> Path:
    """Write a synthetic `lmms-lab/MMMU` validation split (n questions, default all 900) under out_dir."""
    rows = mmmu_rows(n, seed, workers=workers)
    for row in rows:
        for i, col in enumerate(MMMU_IMAGE_COLUMNS, start=1):
            if row[col] is not None:
                ext = "jpg" if row[col][:2] == b"\xff\xd8" else "png"
                row[col] = {"bytes": row[col], "path": f"{row['id']}_{i}.{ext}"}
    out = Path(out_dir)
    _write_parquet(out / MMMU_FILE, rows, MMMU_COLUMNS, image_columns=MMMU_IMAGE_COLUMNS)
    _write_card(out, "lmms-lab/MMMU", "validation", MMMU_FILE, n=len(rows), seed=seed, columns=MMMU_COLUMNS,
                image_columns=MMMU_IMAGE_COLUMNS)  # fmt: skip
    return out


def hf_features(columns: Sequence[str], image_columns: Sequence[str]) -> dict[str, Any]:
    """The `datasets` features dict: Image for image columns, string Value for the rest."""
    return {
        c: ({"_type": "Image"} if c in image_columns else {"dtype": "string", "_type": "Value"})
        for c in columns
    }


# ---------------------------------------------------------------- internals


def _check(n: int | None, seed: int) -> None:
    if n is not None and n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}", hint="omit --n for the full-size set")
    if seed < 0:
        raise ConfigError(f"--seed must be >= 0, got {seed}")


def _mme_pair(spec: tuple[int, str, int]) -> mme.MmePair:
    return mme.make_pair(*spec)


def _mmmu_row(spec: tuple[int, str, int]) -> dict[str, Any]:
    return mmmu.make_question(*spec)


def _map(fn: Callable[[T], R], items: Sequence[T], workers: int | None) -> list[R]:
    """fn over items in order; over worker processes when there is enough work (results keep item order)."""
    if workers is None:
        workers = min(2, os.cpu_count() or 1)
    if workers <= 1 or len(items) < PARALLEL_MIN_ITEMS:
        return [fn(item) for item in items]
    # spawn: safe whatever threads the caller runs; every item is seeded on its own, so the split
    # between processes cannot change the output.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        return list(pool.map(fn, items, chunksize=max(1, len(items) // (workers * 8))))


def _check_distinct(images: Iterable[bytes]) -> None:
    seen: set[bytes] = set()
    for data in images:
        if data in seen:  # content is drawn per seed, so this is a generator bug, not a user error
            raise RuntimeError("synthetic generator produced two identical images")
        seen.add(data)


def _write_parquet(
    path: Path, rows: list[dict[str, Any]], columns: Sequence[str], *, image_columns: Sequence[str]
) -> None:
    schema = pa.schema(
        [pa.field(c, _IMAGE_TYPE if c in image_columns else pa.string()) for c in columns],
        metadata={"huggingface": json.dumps({"info": {"features": hf_features(columns, image_columns)}})},
    )
    table = pa.Table.from_pylist(rows, schema=schema)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".parquet.tmp")
        pq.write_table(table, tmp, row_group_size=ROW_GROUP_SIZE, compression="snappy")
        tmp.replace(path)
    except OSError as err:
        raise DataError(
            f"cannot write {path}: {err.strerror or err}", hint="choose a writable --out folder"
        ) from err


def _write_card(
    out: Path,
    dataset: str,
    split: str,
    data_file: str,
    *,
    n: int,
    seed: int,
    columns: Sequence[str],
    image_columns: Sequence[str],
) -> None:
    """README.md (a dataset card `datasets` reads: split name and features) and synth.json (provenance)."""
    info = {
        "synthetic": True,
        "imitates": dataset,
        "split": split,
        "rows": n,
        "seed": seed,
        "generator": "vlmparity synth",
        "synth_version": SYNTH_VERSION,
        "files": [data_file],
    }
    features = "\n".join(
        f"  - name: {c}\n    dtype: {'image' if c in image_columns else 'string'}" for c in columns
    )
    card = f"""---
configs:
- config_name: default
  data_files:
  - split: {split}
    path: {data_file}
dataset_info:
  features:
{features}
---

# Synthetic stand-in for `{dataset}` (split `{split}`)

Generated by `vlmparity synth` (version {SYNTH_VERSION}, seed {seed}, {n} rows). Same columns and types as the
real dataset; the pictures are drawn with Pillow and their content decides the answer in the `answer` column.
Not the real benchmark: scores on it say nothing about a model's quality, only whether two serving engines
agree. Load it with `datasets.load_dataset("<this folder>")` or read `{data_file}` directly.
"""
    try:
        (out / "README.md").write_text(card, encoding="utf-8")
        (out / "synth.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise DataError(
            f"cannot write into {out}: {err.strerror or err}", hint="choose a writable --out folder"
        ) from err
