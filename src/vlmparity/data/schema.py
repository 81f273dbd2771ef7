"""Expected dataset schemas per task, and the checks that turn a bad dataset into one clear `DataError`.

Rows are what `vlmparity.data.sources` yields: dicts keyed by the dataset's own column names, strings as
`str`, image cells as encoded bytes or None. `check_rows` catches what would otherwise crash or silently
skew an evaluation: a missing or mistyped column, an empty split, duplicate ids, an MMMU `options` cell
that is not a Python list literal, an MME answer that is not Yes/No, an image that cannot be read.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from vlmparity.errors import ConfigError, DataError

if TYPE_CHECKING:
    from vlmparity.data.images import LargeImageNotices

ColumnKind = Literal["string", "image"]
RowLocator = Callable[[int], str]  # row index -> "file.parquet row 12" (where the row came from)


@dataclass(frozen=True)
class ColumnSpec:
    """One expected column: a string or an image (encoded bytes); `nullable` cells may be None."""

    name: str
    kind: ColumnKind = "string"
    nullable: bool = False


@dataclass(frozen=True)
class TaskSchema:
    """The columns a task reads from its dataset, and which columns identify a row."""

    task: str
    dataset: str  # the Hugging Face dataset the schema follows
    id_columns: tuple[str, ...]  # together unique per row
    columns: tuple[ColumnSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def image_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind == "image")


MME_SCHEMA = TaskSchema(
    task="mme",
    dataset="lmms-lab/MME (split test)",
    # question_id is the image path, shared by the Yes and the No question of one image
    id_columns=("question_id", "question"),
    columns=(
        ColumnSpec("question_id"),
        ColumnSpec("image", "image"),
        ColumnSpec("question"),
        ColumnSpec("answer"),
        ColumnSpec("category"),
    ),
)

MMMU_SCHEMA = TaskSchema(
    task="mmmu_val",
    dataset="lmms-lab/MMMU (split validation)",
    id_columns=("id",),
    columns=(
        ColumnSpec("id"),
        ColumnSpec("question"),
        ColumnSpec("options"),
        # informational columns the scorer never reads: tolerate nulls rather than refuse a dataset
        ColumnSpec("explanation", nullable=True),
        *(ColumnSpec(f"image_{i}", "image", nullable=True) for i in range(1, 8)),
        ColumnSpec("img_type", nullable=True),
        ColumnSpec("answer"),
        ColumnSpec("topic_difficulty", nullable=True),
        ColumnSpec("question_type"),
        ColumnSpec("subfield", nullable=True),
    ),
)

SCHEMAS: dict[str, TaskSchema] = {"mme": MME_SCHEMA, "mmmu_val": MMMU_SCHEMA}

_MMMU_QUESTION_TYPES = ("multiple-choice", "open")
_IMAGE_REF = re.compile(r"<image (\d+)>")
_MMMU_ID = re.compile(r"^([^_]+)_(.+?)_\d+$")  # validation_Art_Theory_12 -> subject Art_Theory


def schema_for(task_name: str) -> TaskSchema:
    """The expected schema of a task's dataset (`mmmu_*` tasks share the MMMU schema)."""
    if task_name in SCHEMAS:
        return SCHEMAS[task_name]
    if task_name.startswith("mmmu"):
        return MMMU_SCHEMA
    known = ", ".join(sorted(SCHEMAS))
    raise ConfigError(f"no dataset schema for task {task_name!r}", hint=f"known: {known}")


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
    where = _locator(source_label)
    if not rows:
        label = source_label if isinstance(source_label, str) else where(0).rsplit(" row ", 1)[0]
        raise DataError(f"{label}: the split has no rows", hint=f"expected the {schema.dataset} dataset")
    for index, row in enumerate(rows):
        _check_columns(schema, row, index, where, images=images)
    _check_unique(schema, rows, where)
    if schema is MME_SCHEMA:
        _check_mme(rows, where)
    else:
        _check_mmmu(rows, where, images=images)
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


def _check_mme(rows: Sequence[Mapping[str, Any]], where: RowLocator) -> None:
    for index, row in enumerate(rows):
        # lmms-eval asserts this normalised ground truth is yes or no
        gt = row["answer"].lower().strip().replace(".", "")
        if gt not in ("yes", "no"):
            raise _fail(where, MME_SCHEMA, row, index, "answer", f"is {row['answer']!r}, expected Yes or No")
    # lmms-eval's aggregation asserts exactly two questions (Yes and No) per image
    counts = Counter(row["question_id"] for row in rows)
    for index, row in enumerate(rows):
        n = counts[row["question_id"]]
        if n != 2:
            raise _fail(
                where,
                MME_SCHEMA,
                row,
                index,
                "question_id",
                f"image has {n} question(s), MME needs exactly 2 per image",
                hint="MME scores images by their Yes/No question pair",
            )


def mmmu_options(value: str) -> list[Any] | None:
    """Parse an MMMU `options` cell (a Python list literal) as lmms-eval does; None if it is not a list."""
    try:
        parsed = ast.literal_eval(value)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None
    return parsed if isinstance(parsed, list) else None


def _check_mmmu(rows: Sequence[Mapping[str, Any]], where: RowLocator, *, images: bool = True) -> None:
    for index, row in enumerate(rows):
        if _MMMU_ID.match(row["id"]) is None:
            raise _fail(
                where,
                MMMU_SCHEMA,
                row,
                index,
                "id",
                "does not look like <split>_<Subject>_<n>",
                hint="the subject is read from the id, e.g. validation_Art_Theory_12",
            )
        options = mmmu_options(row["options"])
        if options is None:
            raise _fail(
                where,
                MMMU_SCHEMA,
                row,
                index,
                "options",
                f"is not a Python list literal: {_short(row['options'])}",
                hint="expected e.g. \"['cat', 'dog']\" or \"[]\"",
            )
        if row["question_type"] not in _MMMU_QUESTION_TYPES:
            raise _fail(
                where,
                MMMU_SCHEMA,
                row,
                index,
                "question_type",
                f"is {row['question_type']!r}, expected one of {', '.join(_MMMU_QUESTION_TYPES)}",
            )
        # an image the prompt refers to must be present (lmms-eval would crash converting None);
        # its prompt shows the options of multiple-choice questions only
        text = row["question"]
        if row["question_type"] == "multiple-choice":
            text += " " + " ".join(str(o) for o in options)
        for number in sorted({int(n) for n in _IMAGE_REF.findall(text)}):
            column = f"image_{number}"
            if not 1 <= number <= 7 or (images and row.get(column) is None):
                raise _fail(
                    where,
                    MMMU_SCHEMA,
                    row,
                    index,
                    column,
                    f"the question refers to <image {number}> but the cell is empty",
                )


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")


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
