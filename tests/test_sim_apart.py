"""The simulator stands apart from the evaluation path: its own parquet reading, its own image limit.

Importing it changes nothing process-wide (Pillow's decompression-bomb limit stays what the evaluation
path relies on), and it reads its datasets without `vlmparity.data`.
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from test_sim_support import drawn_png, write_tiny_mme
from vlmparity.errors import DataError
from vlmparity.sim.dataset import build_index, samples_from_source
from vlmparity.sim.images import fingerprint_bytes

PILLOW_DEFAULT_LIMIT = 1024 * 1024 * 1024 // 4 // 3  # Pillow's documented default: 89,478,485 pixels


def test_importing_the_simulator_leaves_pillows_limit_alone() -> None:
    code = (
        "from PIL import Image\n"
        "before = Image.MAX_IMAGE_PIXELS\n"
        "import vlmparity.sim, vlmparity.sim.images, vlmparity.sim.dataset, vlmparity.sim.server\n"
        "print(before, Image.MAX_IMAGE_PIXELS)\n"
        "import sys\n"
        "print(sorted(m for m in sys.modules if m.startswith('vlmparity.data')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    limits, data_modules = out.splitlines()
    assert limits == f"{PILLOW_DEFAULT_LIMIT} {PILLOW_DEFAULT_LIMIT}"
    assert data_modules == "[]"  # the simulator imports nothing of the evaluation path's data layer


def test_the_simulator_decodes_over_pillows_limit_without_changing_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 50x50 = 2500 px: over Pillow's hard limit (2000)
    buf = io.BytesIO()
    Image.new("RGB", (50, 50), (200, 30, 30)).save(buf, format="PNG")
    with pytest.raises(Image.DecompressionBombError):
        Image.open(io.BytesIO(buf.getvalue()))  # Pillow itself refuses it
    fingerprint = fingerprint_bytes(buf.getvalue())
    assert fingerprint.size == (50, 50)
    assert Image.MAX_IMAGE_PIXELS == 1000


def test_the_simulator_reads_path_only_image_cells(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pic.png").write_bytes(drawn_png(3))
    rows = [
        {"question_id": "color/pic.png", "image": {"bytes": None, "path": "pic.png"},
         "question": "Is the square red? Please answer yes or no.", "answer": "Yes", "category": "color"},
    ]  # fmt: skip
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema([("question_id", pa.string()), ("image", image_type), ("question", pa.string()),
                        ("answer", pa.string()), ("category", pa.string())])  # fmt: skip
    pq.write_table(
        pa.Table.from_pylist(rows, schema=schema), tmp_path / "data" / "test-00000-of-00001.parquet"
    )
    [(sample, prints)] = samples_from_source(tmp_path)
    assert sample.id == "color/pic.png::Is the square red? Please answer yes or no."
    assert [p.pixels for p in prints] == [fingerprint_bytes(drawn_png(3)).pixels]


def test_a_folder_without_the_split_names_the_splits_it_has(tmp_path: Path) -> None:
    write_tiny_mme(tmp_path)
    (tmp_path / "data" / "test-00000-of-00001.parquet").rename(
        tmp_path / "data" / "train-00000-of-00001.parquet"
    )
    with pytest.raises(DataError, match="no parquet files for split 'test'") as err:
        samples_from_source(tmp_path)
    assert err.value.hint == "splits found: train"


def test_each_index_belongs_to_its_caller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VLMPARITY_SIM_CACHE", "off")
    data = write_tiny_mme(tmp_path)
    first, second = build_index([data]), build_index([data])
    assert first is not second  # no process-wide cache hands one server's index to another
    assert [s.id for s in first.samples] == [s.id for s in second.samples]
    assert len(first.samples) == 8
