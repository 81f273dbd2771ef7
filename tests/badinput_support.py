"""Builders for the bad-input corpus (`tests/badinput/cases.yaml`, run by `tests/test_badinput.py`).

Three kinds of ingredient:

- **data builders** (`DATA`): each writes an otherwise-valid synthetic MME or MMMU parquet set (made with
  pyarrow from `vlmparity.synth` rows) with exactly one thing wrong, and returns the path to pass
  as `--data`. Broken image files come from `tests/badinput/images/` (see `make_images`).
- **`FakeServer`**: a tiny OpenAI-compatible aiohttp server in a background thread that answers the first
  `good` chat requests correctly and then misbehaves in one way (`CHAT_MODES`), or misbehaves already
  while being probed (`PROBE_MODES`). It records the request hash (`vlmparity.tasks.base.request_hash`,
  the hash the run store keys requests by) of every chat request, so a test can tell which samples were
  sent again on resume.
- the project simulator (`vlmparity.sim`) for what it has a knob for (faults, start-up delay, model name).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import os
import random
import socket
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
from aiohttp import web

CORPUS = Path(__file__).resolve().parent / "badinput"
IMAGES = CORPUS / "images"
FILES = CORPUS / "files"

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
MME_COLUMNS = ("question_id", "image", "question", "answer", "category")
MMMU_IMAGE_COLUMNS = tuple(f"image_{i}" for i in range(1, 8))
MMMU_COLUMNS = ("id", "question", "options", "explanation", *MMMU_IMAGE_COLUMNS, "img_type", "answer",
                "topic_difficulty", "question_type", "subfield")  # fmt: skip
MME_N = 6  # three image pairs: two answered, then the pair the case breaks
MMMU_N = 8
MME_FILE = "data/test-00000-of-00001.parquet"
MMMU_FILE = "data/validation-00000-of-00001.parquet"


# ---------------------------------------------------------------- broken image files (committed)


def bomb_png(width: int = 20000, height: int = 20000) -> bytes:
    """A valid 1-bit greyscale PNG of one colour: a few tens of kB on disk, width*height pixels decoded.

    Written chunk by chunk so that making it never allocates the image.
    """

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0 + one bit per pixel
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _noise(fmt: str, size: tuple[int, int] = (96, 96)) -> bytes:
    """An incompressible RGB picture (so a cut anywhere lands inside the pixel data)."""
    from PIL import Image

    rng = random.Random(7)
    image = Image.frombytes("RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3)))
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


def make_images(folder: Path = IMAGES) -> None:
    """(Re)write the committed broken images; deterministic, run by hand when adding one."""
    png, jpeg = _noise("PNG"), _noise("JPEG")
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "zero_bytes.png": b"",
        "garbage.png": bytes(random.Random(3).randrange(256) for _ in range(4096)),
        "html_page.png": b"<!doctype html><html><body><h1>404 Not Found</h1></body></html>\n",
        "truncated_header.png": png[:20],  # the signature and part of IHDR: not identifiable
        "truncated_body.png": png[: len(png) * 6 // 10],  # header intact, pixel data cut
        "truncated_body.jpg": jpeg[: len(jpeg) * 6 // 10],
        "bomb_20000x20000.png": bomb_png(),
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)


# ---------------------------------------------------------------- datasets


@functools.cache
def _mme_rows() -> tuple[dict[str, Any], ...]:
    from vlmparity.synth import mme_rows

    return tuple(mme_rows(MME_N, seed=0, workers=1))


@functools.cache
def _mmmu_rows() -> tuple[dict[str, Any], ...]:
    from vlmparity.synth import mmmu_rows

    return tuple(mmmu_rows(MMMU_N, seed=0, workers=1))


def mme_rows() -> list[dict[str, Any]]:
    """A fresh copy of the valid synthetic MME rows (6 questions, 3 image pairs; images as bytes)."""
    return [dict(r) for r in _mme_rows()]


def mmmu_rows() -> list[dict[str, Any]]:
    """A fresh copy of the valid synthetic MMMU rows (8 questions; images as bytes or None)."""
    return [dict(r) for r in _mmmu_rows()]


def image(name: str) -> bytes:
    """A committed broken image."""
    return (IMAGES / name).read_bytes()


def _cell(data: Any, name: str) -> Any:
    return {"bytes": data, "path": name} if isinstance(data, bytes) else data


def write_rows(
    path: Path,
    rows: list[dict[str, Any]],
    columns: tuple[str, ...],
    image_columns: tuple[str, ...],
    *,
    types: dict[str, pa.DataType] | None = None,
) -> Path:
    """Write rows as the hub stores them (images as struct{bytes, path}); `types` overrides column types."""
    types = types or {}
    schema = pa.schema(
        [pa.field(c, types.get(c, IMAGE_TYPE if c in image_columns else pa.string())) for c in columns]
    )
    data = [
        {c: _cell(r[c], f"{i}_{c}.png") if schema.field(c).type == IMAGE_TYPE else r[c] for c in columns}
        for i, r in enumerate(rows)
    ]
    table = pa.Table.from_pylist(data, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def write_mme(folder: Path, rows: list[dict[str, Any]], **kw: Any) -> Path:
    """An MME folder laid out like `huggingface-cli download` (data/test-00000-of-00001.parquet)."""
    cols = tuple(c for c in MME_COLUMNS if not rows or c in rows[0])
    write_rows(folder / MME_FILE, rows, cols, ("image",), **kw)
    return folder


def write_mmmu(folder: Path, rows: list[dict[str, Any]], **kw: Any) -> Path:
    """An MMMU folder (data/validation-00000-of-00001.parquet)."""
    cols = tuple(c for c in MMMU_COLUMNS if not rows or c in rows[0])
    write_rows(folder / MMMU_FILE, rows, cols, MMMU_IMAGE_COLUMNS, **kw)
    return folder


def _mme_pair_image(name: str) -> Callable[[Path], Path]:
    """The last image pair's picture replaced by a committed broken image (both its rows share it)."""

    def build(out: Path) -> Path:
        rows = mme_rows()
        for r in rows[4:6]:
            r["image"] = image(name)
        return write_mme(out, rows)

    return build


