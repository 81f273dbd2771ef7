"""Dataset sources: local parquet files/folders (what `vlmparity synth` and `huggingface-cli download` leave)
and Hugging Face hub ids through `datasets`.

Rows come back as plain dicts keyed by the dataset's own column names, in storage order; image cells are
the encoded file bytes (or None), whatever the storage: HF's struct{bytes, path}, a path-only cell
(resolved relative to the parquet file), a decoded PIL image. A local path always wins over a hub id.
"""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Collection, Iterator, Mapping
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
        if p.is_file() and not _hidden(p, folder):
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


def _release_arrow_memory() -> None:
    """Hand pyarrow's freed buffers back to the OS: its pool otherwise keeps ~200 MB after a full MME."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()


def _read_parquet(
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


def _rows_from_datasets(
    ds: Any,
    base: Path | None,
    label: str,
    *,
    images: bool = True,
    only: Collection[int] | None = None,
) -> list[tuple[int, dict[str, Any]]]:
    """(row index, row) of a `datasets.Dataset` (or of the rows in `only`), as `_read_parquet` gives them."""
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


def _local_files(path: Path, split: str) -> list[Path]:
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


def _load_local(
    path: Path, split: str, engine: Engine, cache_dir: str | Path | None, *, images: bool = True
) -> LoadedSplit:
    files = _local_files(path, split)
    if engine == "datasets":
        return _load_local_datasets(path, files, split, cache_dir, images=images)
    rows: list[dict[str, Any]] = []
    spans: list[FileSpan] = []
    shared: dict[bytes, bytes] = {}  # one bytes object per distinct image across the split's files
    for file in files:
        start = len(rows)
        rows.extend(row for _, row in _read_parquet(file, images=images, shared=shared))
        spans.append(FileSpan(file, start, len(rows)))
    return LoadedSplit(str(path), "local", split, rows, tuple(spans), engine="pyarrow", label=str(path))


def _open_local_datasets(path: Path, files: list[Path], split: str, cache_dir: str | Path | None) -> Any:
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
    ds = _open_local_datasets(path, files, split, cache_dir)
    base = files[0].parent if len(files) == 1 else path
    rows = [row for _, row in _rows_from_datasets(ds, base, str(path), images=images)]
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


HUB_PROBE_TIMEOUT_S = 5.0


def _quiet_hub() -> None:
    """No retry chatter or progress bars from huggingface_hub / datasets: a failure is our one line."""
    import logging

    for name in ("huggingface_hub", "datasets", "fsspec", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    with contextlib.suppress(Exception):
        from huggingface_hub.utils import disable_progress_bars  # type: ignore[attr-defined]

        disable_progress_bars()
    with contextlib.suppress(Exception):
        from datasets.utils.logging import disable_progress_bar, set_verbosity_error

        disable_progress_bar()
        set_verbosity_error()


def hub_endpoint() -> str:
    """The Hugging Face Hub address huggingface_hub uses ($HF_ENDPOINT, else huggingface.co)."""
    import os

    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def hub_reachable(repo_id: str, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """One request to the Hub with a short timeout: does it answer at all (any HTTP status)?"""
    import os

    import httpx

    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with httpx.Client(timeout=timeout, trust_env=True, follow_redirects=False) as client:
            client.head(f"{hub_endpoint()}/api/datasets/{repo_id}")
    except (httpx.HTTPError, OSError, ValueError):
        return False
    return True


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub and datasets in offline mode (cache only) for the duration, without retries."""
    import datasets.config as ds_config
    import huggingface_hub.constants as hf_constants

    saved = (hf_constants.HF_HUB_OFFLINE, ds_config.HF_HUB_OFFLINE, ds_config.HF_DATASETS_OFFLINE)
    hf_constants.HF_HUB_OFFLINE = True
    ds_config.HF_HUB_OFFLINE = ds_config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        hf_constants.HF_HUB_OFFLINE, ds_config.HF_HUB_OFFLINE, ds_config.HF_DATASETS_OFFLINE = saved


def _open_hub(repo_id: str, split: str, cache_dir: str | Path | None, task: str | None = None) -> Any:
    _quiet_hub()
    import datasets

    task = task or next((t for t, ids in HUB_IDS.items() if repo_id in ids), "TASK")
    download = (
        f"download it where the Hub is reachable (huggingface-cli download --repo-type dataset {repo_id} "
        f"--local-dir DIR), then pass --data {task}=DIR"
    )
    for current, older in HUB_IDS.values():
        if repo_id in (current, older):
            download += f"; lmms-eval 0.7.3 uses {current}, 0.7.2 and older {older}"
    # One short probe instead of huggingface_hub's five retries per file (25-30 s of log lines): when the
    # Hub does not answer, only the local cache is tried.
    online = hub_reachable(repo_id)
    mode = contextlib.nullcontext() if online else _hub_offline()
    try:
        with mode:
            return datasets.load_dataset(
                repo_id, split=split, cache_dir=None if cache_dir is None else str(cache_dir)
            )
    except ValueError as exc:  # e.g. Unknown split "x". Should be one of ['test'].
        if online:
            raise DataError(f"dataset {repo_id!r}: {_first_line(exc)}") from None
        error: Exception = exc
    except Exception as exc:  # not found, gated, auth, network, offline cache miss: many classes
        error = exc
    if not online:
        raise DataError(
            f"dataset {repo_id!r} is not cached and the Hugging Face Hub ({hub_endpoint()}) cannot be "
            "reached (no local folder of that name either)",
            hint=download,
        ) from None
    if isinstance(error, FileNotFoundError) or type(error).__name__ in (
        "DatasetNotFoundError",
        "RepositoryNotFoundError",
    ):
        raise DataError(
            f"dataset {repo_id!r} was not found on the Hub (no local folder of that name either)",
            hint=download,
        ) from None
    raise DataError(
        f"dataset {repo_id!r} could not be loaded: {type(error).__name__}: {_first_line(error)}",
        hint=download,
    ) from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _hub_label(repo_id: str, split: str) -> str:
    return f"{repo_id} (split {split})"


