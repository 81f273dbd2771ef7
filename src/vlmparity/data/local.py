"""Local parquet files and folders: which files hold a split, their rows (pyarrow or `datasets`), image cells.

Rows come back as plain dicts keyed by the dataset's own column names, in storage order; image cells are the
encoded file bytes (or None), whatever the storage: HF's struct{bytes, path}, a path-only cell (resolved
relative to the parquet file), a decoded PIL image. Reading goes one row group at a time and hands pyarrow's
freed buffers back to the system, so peak memory stays near one copy of the images. `vlmparity.data.sources`
is the public face (local paths and hub ids); `rows_from_datasets` serves its hub datasets too.
"""

from __future__ import annotations

import io
import re
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from vlmparity.errors import DataError

Engine = Literal["pyarrow", "datasets"]  # how local files are read: pyarrow, or datasets.load_dataset
_KNOWN_SPLITS = ("train", "test", "validation", "dev", "val", "valid")
_TOKEN = re.compile(r"[-_.\s]+")


@dataclass(frozen=True)
class FileSpan:
    """Rows [start, stop) of a loaded split came from `path`."""

    path: Path
    start: int
    stop: int


@dataclass
class LoadedSplit:
    """One split of one source: the rows plus where each row came from (for error messages)."""

    source: str  # as given by the user
    kind: Literal["local", "hub"]
    split: str
    rows: list[dict[str, Any]]
    files: tuple[FileSpan, ...] = ()  # local sources only
    hub_revision: str | None = None  # the hub commit of a cached hub dataset, when known
    engine: str = "pyarrow"
    label: str = field(default="")

    def locate(self, index: int) -> str:
        """Where row `index` came from, e.g. '/d/data/test-00000-of-00004.parquet row 17'."""
        for span in self.files:
            if span.start <= index < span.stop:
                return f"{span.path} row {index - span.start}"
        return f"{self.label or self.source} row {index}"

    @cached_property
    def revision(self) -> str | None:
        """Hub commit for hub datasets; for local files a sha256 over their content (not mtimes)."""
        if self.kind == "hub":
            return self.hub_revision
        if not self.files:
            return None
        from vlmparity.data.fingerprint import files_sha256

        return "sha256:" + files_sha256([s.path for s in self.files])


def _tokens(path: Path, root: Path) -> set[str]:
    rel = path.relative_to(root) if path.is_relative_to(root) else Path(path.name)
    tokens: set[str] = set(rel.parts[:-1])  # folder names count whole (e.g. data/validation/x.parquet)
    tokens.update(t for t in _TOKEN.split(rel.name.removesuffix(".parquet")) if t)
    return tokens


def parquet_files(folder: Path, split: str) -> list[Path]:
    """The parquet files of one split under `folder` (nested folders too), in path order.

    A file belongs to `split` when a folder on its path is named `split` or its file name has `split`
    as a whole word (`validation-00000-of-00001.parquet`, `test.parquet`). A folder whose files carry
    no split name at all is taken whole.
    """
    files = sorted(
        (p for p in folder.rglob("*.parquet") if p.is_file() and not _hidden(p, folder)),
        key=lambda p: p.relative_to(folder).parts,
    )
    matching = [p for p in files if split in _tokens(p, folder)]
    if matching:
        return matching
    if files and not any(set(_KNOWN_SPLITS) & _tokens(p, folder) for p in files):
        return files
    return []


def _hidden(path: Path, root: Path) -> bool:
    # huggingface-cli download keeps bookkeeping under DIR/.cache
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _available_splits(folder: Path) -> list[str]:
    found: set[str] = set()
    for p in folder.rglob("*.parquet"):
        if p.is_file() and not _hidden(p, folder):
            found.update(set(_KNOWN_SPLITS) & _tokens(p, folder))
    return sorted(found)


def _path_image(path: str, base: Path, where: str, column: str) -> bytes:
    candidate = Path(path).expanduser()
    if not candidate.is_absolute():
        candidate = base / candidate
    try:
        return candidate.read_bytes()
    except OSError:
        raise DataError(
            f"{where}, column {column!r}: image file {path!r} not found (looked for {candidate})",
            hint="the cell holds only a path; keep the images beside the parquet file or embed them",
        ) from None


