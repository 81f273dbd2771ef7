"""The run store: one SQLite file (`vlmparity.sqlite`) per output directory.

Every answer is committed as it arrives, so a killed run loses nothing it has acknowledged and a rerun of
the same command sends only what is missing. Everything after the store (scoring, reports, comparisons) is
a pure function of its contents.

Durability: WAL with `synchronous=FULL`. WAL alone already survives a killed *process* (a committed
transaction is in the OS page cache); FULL also fsyncs each commit so an answer survives a power cut.
Measured on the project machines FULL costs ~0.14 ms per commit (vs ~0.015 ms for NORMAL), paid on the
writer thread and amortised by group commit (`ResultWriter`), so durability is bought for free.

The package by job: `records` (what a row holds), `schema` (tables, migrations, connections and the
rows of records), `queries` (`Store`: reads and small writes) and `writer` (`ResultWriter`, the one
thread that commits answers).
"""

from vlmparity.store.queries import Store
from vlmparity.store.records import (
    ANSWERED,
    FAILURES,
    OUTCOMES,
    TREATMENTS,
    PlanRecord,
    ResultRecord,
    RunRecord,
    SampleRecord,
    describe_sampling,
    is_done,
)
from vlmparity.store.schema import (
    ERROR_BODY_MAX_CHARS,
    MIGRATIONS,
    SCHEMA_VERSION,
    STORE_FILENAME,
    store_path,
)
from vlmparity.store.writer import CallbackError, Registration, ResultWriter

__all__ = [
    "ANSWERED",
    "ERROR_BODY_MAX_CHARS",
    "FAILURES",
    "MIGRATIONS",
    "OUTCOMES",
    "SCHEMA_VERSION",
    "STORE_FILENAME",
    "TREATMENTS",
    "CallbackError",
    "PlanRecord",
    "Registration",
    "ResultRecord",
    "ResultWriter",
    "RunRecord",
    "SampleRecord",
    "Store",
    "describe_sampling",
    "is_done",
    "store_path",
]
