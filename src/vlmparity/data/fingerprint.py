"""Dataset fingerprints: a small JSON-able record proving which data a run evaluated.

The content hash covers ids and answers in storage order (sha256, order-sensitive), so two runs over
the same questions in the same order have the same hash whatever machine, path or file time they ran on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson

from vlmparity.tasks.base import Sample

FINGERPRINT_VERSION = 1


def files_sha256(paths: Sequence[Path]) -> str:
    """sha256 hex over the names, sizes and contents of `paths`, in order (never mtimes or folders)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(orjson.dumps([path.name, path.stat().st_size]))
        with path.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    return digest.hexdigest()


def _row_id(row: Mapping[str, Any], id_columns: Sequence[str] | None) -> Any:
    if id_columns is None:
        # the datasets' own ids: MMMU `id`; MME needs question_id and question (two per image)
        id_columns = ("id",) if "id" in row else ("question_id", "question")
    values = [row.get(c) for c in id_columns]
    return values[0] if len(values) == 1 else values


def _pairs(
    items: Sequence[Sample] | Sequence[Mapping[str, Any]], id_columns: Sequence[str] | None
) -> Iterable[Any]:
    for item in items:
        if isinstance(item, Sample):
            yield [item.id, item.target]
        else:
            yield [_row_id(item, id_columns), item.get("answer")]


def content_sha256(
    items: Sequence[Sample] | Sequence[Mapping[str, Any]], id_columns: Sequence[str] | None = None
) -> str:
    """sha256 hex over the (id, answer) of each item in order: one canonical JSON line per item."""
    digest = hashlib.sha256()
    for pair in _pairs(items, id_columns):
        digest.update(orjson.dumps(pair))
        digest.update(b"\n")
    return digest.hexdigest()


def images_sha256(samples: Sequence[Sample]) -> str:
    """sha256 hex over each sample's image keys in order (detects re-encoded or swapped images)."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(orjson.dumps([img.key for img in sample.images]))
        digest.update(b"\n")
    return digest.hexdigest()


def dataset_fingerprint(
    source: str | Path,
    split: str,
    items: Sequence[Sample] | Sequence[Mapping[str, Any]],
    revision: str | None = None,
    *,
    id_columns: Sequence[str] | None = None,
) -> dict[str, Any]:
    """A JSON-able record of the data: source, split, revision (when known), row count, content hash.

    `items` are samples (hash over `Sample.id` and `Sample.target`, plus an image hash for free since
    image keys are known, unless they were loaded without images) or dataset rows (hash over the id columns and `answer`). The `of` field says
    which, because the two hashes differ for the same data.
    """
    is_samples = bool(items) and isinstance(items[0], Sample)
    record: dict[str, Any] = {
        "version": FINGERPRINT_VERSION,
        "source": str(source),
        "split": split,
        "revision": revision,
        "num_rows": len(items),
        "of": "samples" if is_samples else "rows",
        "content_sha256": content_sha256(items, id_columns),
    }
    # samples loaded without their images (scoring only) cannot vouch for them: `same_data` then
    # compares questions and answers only, which is all that scores depend on
    if is_samples and not any(s.omitted_images for s in items):  # type: ignore[union-attr]
        record["images_sha256"] = images_sha256(items)  # type: ignore[arg-type]
    return record


def same_data(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """True when two fingerprints describe the same questions and answers in the same order."""
    keys = ("of", "num_rows", "content_sha256")
    if any(a.get(k) != b.get(k) for k in keys):
        return False
    # images are compared only when both sides recorded them
    return (
        a.get("images_sha256") is None
        or b.get("images_sha256") is None
        or (a["images_sha256"] == b["images_sha256"])
    )
