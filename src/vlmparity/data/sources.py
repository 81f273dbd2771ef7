"""Dataset sources: local parquet files/folders (what `vlmparity synth` and `huggingface-cli download` leave)
and Hugging Face hub ids through `datasets`.

Rows come back as plain dicts keyed by the dataset's own column names, in storage order; image cells are
the encoded file bytes (or None), whatever the storage: HF's struct{bytes, path}, a path-only cell
(resolved relative to the parquet file), a decoded PIL image. A local path always wins over a hub id.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from vlmparity.errors import ConfigError, DataError

Engine = Literal["pyarrow", "datasets"]

# per task: lmms-eval 0.7.3's dataset id, and the id up to 0.7.2 (contents not verified identical)
HUB_IDS: dict[str, tuple[str, str]] = {
    "mme": ("lmms-lab-encoder/MME", "lmms-lab/MME"),
    "mmmu_val": ("lmms-lab-encoder/MMMU", "lmms-lab/MMMU"),
}
_KNOWN_SPLITS = ("train", "test", "validation", "dev", "val", "valid")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
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
        if not _hidden(p, folder):
            found.update(set(_KNOWN_SPLITS) & _tokens(p, folder))
    return sorted(found)


def looks_like_hub_id(source: str) -> bool:
    """True for 'owner/name' strings (not '/abs', './rel', '~/x' or deeper paths)."""
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "~"))


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


def _read_parquet(file: Path) -> Iterator[dict[str, Any]]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
        image_cols = _image_columns_arrow(pf.schema_arrow)
        index = 0
        # batches keep peak memory near one copy of the images, not two
        for batch in pf.iter_batches(batch_size=64):
            for row in batch.to_pylist():
                for col in image_cols:
                    row[col] = normalise_image(
                        row[col], base=file.parent, where=f"{file} row {index}", column=col
                    )
                index += 1
                yield row
    except DataError:
        raise
    except (OSError, ValueError) as exc:  # pyarrow.ArrowInvalid is a ValueError
        raise DataError(
            f"cannot read parquet file {file}: {exc}", hint="re-download it; the file may be truncated"
        ) from None


def _rows_from_datasets(ds: Any, base: Path | None, label: str) -> list[dict[str, Any]]:
    import datasets

    image_cols = [n for n, f in ds.features.items() if isinstance(f, datasets.Image)]
    for name in image_cols:
        # the stored bytes, not a decoded PIL image: the encoder decodes exactly as lmms-eval does
        ds = ds.cast_column(name, datasets.Image(decode=False))
    struct_cols = [
        n for n, f in ds.features.items() if isinstance(f, dict) and "bytes" in f and n not in image_cols
    ]
    rows: list[dict[str, Any]] = []
    for batch in ds.iter(batch_size=64):
        names = list(batch)
        for values in zip(*(batch[n] for n in names), strict=True):
            row = dict(zip(names, values, strict=True))
            for col in (*image_cols, *struct_cols):
                row[col] = normalise_image(
                    row[col], base=base or Path.cwd(), where=f"{label} row {len(rows)}", column=col
                )
            rows.append(row)
    return rows


def _load_local(path: Path, split: str, engine: Engine, cache_dir: str | Path | None) -> LoadedSplit:
    if path.is_file():
        files = [path]
    else:
        files = parquet_files(path, split)
        if not files:
            have = _available_splits(path)
            raise DataError(
                f"no parquet files for split {split!r} under {path}",
                hint=f"splits found: {', '.join(have)}" if have else "expected *.parquet files",
            )
    if engine == "datasets":
        return _load_local_datasets(path, files, split, cache_dir)
    rows: list[dict[str, Any]] = []
    spans: list[FileSpan] = []
    for file in files:
        start = len(rows)
        rows.extend(_read_parquet(file))
        spans.append(FileSpan(file, start, len(rows)))
    return LoadedSplit(str(path), "local", split, rows, tuple(spans), engine="pyarrow", label=str(path))


def _load_local_datasets(
    path: Path, files: list[Path], split: str, cache_dir: str | Path | None
) -> LoadedSplit:
    import datasets

    try:
        ds = datasets.load_dataset(
            "parquet",
            data_files={split: [str(f) for f in files]},
            split=split,
            cache_dir=None if cache_dir is None else str(cache_dir),
        )
    except Exception as exc:  # datasets raises many types (ArrowInvalid, DatasetGenerationError, ...)
        raise DataError(f"datasets could not read {path}: {type(exc).__name__}: {exc}") from None
    base = files[0].parent if len(files) == 1 else path
    rows = _rows_from_datasets(ds, base, str(path))
    # the datasets engine concatenates files; recover the spans from each file's row count
    import pyarrow.parquet as pq

    spans, start = [], 0
    for f in files:
        n = pq.ParquetFile(f).metadata.num_rows
        spans.append(FileSpan(f, start, start + n))
        start += n
    return LoadedSplit(str(path), "local", split, rows, tuple(spans), engine="datasets", label=str(path))


def _hub_commit(ds: Any) -> str | None:
    # datasets caches a hub dataset under .../<namespace>___<name>/<config>/<version>/<commit sha>/
    for cache_file in getattr(ds, "cache_files", None) or []:
        parent = Path(cache_file.get("filename", "")).parent.name
        if re.fullmatch(r"[0-9a-f]{40}", parent):
            return parent
    return None


def _load_hub(repo_id: str, split: str, cache_dir: str | Path | None) -> LoadedSplit:
    import datasets

    download = f"huggingface-cli download --repo-type dataset {repo_id} --local-dir DIR, then pass DIR"
    for current, older in HUB_IDS.values():
        if repo_id in (current, older):
            download += f"; lmms-eval 0.7.3 uses {current}, 0.7.2 and older {older}"
    try:
        ds = datasets.load_dataset(
            repo_id, split=split, cache_dir=None if cache_dir is None else str(cache_dir)
        )
    except (ConnectionError, FileNotFoundError) as exc:
        reason = "not cached and the Hub is unreachable" if isinstance(exc, ConnectionError) else "not found"
        raise DataError(
            f"dataset {repo_id!r} is {reason} (no local folder of that name either)", hint=download
        ) from None
    except ValueError as exc:  # e.g. Unknown split "x". Should be one of ['test'].
        raise DataError(f"dataset {repo_id!r}: {exc}") from None
    except Exception as exc:  # gated/auth/network errors come in many classes
        raise DataError(
            f"dataset {repo_id!r} could not be loaded: {type(exc).__name__}: {exc}", hint=download
        ) from None
    label = f"{repo_id} (split {split})"
    rows = _rows_from_datasets(ds, None, label)
    return LoadedSplit(repo_id, "hub", split, rows, (), _hub_commit(ds), engine="datasets", label=label)


def load_split(
    source: str | Path,
    *,
    split: str,
    engine: Engine = "pyarrow",
    task: str | None = None,
    verify_images: bool = False,
    cache_dir: str | Path | None = None,
) -> LoadedSplit:
    """Load every row of `split` from a local parquet file/folder or a Hugging Face hub id.

    `engine` reads local files with pyarrow (fast, no cache copy) or `datasets.load_dataset("parquet")`;
    both give identical rows. With `task`, the rows are checked against the task's schema (one clear
    `DataError` on the first problem); `verify_images` then also fully decodes every distinct image.
    """
    if engine not in ("pyarrow", "datasets"):
        raise ConfigError(f"unknown dataset engine {engine!r}", hint="use pyarrow or datasets")
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        loaded = _load_local(path, split, engine, cache_dir)
    elif isinstance(source, str) and looks_like_hub_id(text):
        loaded = _load_hub(text, split, cache_dir)
    else:
        raise DataError(
            f"dataset source {text!r} does not exist",
            hint="pass a folder of parquet files, a parquet file or a Hugging Face dataset id",
        )
    if task is not None:
        from vlmparity.data.schema import check_rows

        check_rows(task, loaded.rows, loaded.locate, verify_images=verify_images)
    return loaded


def load_rows(
    source: str | Path,
    *,
    split: str,
    engine: Engine = "pyarrow",
    task: str | None = None,
    verify_images: bool = False,
    cache_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Load every row of `split` (see `load_split`), in storage order."""
    return load_split(
        source, split=split, engine=engine, task=task, verify_images=verify_images, cache_dir=cache_dir
    ).rows