def normalise_image(value: Any, *, base: Path, where: str, column: str) -> bytes | None:
    """An image cell as encoded bytes: HF struct{bytes, path}, path string, bytes or PIL image."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bytearray | memoryview):
        return bytes(value)
    if isinstance(value, Mapping):
        data = value.get("bytes")
        if data is not None:
            return bytes(data)
        path = value.get("path")
        return None if path is None else _path_image(path, base, where, column)
    if isinstance(value, str):
        return _path_image(value, base, where, column)
    if hasattr(value, "save") and hasattr(value, "mode"):  # a decoded PIL image (datasets' default)
        return _pil_bytes(value)
    raise DataError(f"{where}, column {column!r}: unsupported image cell of type {type(value).__name__}")


def _pil_bytes(image: Any) -> bytes:
    # The original file bytes are gone once decoded: re-encode losslessly (never JPEG), so the pixels
    # (already EXIF-transposed by datasets) are kept exactly. TIFF for modes PNG cannot hold (CMYK).
    buf = io.BytesIO()
    try:
        image.save(buf, format="PNG")
    except (OSError, KeyError):
        buf = io.BytesIO()
        image.save(buf, format="TIFF")
    return buf.getvalue()


def _image_columns_arrow(schema: Any) -> list[str]:
    import pyarrow as pa

    names = []
    for f in schema:
        if pa.types.is_struct(f.type) and f.type.get_field_index("bytes") >= 0:
            names.append(f.name)
    return names


def _release_arrow_memory() -> None:
    """Hand pyarrow's freed buffers back to the OS: its pool otherwise keeps ~200 MB after a full MME."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def read_parquet(
    file: Path,
    *,
    images: bool = True,
    shared: dict[bytes, bytes] | None = None,
    only: Collection[int] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index in the file, row) for every row of `file`, or for the rows in `only`.

    `images=False` leaves the image columns out (never read from disk). `shared` interns image bytes
    by content: MME stores each image twice (its Yes and its No question), and one copy is enough.
    """
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
        image_cols = _image_columns_arrow(pf.schema_arrow)
        columns = None if images else [n for n in pf.schema_arrow.names if n not in image_cols]
        if not images:
            image_cols = []
        start = 0
        for group in range(pf.metadata.num_row_groups):
            n = pf.metadata.row_group(group).num_rows
            wanted = None if only is None else sorted(i - start for i in only if start <= i < start + n)
            start += n
            if wanted == []:
                continue
            # one row group at a time, 64 rows at a time: peak memory near one copy of the images
            table = pf.read_row_group(group, columns=columns)
            if wanted is not None:
                table = table.take(wanted)
            offsets = wanted if wanted is not None else range(table.num_rows)
            at = 0
            for batch in table.to_batches(max_chunksize=64):
                for row in batch.to_pylist():
                    index = start - n + offsets[at]
                    at += 1
                    for col in image_cols:
                        data = normalise_image(
                            row[col], base=file.parent, where=f"{file} row {index}", column=col
                        )
                        row[col] = data if shared is None or data is None else shared.setdefault(data, data)
                    yield index, row
            del table
    except DataError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(
            f"cannot read parquet file {file}: {exc}", hint="re-download it; the file may be truncated"
        ) from None
    finally:
        _release_arrow_memory()


def rows_from_datasets(
    ds: Any,
    base: Path | None,
    label: str,
    *,
    images: bool = True,
    only: Collection[int] | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """(row index, row) of a `datasets.Dataset` (or of the rows in `only`), as `read_parquet` gives them."""
    import datasets

    image_cols = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    # struct{bytes, path} columns without the Image feature (files written without HF metadata)
    struct_cols = [
        n for n, f in ds.features.items() if isinstance(f, dict) and "bytes" in f and n not in image_cols
    ]
    if not images:
        ds = ds.remove_columns(image_cols + struct_cols)
        image_cols, struct_cols = [], []
    for name in image_cols:
        # the stored bytes, not a decoded PIL image: the encoder decodes exactly as lmms-eval does
        ds = ds.cast_column(name, datasets.Image(decode=False))
    indices = list(range(len(ds))) if only is None else sorted(only)
    if only is not None:
        ds = ds.select(indices)
    shared: dict[bytes, bytes] = {}
    rows: list[tuple[int, dict[str, Any]]] = []
    for batch in ds.iter(batch_size=64):
        names = list(batch)
        for values in zip(*(batch[n] for n in names), strict=True):
            index = indices[len(rows)]
            row = dict(zip(names, values, strict=True))
            for col in (*image_cols, *struct_cols):
                data = normalise_image(
                    row[col], base=base or Path.cwd(), where=f"{label} row {index}", column=col
                )
                row[col] = data if data is None else shared.setdefault(data, data)
            rows.append((index, row))
    return rows


def _kind_of(path: Path) -> str:
    """What a path that is not a regular file is, in words."""
    import stat

    try:
        mode = path.stat().st_mode
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def local_files(path: Path, split: str) -> list[Path]:
    if path.is_file():
        return [path]
    if not path.is_dir():  # a FIFO or device given as --data: reading it could block for ever
        raise DataError(
            f"dataset source {path} is {_kind_of(path)}, not a parquet file or folder",
            hint="pass a folder of parquet files or a parquet file",
        )
    files = parquet_files(path, split)
    if not files:
        # something named like a parquet file of this split that is not a file: say what it is
        odd = [
            p
            for p in sorted(path.rglob("*.parquet"))
            if not p.is_file() and not _hidden(p, path) and split in _tokens(p, path)
        ]
        if odd:
            raise DataError(
                f"{odd[0]} is {_kind_of(odd[0])}, not a parquet file",
                hint=f"the {split!r} split needs regular *.parquet files; move it away or replace it",
            )
        have = _available_splits(path)
        raise DataError(
            f"no parquet files for split {split!r} under {path}",
            hint=f"splits found: {', '.join(have)}" if have else "expected *.parquet files",
        )
    return files


def load_local(
    path: Path, split: str, engine: Engine, cache_dir: str | Path | None, *, images: bool = True
) -> LoadedSplit:
    files = local_files(path, split)
    if engine == "datasets":
        return _load_local_datasets(path, files, split, cache_dir, images=images)
    rows: list[dict[str, Any]] = []
    spans: list[FileSpan] = []
    shared: dict[bytes, bytes] = {}  # one bytes object per distinct image across the split's files
    for file in files:
        start = len(rows)
        rows.extend(row for _, row in read_parquet(file, images=images, shared=shared))
        spans.append(FileSpan(file, start, len(rows)))
    return LoadedSplit(str(path), "local", split, rows, tuple(spans), engine="pyarrow", label=str(path))


def open_local_datasets(path: Path, files: list[Path], split: str, cache_dir: str | Path | None) -> Any:
    import datasets

    try:
        return datasets.load_dataset(
            "parquet",
            data_files={split: [str(f) for f in files]},
            split=split,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except Exception as exc:  # datasets raises many types (ArrowInvalid, DatasetGenerationError, ...)
        raise DataError(f"datasets could not read {path}: {type(exc).__name__}: {exc}") from None


def _load_local_datasets(
    path: Path, files: list[Path], split: str, cache_dir: str | Path | None, *, images: bool = True
) -> LoadedSplit:
    ds = open_local_datasets(path, files, split, cache_dir)
    base = files[0].parent if len(files) == 1 else path
    rows = [row for _, row in rows_from_datasets(ds, base, str(path), images=images)]
    # the datasets engine concatenates files; recover the spans from each file's row count
    import pyarrow.parquet as pq

    spans, start = [], 0
    for f in files:
        n = pq.ParquetFile(f).metadata.num_rows
        spans.append(FileSpan(f, start, start + n))
        start += n
    return LoadedSplit(str(path), "local", split, rows, tuple(spans), engine="datasets", label=str(path))
