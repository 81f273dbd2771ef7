"""What a task declares about its dataset: the columns it reads, and the problems its own row checks find.

A task's `schema` (a `TaskSchema`) lists the columns and their kinds; `vlmparity.data.schema` checks any
dataset against it generically (presence, types, duplicate ids, image headers) and then asks the task's
`check_rows` hook for what only the task knows (MME's Yes/No answers and image pairs, MMMU's options
literal). The hook returns `RowProblem`s; the data layer turns the first into one `DataError` naming the
file, the row and the column.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ColumnKind = Literal["string", "image"]


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
    dataset: str  # the dataset the schema follows, for messages (e.g. "lmms-lab/MME (split test)")
    id_columns: tuple[str, ...]  # together unique per row
    columns: tuple[ColumnSpec, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def image_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind == "image")


@dataclass(frozen=True)
class RowProblem:
    """One row that breaks a task's own rule: where (row index in the split, column), what, and a hint."""

    index: int
    column: str
    problem: str
    hint: str | None = None
