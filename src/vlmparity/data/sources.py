"""Dataset sources: local parquet files/folders (what `vlmparity synth` and `huggingface-cli download` leave)
and Hugging Face hub ids through `datasets`.

Rows come back as plain dicts keyed by the dataset's own column names; image cells are the encoded file
bytes (or None). Minimal first version: schema checks, hub loading and clear errors are added in data/.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from vlmparity.errors import DataError


def parquet_files(folder: Path, split: str) -> list[Path]:
    """The parquet files of one split in a folder, in name order (split name in the file name or folder)."""
    files = sorted(p for p in folder.rglob("*.parquet") if p.is_file())
    matching = [p for p in files if split in p.name or split in p.parent.name]
    return matching or files


def _image_cell(value: Any) -> Any:
    if isinstance(value, dict) and "bytes" in value:
        return value["bytes"]
    return value


def load_rows(source: str | Path, *, split: str) -> list[dict[str, Any]]:
    """Load every row of `split` from a local parquet file or folder, in storage order."""
    path = Path(source)
    if not path.exists():
        raise DataError(f"dataset source {str(source)!r} does not exist")
    files = [path] if path.is_file() else parquet_files(path, split)
    if not files:
        raise DataError(f"no parquet files for split {split!r} in {path}")
    rows: list[dict[str, Any]] = []
    for file in files:
        table = pq.read_table(file)
        for row in table.to_pylist():
            rows.append({k: _image_cell(v) for k, v in row.items()})
    return rows