def _mmmu_image(name: str, column: str = "image_1", row: int = 3) -> Callable[[Path], Path]:
    def build(out: Path) -> Path:
        rows = mmmu_rows()
        rows[row][column] = image(name)
        return write_mmmu(out, rows)

    return build


def _mme_edit(
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], **kw: Any
) -> Callable[[Path], Path]:
    return lambda out: write_mme(out, edit(mme_rows()), **kw)


def _mmmu_edit(
    edit: Callable[[list[dict[str, Any]]], list[dict[str, Any]]], **kw: Any
) -> Callable[[Path], Path]:
    return lambda out: write_mmmu(out, edit(mmmu_rows()), **kw)


def _set(index: int, column: str, value: Any) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def edit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        rows[index][column] = value
        return rows

    return edit


def _drop(column: str) -> Callable[[list[dict[str, Any]]], list[dict[str, Any]]]:
    def edit(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        for r in rows:
            del r[column]
        return rows

    return edit


def _mme_valid(out: Path) -> Path:
    return write_mme(out, mme_rows())


@functools.cache
def _large_png() -> bytes:
    return bomb_png(10000, 10000)


def _mme_image_large(out: Path) -> Path:
    """The last pair's picture 10000x10000 (100 Mpx): over Pillow's warning limit (89 Mpx), under its
    hard limit (179 Mpx), so it is evaluated — decoding it takes about 0.5 GB."""
    rows = mme_rows()
    for r in rows[4:6]:
        r["image"] = _large_png()
    return write_mme(out, rows)


def _mme_answer_int(out: Path) -> Path:
    rows = mme_rows()
    for r in rows:
        r["answer"] = 1 if r["answer"] == "Yes" else 0
    return write_mme(out, rows, types={"answer": pa.int64()})


def _mme_image_int(out: Path) -> Path:
    rows = mme_rows()
    for i, r in enumerate(rows):
        r["image"] = i
    return write_mme(out, rows, types={"image": pa.int64()})


def _mme_image_path_missing(out: Path) -> Path:
    rows = mme_rows()
    rows[0]["image"] = {"bytes": None, "path": "images/missing.png"}
    return write_mme(out, rows)


def _mme_duplicate_file(out: Path) -> Path:
    """The same shard twice under two names: every id appears twice."""
    write_rows(out / "data/test-00000-of-00002.parquet", mme_rows(), MME_COLUMNS, ("image",))
    write_rows(out / "data/test-00001-of-00002.parquet", mme_rows(), MME_COLUMNS, ("image",))
    return out


def _mme_duplicate_row(out: Path) -> Path:
    rows = mme_rows()
    return write_mme(out, [*rows, dict(rows[1])])


def _mme_empty_split(out: Path) -> Path:
    return write_mme(out, [])


def _mme_unpaired(out: Path) -> Path:
    return write_mme(out, mme_rows()[:5])


def _mme_not_parquet(out: Path) -> Path:
    (out / "data").mkdir(parents=True)
    (out / MME_FILE).write_text("question_id,image,question,answer,category\n", encoding="utf-8")
    return out


def _mme_truncated_parquet(out: Path) -> Path:
    write_mme(out, mme_rows())
    data = (out / MME_FILE).read_bytes()
    (out / MME_FILE).write_bytes(data[: len(data) // 2])
    return out


def _mme_wrong_split(out: Path) -> Path:
    write_rows(out / "data/validation-00000-of-00001.parquet", mme_rows(), MME_COLUMNS, ("image",))
    return out


def _empty_folder(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "README.md").write_text("nothing here\n", encoding="utf-8")
    return out


def _mmmu_options_list_column(out: Path) -> Path:
    rows = mmmu_rows()
    for r in rows:
        r["options"] = ["a", "b"]
    return write_mmmu(out, rows, types={"options": pa.list_(pa.string())})


def _mmmu_placeholder(number: int) -> Callable[[Path], Path]:
    def build(out: Path) -> Path:
        rows = mmmu_rows()
        rows[2]["question"] += f" Compare with <image {number}>."
        return write_mmmu(out, rows)

    return build


def _run_dir_not_a_run(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "notes.txt").write_text("results of something else\n", encoding="utf-8")
    return out


def _run_dir_corrupt_store(out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "vlmparity.sqlite").write_bytes(bytes(random.Random(5).randrange(256) for _ in range(8192)))
    return out


def _run_dir_foreign_sqlite(out: Path) -> Path:
    """A valid SQLite file by the store's name that some other program wrote."""
    import sqlite3

    out.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(out / "vlmparity.sqlite")) as con:
        con.execute("CREATE TABLE notes (text TEXT)")
        con.commit()
    return out


def _a_file(out: Path) -> Path:
    """A plain file where a folder is expected."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("a file, not a folder\n", encoding="utf-8")
    return out


def _mme_parquet_is_folder(out: Path) -> Path:
    """A folder where the split's parquet file should be (an unzip gone wrong)."""
    (out / MME_FILE).mkdir(parents=True)
    return out


def _mme_parquet_is_fifo(out: Path) -> Path:
    """A named pipe where the split's parquet file should be: reading it would block for ever."""
    (out / "data").mkdir(parents=True)
    os.mkfifo(out / MME_FILE)
    return out


def _fifo(out: Path) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(out)
    return out


def _a_folder(out: Path) -> Path:
    """A folder where a file is expected (e.g. run.json)."""
    out.mkdir(parents=True, exist_ok=True)
    return out


def _store_with(out: Path, sql: str) -> Path:
    """A real run store (made by vlmparity) changed by `sql`, as another program or damage might."""
    import sqlite3

    from vlmparity.store import Store

    out.mkdir(parents=True, exist_ok=True)
    with Store.open(out):
        pass
    with contextlib.closing(sqlite3.connect(out / "vlmparity.sqlite", isolation_level=None)) as con:
        con.execute(sql)
    return out


DATA: dict[str, Callable[[Path], Path]] = {
    "mme_valid": _mme_valid,
    # images
    "mme_image_garbage": _mme_pair_image("garbage.png"),
    "mme_image_zero_bytes": _mme_pair_image("zero_bytes.png"),
    "mme_image_html": _mme_pair_image("html_page.png"),
    "mme_image_truncated_header": _mme_pair_image("truncated_header.png"),
    "mme_image_truncated_body": _mme_pair_image("truncated_body.png"),
    "mme_image_truncated_jpeg": _mme_pair_image("truncated_body.jpg"),
    "mme_image_bomb": _mme_pair_image("bomb_20000x20000.png"),
    "mme_image_large": _mme_image_large,
    "mme_image_null": _mme_edit(_set(4, "image", None)),
    "mme_image_int": _mme_image_int,
    "mme_image_path_missing": _mme_image_path_missing,
    "mmmu_image_garbage": _mmmu_image("garbage.png", "image_1"),
    "mmmu_image_zero_bytes": _mmmu_image("zero_bytes.png", "image_1"),
    "mmmu_image_bomb": _mmmu_image("bomb_20000x20000.png", "image_1"),
    "mmmu_image_truncated_header_7": _mmmu_image("truncated_header.png", "image_7", row=5),
    # columns and types
    "mme_missing_category": _mme_edit(_drop("category")),
    "mme_missing_image": _mme_edit(_drop("image")),
    "mme_answer_int": _mme_answer_int,
    "mme_question_null": _mme_edit(_set(2, "question", None)),
    "mme_answer_maybe": _mme_edit(_set(3, "answer", "Maybe")),
    "mmmu_missing_options": _mmmu_edit(_drop("options")),
    "mmmu_missing_image_7": _mmmu_edit(_drop("image_7")),
    "mmmu_options_list_column": _mmmu_options_list_column,
    "mmmu_options_not_literal": _mmmu_edit(_set(1, "options", "A) Rice B) Soybean")),
    "mmmu_options_dict": _mmmu_edit(_set(1, "options", "{'A': 'Rice'}")),
    "mmmu_options_unterminated": _mmmu_edit(_set(1, "options", "['Rice', 'Soy")),
    "mmmu_placeholder_9": _mmmu_placeholder(9),
    "mmmu_placeholder_2_empty": _mmmu_placeholder(2),
    "mmmu_bad_id": _mmmu_edit(_set(0, "id", "question-one")),
    "mmmu_bad_question_type": _mmmu_edit(_set(0, "question_type", "essay")),
    # rows and files
    "mme_duplicate_row": _mme_duplicate_row,
    "mme_duplicate_file": _mme_duplicate_file,
    "mme_empty_split": _mme_empty_split,
    "mme_unpaired": _mme_unpaired,
    "mme_not_parquet": _mme_not_parquet,
    "mme_truncated_parquet": _mme_truncated_parquet,
    "mme_wrong_split": _mme_wrong_split,
    "empty_folder": _empty_folder,
    # run folders (compare / report / run --output-path)
    "run_dir_not_a_run": _run_dir_not_a_run,
    "run_dir_corrupt_store": _run_dir_corrupt_store,
    "run_dir_foreign_sqlite": _run_dir_foreign_sqlite,
    "a_file": _a_file,
    "a_folder": _a_folder,
    "fifo": _fifo,
    "mme_parquet_is_folder": _mme_parquet_is_folder,
    "mme_parquet_is_fifo": _mme_parquet_is_fifo,
    "run_dir_store_missing_table": lambda out: _store_with(out, "DROP TABLE results"),
    "run_dir_store_missing_column": lambda out: _store_with(out, "ALTER TABLE results DROP COLUMN ttft"),
}


# ---------------------------------------------------------------- a misbehaving OpenAI-compatible server

GOOD_ANSWER = "Yes"
# How chat requests after the first `good` ones are answered.
CHAT_MODES = (
    "good",  # every request answered (used for the resume pass)
    "non_json",  # 200 text/plain that is not JSON
    "html",  # 200 text/html page
    "html_502",  # a proxy's 502 HTML page
    "empty_choices",  # {"choices": []}
    "content_null",  # message.content null
    "big_answer",  # a 10 MB answer
    "invalid_utf8",  # JSON bytes with invalid UTF-8 inside the content string
    "json_array",  # 200 with a JSON array
    "error_in_200",  # 200 carrying {"error": {...}}
    "http_500",  # 500 JSON error (transient)
    "http_404",  # 404 JSON error (permanent: the request's fault)
    "http_401",  # 401 mid-run (key revoked)
    "reset",  # TCP reset before any byte
    "truncated",  # Content-Length announced, half the body sent, connection closed
    "slow_body",  # headers at once, then one byte every 0.2 s: slower than the timeout allows
    "slow_headers",  # status line and headers trickled one line every 0.2 s (slowloris)
    "hang",  # not a byte, ever (until the client gives up)
    "sse_no_done",  # --stream: events, then the stream ends without [DONE] or a finish_reason
    "sse_bad_json",  # --stream: an event that is not JSON
    # numbers out of range (issue 11): each is "absent", the answer itself is kept
    "usage_huge",  # usage.completion_tokens 10^19 (over SQLite's 2^63 - 1)
    "usage_negative",  # usage.prompt_tokens -5
    "usage_float",  # usage.completion_tokens 1e300
    "usage_string",  # usage.completion_tokens "12"
    "usage_not_object",  # usage "lots"
    "finish_reason_object",  # finish_reason {} (not a string)
    "image_limit_huge",  # 400 "At most 99999999999999999999 image(s) ..."
    "image_limit_5000_digits",  # 400 "At most <5000 digits> image(s) ..." (over int()'s digit limit)
    "retry_after_day_500",  # 500 with Retry-After: 86400
    "retry_after_inf_502",  # 502 with Retry-After: 1e400
    "retry_after_nan_503",  # 503 with Retry-After: nan
    "retry_after_negative_429",  # 429 with Retry-After: -5
    "retry_after_date_504",  # 504 with Retry-After: an HTTP-date in the year 9999
    "retry_after_garbage_500",  # 500 with Retry-After: soon
    "status_999",  # HTTP status 999
    "content_length_huge",  # Content-Length: 10^18 (h11 refuses 21+ digits itself), a short body, close
    # malformed replies (issue 11): retried, then recorded `malformed`, never an answer
    "content_object",  # message.content {"text": "Yes"}
    "content_list_nonsense",  # message.content [1, null, "x"]
    "content_number",  # message.content 42
    "content_parts",  # message.content [{"type": "text", "text": "Yes"}] (valid)
    "message_string",  # message "Yes"
    "message_null",  # message null
    "choices_missing",  # no choices key at all
    "choice_string",  # choices ["Yes"]
    "sse_content_object",  # --stream: a delta whose content is an object
    "sse_event_array",  # --stream: an event that is a JSON array
    # secrets echoed by the server (issue 11)
    "echo_key_500",  # 500 whose message echoes the Authorization header
    "echo_key_answer",  # an answer that quotes the Authorization header's key
)
# Misbehaviour already while the endpoint is being probed.
PROBE_MODES = (
    "models_non_json",  # /v1/models answers 200 text
    "models_html",  # /v1/models answers 200 HTML (a web UI on the API port)
    "models_empty",  # /v1/models lists no model
    "models_two",  # two models listed, none chosen
    "auth_401",  # every route wants a key
    "all_404",  # not an OpenAI server at all
    "auth_401_echo",  # every route wants another key, and echoes the one it got
    "models_huge_len",  # /v1/models gives max_model_len 10^19
    "hang_all",  # accepts connections and never answers anything, the probe included
)
DRIP_INTERVAL_S = 0.2
USAGE_MODES: dict[str, dict[str, Any]] = {
    "usage_huge": {"completion_tokens": 10**19},
    "usage_negative": {"prompt_tokens": -5},
    "usage_float": {"completion_tokens": 1e300},
    "usage_string": {"completion_tokens": "12"},
    "usage_not_object": {},
}
MALFORMED_MODES: dict[str, tuple[str, Any]] = {
    "content_object": ("content", {"text": "Yes"}),
    "content_list_nonsense": ("content", [1, None, "x"]),
    "content_number": ("content", 42),
    "message_string": ("message", "Yes"),
    "message_null": ("message", None),
    "choices_missing": ("no_choices", None),
    "choice_string": ("choices", ["Yes"]),
}
RETRY_AFTER_MODES: dict[str, tuple[int, str]] = {
    "retry_after_day_500": (500, "86400"),
    "retry_after_inf_502": (502, "1e400"),
    "retry_after_nan_503": (503, "nan"),
    "retry_after_negative_429": (429, "-5"),
    "retry_after_date_504": (504, "Fri, 31 Dec 9999 23:59:59 GMT"),
    "retry_after_garbage_500": (500, "soon"),
}


def completion(text: str | None, *, model: str = "fake-vlm", finish: str = "stop") -> dict[str, Any]:
    """A chat.completion document."""
    return {
        "id": "chatcmpl-badinput",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
    }


class FakeServer:
    """An OpenAI-compatible server that answers `good` chat requests, then misbehaves per `mode`.

    `hashes` lists the request hash of every chat request received (in arrival order), `answered` those it
    answered correctly; `mode` may be changed between runs (e.g. to "good" for the resume pass).
    """

    def __init__(self, mode: str = "good", *, good: int = 3, model: str = "fake-vlm") -> None:
        if mode not in CHAT_MODES + PROBE_MODES:
            raise ValueError(f"unknown FakeServer mode {mode!r}")
        self.mode = mode
        self.good = good
        self.model = model
        self.hashes: list[str] = []
        self.answered: list[str] = []
        self.requests = 0  # every HTTP request received (probe included)
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner: web.AppRunner | None = None
        self._stopped: asyncio.Event | None = None

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return self.root + "/v1"

    # -- lifecycle -----------------------------------------------------------------------------------

    def start(self) -> FakeServer:
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            loop.run_until_complete(self._serve(ready))
            loop.close()

        self._thread = threading.Thread(target=run, name="badinput-fake-server", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("fake server did not start")
        return self

    async def _serve(self, ready: threading.Event) -> None:
        app = web.Application(client_max_size=1 << 30, middlewares=[self._middleware])
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        self._stopped = asyncio.Event()
        ready.set()
        await self._stopped.wait()
        await self._runner.cleanup()
        # handlers still hanging ("hang" modes): cancel them, so the loop closes with no task pending
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stop(self) -> None:
        if self._loop is not None and self._stopped is not None:
            self._loop.call_soon_threadsafe(self._stopped.set)
        if self._thread is not None:
            self._thread.join(10)

    def __enter__(self) -> FakeServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- routes --------------------------------------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests += 1
        if self.mode == "hang_all":
            await asyncio.sleep(3600)
        if self.mode == "auth_401":
            return web.json_response({"error": {"message": "invalid API key", "code": 401}}, status=401)
        if self.mode == "all_404":
            return web.Response(status=404, text="404: Not Found")
        if self.mode == "auth_401_echo":
            got = request.headers.get("Authorization", "")
            message = f"invalid API key: {got.removeprefix('Bearer ')} (header {got!r})"
            return web.json_response({"error": {"message": message, "code": 401}}, status=401)
        return await handler(request)  # type: ignore[no-any-return]

    async def _models(self, request: web.Request) -> web.StreamResponse:
        if self.mode == "models_non_json":
            return web.Response(text="models: fake-vlm\n")
        if self.mode == "models_html":
            return web.Response(
                text="<html><head><title>Model UI</title></head></html>", content_type="text/html"
            )
        names = {"models_empty": [], "models_two": [self.model, "other-vlm"]}.get(self.mode, [self.model])
        extra = {"max_model_len": 10**19} if self.mode == "models_huge_len" else {}
        return web.json_response(
            {"object": "list", "data": [{"id": n, "object": "model", **extra} for n in names]}
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or "messages" not in body:  # the prober's empty request
            return web.json_response(
                {"error": {"message": "messages: field required", "code": 400}}, status=400
            )
        from vlmparity.client.logprobs import PROBE_HEADER
        from vlmparity.tasks.base import request_hash

        if PROBE_HEADER in request.headers:  # vlmparity's logprobs probe: answered without any, not counted
            return web.json_response(completion(GOOD_ANSWER, model=self.model))
        n = len(self.hashes)
        rhash = request_hash(body)
        self.hashes.append(rhash)
        stream = body.get("stream") is True
        if n < self.good or self.mode == "good" or self.mode in PROBE_MODES:
            response = await self._answer(request, GOOD_ANSWER, stream)
            self.answered.append(rhash)
            return response
        return await self._misbehave(request, self.mode)

    async def _answer(self, request: web.Request, text: str, stream: bool) -> web.StreamResponse:
        if not stream:
            return web.json_response(completion(text, model=self.model))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        delta = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]}
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        for doc in (delta, end):
            await resp.write(b"data: " + orjson.dumps(doc) + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

    async def _misbehave(self, request: web.Request, mode: str) -> web.StreamResponse:
        answer = completion("Yes", model=self.model)
        choice = answer["choices"][0]
        if mode in USAGE_MODES:
            answer["usage"] = {**answer["usage"], **USAGE_MODES[mode]}
            if mode == "usage_not_object":
                answer["usage"] = "lots"
            self.answered.append(self.hashes[-1])  # still an answer: it must be stored ok
            return web.json_response(answer)
        if mode == "finish_reason_object":
            choice["finish_reason"] = {}
            self.answered.append(self.hashes[-1])
            return web.json_response(answer)
        if mode == "content_parts":
            choice["message"]["content"] = [{"type": "text", "text": "Yes"}]
            self.answered.append(self.hashes[-1])
            return web.json_response(answer)
        if mode in MALFORMED_MODES:
            key, value = MALFORMED_MODES[mode]
            if key == "choices":
                answer["choices"] = value
            elif key == "no_choices":
                del answer["choices"]
            elif key == "message":
                choice["message"] = value
            else:
                choice["message"]["content"] = value
            return web.json_response(answer)
        if mode.startswith("image_limit_"):
            n = "99999999999999999999" if mode == "image_limit_huge" else "9" * 5000
            message = f"At most {n} image(s) may be provided in one prompt."
            return web.json_response({"error": {"message": message, "code": 400}}, status=400)
        if mode in RETRY_AFTER_MODES:
            status, value = RETRY_AFTER_MODES[mode]
            return web.json_response(
                {"error": {"message": "busy", "code": status}}, status=status, headers={"Retry-After": value}
            )
        if mode == "status_999":
            return web.json_response(answer, status=999)
        if mode in ("echo_key_500", "echo_key_answer"):
            got = request.headers.get("Authorization", "")
            if mode == "echo_key_500":
                message = f"Incorrect API key provided: {got.removeprefix('Bearer ')}; header was {got!r}"
                return web.json_response({"error": {"message": message, "code": 500}}, status=500)
            choice["message"]["content"] = f"Yes. Your key is {got.removeprefix('Bearer ')}."
            return web.json_response(answer)
        if mode == "non_json":
            return web.Response(text="Yes, I think so.")
        if mode == "html":
            return web.Response(
                text="<html><body><h1>Welcome to nginx!</h1></body></html>", content_type="text/html"
            )
        if mode == "html_502":
            page = "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
            return web.Response(status=502, text=page, content_type="text/html")
        if mode == "empty_choices":
            return web.json_response({**completion(None, model=self.model), "choices": []})
        if mode == "content_null":
            return web.json_response(completion(None, model=self.model))
        if mode == "big_answer":
            return web.json_response(completion("Yes " * (10 * 1024 * 1024 // 4), model=self.model))
        if mode == "invalid_utf8":
            raw = orjson.dumps(completion("Yes", model=self.model)).replace(b'"Yes"', b'"Y\xff\xfes"')
            return web.Response(body=raw, content_type="application/json")
        if mode == "json_array":
            return web.json_response([completion("Yes", model=self.model)])
        if mode == "error_in_200":
            return web.json_response({"error": {"message": "engine overloaded", "type": "InternalError"}})
        if mode == "http_500":
            return web.json_response({"error": {"message": "CUDA error", "code": 500}}, status=500)
        if mode == "http_404":
            return web.json_response({"error": {"message": "model not found", "code": 404}}, status=404)
        if mode == "http_401":
            return web.json_response({"error": {"message": "API key revoked", "code": 401}}, status=401)
        if mode in ("reset", "truncated", "slow_headers", "content_length_huge"):
            return await self._raw(request, mode)
        if mode == "hang":
            await asyncio.sleep(3600)
        if mode == "slow_body":
            resp = web.StreamResponse(headers={"Content-Type": "application/json"})
            resp.content_length = 1 << 20
            await resp.prepare(request)
            with contextlib.suppress(ConnectionError, RuntimeError):
                for _ in range(10_000):
                    await resp.write(b" ")  # leading whitespace: still the start of valid JSON
                    await asyncio.sleep(DRIP_INTERVAL_S)
            return resp
        if mode in ("sse_no_done", "sse_bad_json", "sse_content_object", "sse_event_array"):
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            delta = {"choices": [{"index": 0, "delta": {"role": "assistant", "content": "Ye"}}]}
            await resp.write(b"data: " + orjson.dumps(delta) + b"\n\n")
            if mode != "sse_no_done":
                bad = {
                    "sse_bad_json": b"{not json",
                    "sse_content_object": orjson.dumps(
                        {
                            "choices": [
                                {"index": 0, "delta": {"content": {"text": "s"}}, "finish_reason": "stop"}
                            ]
                        }
                    ),
                    "sse_event_array": b"[1, 2]",
                }[mode]
                await resp.write(b"data: " + bad + b"\n\n")
                await resp.write(b"data: [DONE]\n\n")
            await resp.write_eof()
            return resp
        raise AssertionError(mode)

    async def _raw(self, request: web.Request, mode: str) -> web.StreamResponse:
        """Write (or withhold) bytes on the socket directly, then drop the connection."""
        transport = request.transport
        assert transport is not None
        if mode == "reset":
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
        elif mode == "content_length_huge":
            body = orjson.dumps(completion("Yes", model=self.model))
            head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + "1" + "0" * 18
            transport.write(head.encode() + b"\r\n\r\n" + body)
            await asyncio.sleep(0.05)
            transport.close()
        elif mode == "truncated":
            body = orjson.dumps(completion("Yes", model=self.model))
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            transport.write(head.encode() + body[: len(body) // 2])
            await asyncio.sleep(0.05)
            transport.close()
        else:  # slow_headers: a status line, then one header line at a time, never the blank line
            transport.write(b"HTTP/1.1 200 OK\r\n")
            for i in range(10_000):
                if transport.is_closing():
                    break
                transport.write(f"X-Drip-{i}: {'.' * 8}\r\n".encode())
                await asyncio.sleep(DRIP_INTERVAL_S)
            transport.close()
        # the connection is gone: aiohttp must not write a response of its own
        raise asyncio.CancelledError


def free_port() -> int:
    """A port nobody listens on (bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
