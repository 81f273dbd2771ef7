"""The checks that turn a bad dataset into one clear `DataError`, against the schema the task declares.

Rows are what `vlmparity.data.sources` yields: dicts keyed by the dataset's own column names, strings as
`str`, image cells as encoded bytes or None. `check_rows` catches what would otherwise crash or silently
skew an evaluation: a missing or mistyped column, an empty split, duplicate ids, an image that cannot be
read, and whatever the task's own `check_rows` hook finds (MMMU: an `options` cell that is not a Python
list literal; MME: an answer that is not Yes/No); each names the file, the row and the column.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import get_task, task_names
from vlmparity.tasks.schema import ColumnSpec, TaskSchema

if TYPE_CHECKING:
    from vlmparity.data.images import LargeImageNotices

RowLocator = Callable[[int], str]  # row index -> "file.parquet row 12" (where the row came from)

__all__ = ["ColumnSpec", "TaskSchema", "check_rows", "image_problem", "row_id", "schema_for"]


def schema_for(task_name: str) -> TaskSchema:
    """The expected schema of a registered task's dataset (the task's `schema`)."""
    if task_name not in task_names():
        known = ", ".join(task_names())
        raise ConfigError(f"no dataset schema for task {task_name!r}", hint=f"known: {known}")
    return get_task(task_name).schema


def row_id(schema: TaskSchema, row: Mapping[str, Any]) -> str:
    """A readable id of a row for messages (the id columns joined by ' / ')."""
    return " / ".join(str(row.get(c)) for c in schema.id_columns)


def _locator(source_label: str | RowLocator) -> RowLocator:
    if callable(source_label):
        return source_label
    return lambda index: f"{source_label} row {index}"


def check_rows(
    task_name: str,
    rows: Sequence[Mapping[str, Any]],
    source_label: str | RowLocator,
    *,
    verify_images: bool = False,
    images: bool = True,
    notices: LargeImageNotices | None = None,
) -> None:
    """Raise one clear `DataError` naming file, column and row if `rows` do not fit the task's schema.

    Every image gets a cheap header check (Pillow identifies it without decoding the pixels);
    `verify_images=True` decodes every distinct image fully (seconds for a whole MME).
    `images=False`: the rows were loaded without their image columns (scoring only); those go unchecked.
    A large image gets one notice per distinct image of `notices` (this check's own when not given).
    """
    schema = schema_for(task_name)
    task = get_task(task_name)
    where = _locator(source_label)
    if not rows:
        label = source_label if isinstance(source_label, str) else where(0).rsplit(" row ", 1)[0]
        raise DataError(f"{label}: the split has no rows", hint=f"expected the {schema.dataset} dataset")
    for index, row in enumerate(rows):
        _check_columns(schema, row, index, where, images=images)
    _check_unique(schema, rows, where)
    for problem in task.check_rows(rows, images=images)[:1]:
        raise _fail(
            where, schema, rows[problem.index], problem.index, problem.column, problem.problem, problem.hint
        )
    if images:
        _check_images(schema, rows, where, full=verify_images, notices=notices)


def _fail(
    where: RowLocator,
    schema: TaskSchema,
    row: Mapping[str, Any],
    index: int,
    column: str,
    problem: str,
    hint: str | None = None,
) -> DataError:
    return DataError(f"{_cell_label(where, schema, row, index, column)}: {problem}", hint=hint)


def _cell_label(
    where: RowLocator, schema: TaskSchema, row: Mapping[str, Any], index: int, column: str
) -> str:
    """`file row N (id columns 'value'), column 'name'`: where a cell is, for messages."""
    rid = row_id(schema, row) if all(c in row for c in schema.id_columns) else None
    ident = f" ({'/'.join(schema.id_columns)} {rid!r})" if rid is not None else ""
    return f"{where(index)}{ident}, column {column!r}"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _check_columns(
    schema: TaskSchema, row: Mapping[str, Any], index: int, where: RowLocator, *, images: bool = True
) -> None:
    for spec in schema.columns:
        if spec.kind == "image" and not images:
            continue
        if spec.name not in row:
            found = ", ".join(sorted(row)) or "none"
            raise DataError(
                f"{where(index)}: column {spec.name!r} is missing",
                hint=f"{schema.task} expects {', '.join(schema.names)}; found {found}",
            )
        value = row[spec.name]
        if value is None:
            if spec.nullable:
                continue
            raise _fail(where, schema, row, index, spec.name, "is empty (null)")
        if spec.kind == "string" and not isinstance(value, str):
            raise _fail(where, schema, row, index, spec.name, f"is {_type_name(value)}, expected a string")
        if spec.kind == "image" and not isinstance(value, bytes | bytearray | memoryview):
            raise _fail(
                where, schema, row, index, spec.name, f"is {_type_name(value)}, expected encoded image bytes"
            )


def _check_unique(schema: TaskSchema, rows: Sequence[Mapping[str, Any]], where: RowLocator) -> None:
    first: dict[tuple[Any, ...], int] = {}
    for index, row in enumerate(rows):
        key = tuple(row[c] for c in schema.id_columns)
        if key in first:
            raise _fail(
                where,
                schema,
                row,
                index,
                schema.id_columns[0],
                f"duplicate id (same as row {first[key]})",
                hint="each row must have a distinct id; was a file included twice?",
            )
        first[key] = index


def image_problem(
    data: bytes, *, full: bool = False, label: str | None = None, notices: LargeImageNotices | None = None
) -> str | None:
    """Why Pillow cannot read `data` (None if it can): header only, or a full decode when `full`.

    An image over Pillow's decompression-bomb warning limit gets one notice naming `label` (see
    `open_image`, `notices`); over twice that limit it cannot be read (DecompressionBombError)."""
    from PIL import Image, UnidentifiedImageError

    from vlmparity.data.images import open_image

    try:
        with open_image(data, label=label, notices=notices) as image:
            if full:
                image.load()
    except UnidentifiedImageError:
        return "cannot identify the image format (not an image, or truncated)"
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        return f"cannot decode image ({type(exc).__name__}: {exc})"
    return None


def _image_cells(schema: TaskSchema, rows: Sequence[Mapping[str, Any]]) -> Iterator[tuple[int, str, bytes]]:
    for index, row in enumerate(rows):
        for column in schema.image_columns:
            value = row.get(column)
            if value is not None:
                yield index, column, bytes(value)


def _check_images(
    schema: TaskSchema,
    rows: Sequence[Mapping[str, Any]],
    where: RowLocator,
    *,
    full: bool,
    notices: LargeImageNotices | None,
) -> None:
    from vlmparity.data.images import LargeImageNotices

    cells = list(_image_cells(schema, rows))
    seen = notices if notices is not None else LargeImageNotices()

    def label(cell: tuple[int, str, bytes]) -> str:
        return _cell_label(where, schema, rows[cell[0]], cell[0], cell[1])

    if full:
        # decode each distinct image once (MME stores every image twice), on all cores: Pillow
        # releases the GIL while decoding
        distinct: dict[str, tuple[int, str, bytes]] = {}
        for cell in cells:
            distinct.setdefault(hashlib.sha256(cell[2]).hexdigest(), cell)
        todo = list(distinct.values())
        with ThreadPoolExecutor() as pool:
            problems = list(
                pool.map(lambda c: image_problem(c[2], full=True, label=label(c), notices=seen), todo)
            )
        checked: Iterable[tuple[tuple[int, str, bytes], str | None]] = zip(todo, problems, strict=True)
    else:
        checked = ((c, image_problem(c[2], label=label(c), notices=seen)) for c in cells)
    for (index, column, _), problem in checked:
        if problem is not None:
            raise _fail(
                where,
                schema,
                rows[index],
                index,
                column,
                problem,
                hint="re-download the dataset or fix that file",
            )
