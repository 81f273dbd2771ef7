"""Dataset sources: local parquet files/folders (what `vlmparity synth` and `huggingface-cli download` leave)
and Hugging Face hub ids through `datasets`.

Rows come back as plain dicts keyed by the dataset's own column names, in storage order; image cells are
the encoded file bytes (or None), whatever the storage: HF's struct{bytes, path}, a path-only cell
(resolved relative to the parquet file), a decoded PIL image. A local path always wins over a hub id.
This module resolves a source and opens hub datasets; reading local files is `vlmparity.data.local`'s job.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vlmparity.data.local import (
    Engine,
    FileSpan,
    LoadedSplit,
    load_local,
    local_files,
    normalise_image,
    open_local_datasets,
    parquet_files,
    read_parquet,
    rows_from_datasets,
)
from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import get_task, task_names

if TYPE_CHECKING:
    from vlmparity.data.images import LargeImageNotices

__all__ = [
    "Engine",
    "FileSpan",
    "LoadedSplit",
    "hub_endpoint",
    "hub_reachable",
    "load_rows",
    "load_split",
    "looks_like_hub_id",
    "looks_like_path",
    "normalise_image",
    "parquet_files",
    "read_rows",
    "resolve_source",
]

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_like_hub_id(source: str) -> bool:
    """True for 'owner/name' strings (not '/abs', './rel', '~/x' or deeper paths)."""
    return bool(_HUB_ID.match(source)) and not source.startswith((".", "~"))


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

    # per task: lmms-eval 0.7.3's dataset id, then older ids of the same data (contents not verified identical)
    ids_by_task = {t: (get_task(t).default_source, *get_task(t).legacy_sources) for t in task_names()}
    task = task or next((t for t, ids in ids_by_task.items() if repo_id in ids), "TASK")
    download = (
        f"download it where the Hub is reachable (huggingface-cli download --repo-type dataset {repo_id} "
        f"--local-dir DIR), then pass --data {task}=DIR"
    )
    for current, *older in ids_by_task.values():
        if older and repo_id in (current, *older):
            download += f"; lmms-eval 0.7.3 uses {current}, 0.7.2 and older {', '.join(older)}"
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
    rows = [row for _, row in rows_from_datasets(ds, None, label, images=images)]
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
    notices: LargeImageNotices | None = None,
) -> LoadedSplit:
    """Load every row of `split` from a local parquet file/folder or a Hugging Face hub id.

    `engine` reads local files with pyarrow (fast, no cache copy) or `datasets.load_dataset("parquet")`;
    both give identical rows. With `task`, the rows are checked against the task's schema (one clear
    `DataError` on the first problem); `verify_images` then also fully decodes every distinct image.
    `images=False` leaves the image columns out (scoring needs none; `read_rows` fetches some later).
    `notices`: who already reported which large image (a run shares them with its encoder).
    """
    if engine not in ("pyarrow", "datasets"):
        raise ConfigError(f"unknown dataset engine {engine!r}", hint="use pyarrow or datasets")
    path, text = _resolve(source)
    if path is not None:
        loaded = load_local(path, split, engine, cache_dir, images=images)
    else:
        loaded = _load_hub(text, split, cache_dir, images=images, task=task)
    if task is not None:
        from vlmparity.data.schema import check_rows

        check_rows(
            task, loaded.rows, loaded.locate, verify_images=verify_images, images=images, notices=notices
        )
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
        return dict(rows_from_datasets(ds, None, _hub_label(text, split), only=wanted))
    files = local_files(path, split)
    if engine == "datasets":
        ds = open_local_datasets(path, files, split, cache_dir)
        base = files[0].parent if len(files) == 1 else path
        return dict(rows_from_datasets(ds, base, str(path), only=wanted))
    import pyarrow.parquet as pq

    out: dict[int, dict[str, Any]] = {}
    start = 0
    for file in files:
        n = pq.ParquetFile(file).metadata.num_rows
        here = [i - start for i in wanted if start <= i < start + n]
        if here:
            out.update((start + i, row) for i, row in read_parquet(file, only=here))
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
