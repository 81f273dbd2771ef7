"""Reading the simulator's datasets: the few columns it needs from a local parquet file or folder.

The simulator reads its data itself (pyarrow), apart from the evaluation path's loader, and only what
recognition and the answer model use. A folder holds one split as `vlmparity synth` and `huggingface-cli
download` lay it out: the files under a folder named after the split or whose file name has the split as a
whole word (`data/test-00000-of-00001.parquet`), or every file when none is named after any split. Image
cells come back as encoded bytes (or None) from HF's struct{bytes, path}, a bare path (relative to the
parquet file) or plain bytes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlmparity.errors import DataError

SPLIT_NAMES = ("train", "test", "validation", "dev", "val", "valid")
_WORD = re.compile(r"[-_.\s]+")

Row = dict[str, Any]


def split_files(path: Path, split: str) -> list[Path]:
    """The parquet files of `split` under `path` (the file itself when `path` is one), in path order."""
    if path.is_file():
        return [path]
    files = sorted(
        (p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p, path)),
        key=lambda p: p.relative_to(path).parts,
    )
    matching = [p for p in files if split in _words(p, path)]
    if matching:
        return matching
    found = sorted({w for p in files for w in _words(p, path) if w in SPLIT_NAMES})
    if files and not found:
        return files
    raise DataError(
        f"no parquet files for split {split!r} under {path}",
        hint=f"splits found: {', '.join(found)}" if found else "expected *.parquet files",
    )


def read_rows(path: Path, split: str, columns: Sequence[str], image_columns: Iterable[str]) -> list[Row]:
    """Rows of `split` with those of `columns` the files have, images as bytes; one bytes object per
    distinct image (MME stores every picture twice)."""
    shared: dict[bytes, bytes] = {}
    images = frozenset(image_columns)
    rows: list[Row] = []
    for file in split_files(path, split):
        for index, row in enumerate(_file_rows(file, columns)):
            for column in images.intersection(row):
                data = _image_cell(row[column], file, index, column)
                row[column] = None if data is None else shared.setdefault(data, data)
            rows.append(row)
    return rows


def _file_rows(file: Path, columns: Sequence[str]) -> Iterator[Row]:
    try:
        pf = pq.ParquetFile(file)
        present = [c for c in columns if c in pf.schema_arrow.names]
        for batch in pf.iter_batches(batch_size=64, columns=present):
            yield from batch.to_pylist()
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(
            f"cannot read parquet file {file}: {exc}", hint="re-download it; the file may be truncated"
        ) from None
    finally:
        pa.default_memory_pool().release_unused()  # pyarrow's pool otherwise keeps the freed buffers


def _image_cell(value: Any, file: Path, index: int, column: str) -> bytes | None:
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if data:
            return bytes(data)
        value = value.get("path")
    if isinstance(value, bytes | bytearray):
        return bytes(value) or None
    if not isinstance(value, str) or not value:
        return None
    candidate = Path(value).expanduser()
    candidate = candidate if candidate.is_absolute() else file.parent / candidate
    try:
        return candidate.read_bytes()
    except OSError:
        raise DataError(
            f"{file} row {index}, column {column!r}: image file {value!r} not found (looked for {candidate})",
            hint="the cell holds only a path; keep the images beside the parquet file or embed them",
        ) from None


def _words(path: Path, root: Path) -> set[str]:
    rel = path.relative_to(root)
    words = set(rel.parts[:-1])  # folder names count whole (data/validation/x.parquet)
    words.update(w for w in _WORD.split(rel.name.removesuffix(".parquet")) if w)
    return words


def _hidden(path: Path, root: Path) -> bool:
    # huggingface-cli download keeps its bookkeeping under DIR/.cache
    return any(part.startswith(".") for part in path.relative_to(root).parts)