def _load_hub(
    repo_id: str, split: str, cache_dir: str | Path | None, *, images: bool = True, task: str | None = None
) -> LoadedSplit:
    ds = _open_hub(repo_id, split, cache_dir, task)
    label = _hub_label(repo_id, split)
    rows = [row for _, row in _rows_from_datasets(ds, None, label, images=images)]
    return LoadedSplit(repo_id, "hub", split, rows, (), _hub_commit(ds), engine="datasets", label=label)


def looks_like_path(source: str) -> bool:
    """True when `source` is meant as a local path, whether or not it exists: it exists, starts with '/',
    '.' or '~', holds a backslash or more than one '/', ends with '/' or '.parquet', or its first folder
    exists here ('data/mme' beside a 'data' folder). Only a bare 'owner/name' may be a Hugging Face id."""
    text = source.strip()
    if not text:
        return False
    path = Path(text).expanduser()
    if path.exists() or text.startswith(("/", ".", "~")) or "\\" in text:
        return True
    if text.endswith(("/", ".parquet")) or text.count("/") > 1:
        return True
    head = text.split("/", 1)[0]
    return "/" in text and Path(head).is_dir()


def resolve_source(source: str) -> str:
    """The source as recorded: the absolute path of an existing local file or folder (so that a later
    `compare` or `report` from another folder finds it again), else the hub id unchanged."""
    path = Path(source).expanduser()
    if path.exists():
        return str(path.resolve())
    return source


def _resolve(source: str | Path) -> tuple[Path | None, str]:
    """(the local path, None for a hub id) of a source; DataError when it is neither.

    A source that looks like a path (`looks_like_path`) and does not exist fails here, before any
    contact with the Hugging Face Hub.
    """
    text = str(source)
    path = Path(text).expanduser()
    if path.exists():
        return path, text
    if isinstance(source, str) and looks_like_hub_id(text) and not looks_like_path(text):
        return None, text
    raise DataError(
        f"dataset folder {text!r} does not exist"
        if looks_like_path(text) or isinstance(source, Path)
        else f"dataset source {text!r} does not exist",
        hint="pass a folder of parquet files, a parquet file or a Hugging Face dataset id (owner/name)",
    )


def load_split(
    source: str | Path,
    *,
    split: str,
    engine: Engine = "pyarrow",
    task: str | None = None,
    verify_images: bool = False,
    cache_dir: str | Path | None = None,
    images: bool = True,
) -> LoadedSplit:
    """Load every row of `split` from a local parquet file/folder or a Hugging Face hub id.

    `engine` reads local files with pyarrow (fast, no cache copy) or `datasets.load_dataset("parquet")`;
    both give identical rows. With `task`, the rows are checked against the task's schema (one clear
    `DataError` on the first problem); `verify_images` then also fully decodes every distinct image.
    `images=False` leaves the image columns out (scoring needs none; `read_rows` fetches some later).
    """
    if engine not in ("pyarrow", "datasets"):
        raise ConfigError(f"unknown dataset engine {engine!r}", hint="use pyarrow or datasets")
    path, text = _resolve(source)
    if path is not None:
        loaded = _load_local(path, split, engine, cache_dir, images=images)
    else:
        loaded = _load_hub(text, split, cache_dir, images=images, task=task)
    if task is not None:
        from vlmparity.data.schema import check_rows

        check_rows(task, loaded.rows, loaded.locate, verify_images=verify_images, images=images)
    return loaded


def read_rows(
    source: str | Path,
    *,
    split: str,
    indices: Collection[int],
    engine: Engine = "pyarrow",
    cache_dir: str | Path | None = None,
) -> dict[int, dict[str, Any]]:
    """Rows `indices` (storage order across the split's files, as in `load_split`) with every column.

    Reads only the parquet row groups that hold them: how a report fetches the images of a few samples
    whose data was loaded without images.
    """
    if engine not in ("pyarrow", "datasets"):
        raise ConfigError(f"unknown dataset engine {engine!r}", hint="use pyarrow or datasets")
    wanted = set(indices)
    if not wanted:
        return {}
    path, text = _resolve(source)
    if path is None:
        ds = _open_hub(text, split, cache_dir)
        return dict(_rows_from_datasets(ds, None, _hub_label(text, split), only=wanted))
    files = _local_files(path, split)
    if engine == "datasets":
        ds = _open_local_datasets(path, files, split, cache_dir)
        base = files[0].parent if len(files) == 1 else path
        return dict(_rows_from_datasets(ds, base, str(path), only=wanted))
    import pyarrow.parquet as pq

    out: dict[int, dict[str, Any]] = {}
    start = 0
    for file in files:
        n = pq.ParquetFile(file).metadata.num_rows
        here = [i - start for i in wanted if start <= i < start + n]
        if here:
            out.update((start + i, row) for i, row in _read_parquet(file, only=here))
        start += n
    return out


def load_rows(
    source: str | Path,
    *,
    split: str,
    engine: Engine = "pyarrow",
    task: str | None = None,
    verify_images: bool = False,
    cache_dir: str | Path | None = None,
    images: bool = True,
) -> list[dict[str, Any]]:
    """Load every row of `split` (see `load_split`), in storage order."""
    return load_split(
        source,
        split=split,
        engine=engine,
        task=task,
        verify_images=verify_images,
        cache_dir=cache_dir,
        images=images,
    ).rows
