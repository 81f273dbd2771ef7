"""Synthetic MME / MMMU-val sets: real schema, structure and quirks, determinism, CLI.

Expected values come from research/lmms-eval.md (§1.6 MME schema and counts, §2.2 MMMU schema, §2.4 image
selection) and the task brief (subjects, storage order, sizes), not from the generator.
"""

from __future__ import annotations

import ast
import hashlib
import io
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlmparity.synth import build as synth
from vlmparity.synth import mme as synth_mme

MME_COUNTS = {
    "existence": 60, "count": 60, "position": 60, "color": 60, "posters": 294, "celebrity": 340, "scene": 400,
    "landmark": 400, "artwork": 400, "OCR": 40, "commonsense_reasoning": 140, "numerical_calculation": 40,
    "text_translation": 40, "code_reasoning": 40,
}  # fmt: skip
SUBJECTS = [
    "Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory", "Basic_Medical_Science",
    "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science", "Design", "Diagnostics_and_Laboratory_Medicine",
    "Economics", "Electronics", "Energy_and_Power", "Finance", "Geography", "History", "Literature", "Manage",
    "Marketing", "Materials", "Math", "Mechanical_Engineering", "Music", "Pharmacy", "Physics", "Psychology",
    "Public_Health", "Sociology",
]  # fmt: skip
MME_COLUMNS = ["question_id", "image", "question", "answer", "category"]
IMAGE_COLS = [f"image_{i}" for i in range(1, 8)]
MMMU_COLUMNS = ["id", "question", "options", "explanation", *IMAGE_COLS, "img_type", "answer", "topic_difficulty",
                "question_type", "subfield"]  # fmt: skip
SUFFIX = " Please answer yes or no."  # what lmms-eval strips (research §1.2)
PLACEHOLDER = re.compile(r"<image (\d+)>")
MME_FILE = "data/test-00000-of-00001.parquet"
MMMU_FILE = "data/validation-00000-of-00001.parquet"


def rows(folder: Path, name: str) -> list[dict[str, Any]]:
    return pq.read_table(folder / name).to_pylist()


def image_bytes(cell: dict[str, Any] | None) -> bytes | None:
    return None if cell is None else cell["bytes"]


def pixel_hash(data: bytes) -> str:
    return hashlib.sha256(Image.open(io.BytesIO(data)).convert("RGB").tobytes()).hexdigest()


def mmmu_subject(row: dict[str, Any]) -> str:
    return row["id"].split("_", 1)[1].rsplit("_", 1)[0]


def mc_text(row: dict[str, Any]) -> str:
    """Question plus options, as lmms-eval's construct_prompt sees them (research §2.4 step 1)."""
    return row["question"] + "\n" + "\n".join(ast.literal_eval(row["options"]))


def lmms_selected_images(row: dict[str, Any]) -> list[str]:
    """lmms-eval's image selection (research §2.4): placeholders in question+options, deduplicated, sorted."""
    return sorted({f"image_{m}" for m in PLACEHOLDER.findall(mc_text(row))})


# ---------------------------------------------------------------- loading through `datasets`


def test_mme_loads_with_datasets_as_image_and_strings(synth_mme_small: Path) -> None:
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(synth_mme_small / MME_FILE), split="train")
    assert list(ds.features) == MME_COLUMNS
    assert isinstance(ds.features["image"], datasets.Image)
    for col in ("question_id", "question", "answer", "category"):
        assert ds.features[col] == datasets.Value("string")
    assert len(ds) == 56
    assert isinstance(ds[0]["image"], Image.Image)


def test_mmmu_loads_with_datasets_as_seven_image_columns(synth_mmmu_small: Path) -> None:
    import datasets

    ds = datasets.load_dataset("parquet", data_files=str(synth_mmmu_small / MMMU_FILE), split="train")
    assert list(ds.features) == MMMU_COLUMNS
    for col in MMMU_COLUMNS:
        expected = datasets.Image() if col in IMAGE_COLS else datasets.Value("string")
        assert ds.features[col] == expected, col
    assert len(ds) == 60
    assert isinstance(ds[0]["image_1"], Image.Image)
    assert ds[0]["image_7"] is None


def test_folder_loads_by_path_with_the_real_split_name(synth_mme_small: Path, synth_mmmu_small: Path) -> None:
    import datasets

    assert list(datasets.load_dataset(str(synth_mme_small))) == ["test"]
    assert list(datasets.load_dataset(str(synth_mmmu_small))) == ["validation"]


def test_parquet_schema_stores_images_as_bytes_and_path(synth_mme_small: Path) -> None:
    schema = pq.read_schema(synth_mme_small / MME_FILE)
    image = schema.field("image").type
    assert [image.field(i).name for i in range(image.num_fields)] == ["bytes", "path"]
    assert str(image.field(0).type) == "binary" and str(image.field(1).type) == "string"
    assert b"huggingface" in schema.metadata


# ---------------------------------------------------------------- MME structure


def test_mme_pairs_are_adjacent_yes_then_no_on_one_image(synth_mme_small: Path) -> None:
    data = rows(synth_mme_small, MME_FILE)
    assert len(data) % 2 == 0
    ids = [r["question_id"] for r in data]
    assert len(set(ids)) == len(data) // 2
    for first, second in zip(data[::2], data[1::2], strict=True):
        assert first["question_id"] == second["question_id"]
        assert first["category"] == second["category"]
        assert first["image"]["bytes"] == second["image"]["bytes"]
        assert (first["answer"], second["answer"]) == ("Yes", "No")
        assert first["question"] != second["question"]


def test_mme_small_set_keeps_every_category_in_storage_order(synth_mme_small: Path) -> None:
    data = rows(synth_mme_small, MME_FILE)
    cats = [r["category"] for r in data]
    assert set(cats) == set(MME_COUNTS)
    order = list(dict.fromkeys(cats))
    assert order[:2] == ["code_reasoning", "artwork"]
    assert len(order) == 14  # each category is one contiguous block


def test_mme_question_ids_are_image_paths_with_the_encoding_extension(synth_mme_small: Path) -> None:
    formats = Counter()
    for r in rows(synth_mme_small, MME_FILE):
        m = re.fullmatch(r"([A-Za-z_]+)/(\d{4})\.(png|jpg)", r["question_id"])
        assert m and m.group(1) == r["category"], r["question_id"]
        fmt = Image.open(io.BytesIO(r["image"]["bytes"])).format
        assert fmt == {"png": "PNG", "jpg": "JPEG"}[m.group(3)]
        formats[fmt] += 1
    assert formats["PNG"] > 0 and formats["JPEG"] > 0


def test_mme_questions_end_with_the_answer_format_and_a_few_quirks(synth_mme_small: Path) -> None:
    data = rows(synth_mme_small, MME_FILE)
    quirks = [r["question"] for r in data if not r["question"].endswith(SUFFIX)]
    assert 1 <= len(quirks) <= 3
    for q in quirks:  # lmms-eval's exact removal leaves these untouched (research §1.2 step 5)
        assert SUFFIX not in q and q.replace(SUFFIX, "") == q
        assert "answer" in q.lower() and "yes or no" in " ".join(q.split()).lower()
    for r in data:
        if r["question"].endswith(SUFFIX):
            assert r["question"].replace(SUFFIX, "").endswith("?")


def test_mme_colour_questions_name_a_colour_that_is_in_the_picture(synth_mme_small: Path) -> None:
    # The Yes question of a `color` pair names a colour of a large drawn shape: it must be in the pixels.
    palette = {"red": (214, 39, 40), "green": (44, 160, 44), "blue": (31, 90, 220), "yellow": (245, 205, 30),
               "orange": (250, 127, 14), "purple": (128, 60, 170), "black": (25, 25, 25),
               "white": (250, 250, 250)}  # fmt: skip
    checked = 0
    for r in rows(synth_mme_small, MME_FILE):
        if r["category"] != "color" or r["answer"] != "Yes":
            continue
        colour = next(c for c in palette if f"a {c} " in r["question"])
        pixels = np.asarray(Image.open(io.BytesIO(r["image"]["bytes"])).convert("RGB"), dtype=np.int16)
        close = (np.abs(pixels - np.array(palette[colour])).max(axis=-1) < 30).sum()
        assert close > 2000, (r["question_id"], colour, close)
        checked += 1
    assert checked >= 1


def test_mme_pictures_are_all_different(synth_mme_small: Path) -> None:
    data = rows(synth_mme_small, MME_FILE)
    hashes = {pixel_hash(r["image"]["bytes"]) for r in data[::2]}
    assert len(hashes) == len(data) // 2


@pytest.mark.parametrize(
    ("n", "expected_rows"),
    [(56, 56), (57, 56), (28, 28), (10, 10), (2374, 2374), (5000, 2374)],
)
def test_mme_allocation_sizes(n: int, expected_rows: int) -> None:
    alloc = synth_mme.allocate_pairs(n)
    assert 2 * sum(alloc.values()) == expected_rows
    assert all(alloc[c] <= MME_COUNTS[c] // 2 for c in MME_COUNTS)
    if n >= 28:
        assert all(v >= 1 for v in alloc.values())
    else:  # fewer pairs than categories: one pair each for the first n/2 categories in storage order
        assert [c for c, v in alloc.items() if v] == list(alloc)[: n // 2]


def test_mme_allocation_is_proportional() -> None:
    # 1187 pairs at full size; at 594 pairs (half) each category gets about half of its pairs.
    alloc = synth_mme.allocate_pairs(1188)
    for c, q in MME_COUNTS.items():
        assert abs(alloc[c] - q / 4) <= 1, c


def test_mme_smaller_set_is_a_prefix_of_each_category(synth_mme_small: Path, tmp_path: Path) -> None:
    bigger = rows(synth.write_mme(tmp_path / "mme", n=120, seed=0), MME_FILE)
    by_key = {(r["question_id"], r["answer"]): r for r in bigger}
    for r in rows(synth_mme_small, MME_FILE):
        assert by_key[(r["question_id"], r["answer"])] == r


# ---------------------------------------------------------------- MMMU structure


def test_mmmu_ids_subjects_and_storage_order(synth_mmmu_small: Path) -> None:
    data = rows(synth_mmmu_small, MMMU_FILE)
    keys = []
    for r in data:
        m = re.fullmatch(r"validation_(.+)_(\d+)", r["id"])
        assert m, r["id"]
        keys.append((SUBJECTS.index(m.group(1)), int(m.group(2))))
    assert keys == sorted(keys)
    assert Counter(s for s, _ in keys) == dict.fromkeys(range(30), 2)  # round-robin: questions 1 and 2 each
    assert {k for _, k in keys} == {1, 2}


def test_mmmu_columns_hold_the_real_kinds_of_values(synth_mmmu_small: Path) -> None:
    for r in rows(synth_mmmu_small, MMMU_FILE):
        for col in MMMU_COLUMNS:
            if col not in IMAGE_COLS:
                assert isinstance(r[col], str), (r["id"], col)
        options = ast.literal_eval(r["options"])
        assert isinstance(options, list) and all(isinstance(o, str) for o in options)
        assert r["topic_difficulty"] in {"Easy", "Medium", "Hard"}
        types = ast.literal_eval(r["img_type"])
        assert isinstance(types, list) and types and all(isinstance(t, str) for t in types)
        if r["question_type"] == "multiple-choice":
            assert 2 <= len(options) <= 9
            assert re.fullmatch(r"[A-I]", r["answer"]) and ord(r["answer"]) - 65 < len(options)
        else:
            assert r["question_type"] == "open"
            assert options == [] and r["answer"].strip()


def test_mmmu_images_fill_columns_from_image_1_without_gaps(synth_mmmu_small: Path) -> None:
    for r in rows(synth_mmmu_small, MMMU_FILE):
        present = [r[c] is not None for c in IMAGE_COLS]
        assert present[0], r["id"]
        assert present == sorted(present, reverse=True), r["id"]


def test_mmmu_placeholders_refer_to_existing_images(synth_mmmu_small: Path) -> None:
    for r in rows(synth_mmmu_small, MMMU_FILE):
        for key in lmms_selected_images(r):
            assert r[key] is not None, (r["id"], key)


def test_mmmu_small_set_has_open_and_list_answers(synth_mmmu_small: Path) -> None:
    data = rows(synth_mmmu_small, MMMU_FILE)
    open_rows = [r for r in data if r["question_type"] == "open"]
    assert len(open_rows) >= 3
    lists = [r for r in open_rows if r["answer"].startswith("[")]
    assert len(lists) >= 1
    for r in lists:
        value = ast.literal_eval(r["answer"])
        assert isinstance(value, list) and len(value) >= 2 and all(isinstance(v, str) for v in value)


def test_mmmu_small_set_has_every_awkward_image_layout(synth_mmmu_small: Path) -> None:
    data = rows(synth_mmmu_small, MMMU_FILE)
    out_of_order = repeated = option_only = unreferenced = 0
    most_images = 0
    for r in data:
        in_question = [int(m) for m in PLACEHOLDER.findall(r["question"])]
        in_options = [int(m) for m in PLACEHOLDER.findall(r["options"])]
        filled = {int(c.split("_")[1]) for c in IMAGE_COLS if r[c] is not None}
        most_images = max(most_images, len(filled))
        if in_question and in_question[0] != min(in_question):
            out_of_order += 1  # e.g. "Compare <image 2> with <image 1>"
        if max(Counter(in_question + in_options).values(), default=0) >= 2:
            repeated += 1
        if set(in_options) - set(in_question):
            option_only += 1
        if filled - set(in_question + in_options):
            unreferenced += 1
            # lmms-eval sends fewer images than the row holds (research §2.4: unreferenced columns dropped)
            assert len(lmms_selected_images(r)) < len(filled)
    assert out_of_order and repeated and option_only and unreferenced
    assert most_images == 7


def test_mmmu_pictures_are_all_different(synth_mmmu_small: Path) -> None:
    cells = [image_bytes(r[c]) for r in rows(synth_mmmu_small, MMMU_FILE) for c in IMAGE_COLS]
    hashes = [pixel_hash(b) for b in cells if b is not None]
    assert len(set(hashes)) == len(hashes)


def test_mmmu_uses_png_and_jpeg(synth_mmmu_small: Path) -> None:
    formats = Counter(
        Image.open(io.BytesIO(b)).format
        for r in rows(synth_mmmu_small, MMMU_FILE)
        for c in IMAGE_COLS
        if (b := image_bytes(r[c])) is not None
    )
    assert formats["PNG"] > 0 and formats["JPEG"] > 0


# ---------------------------------------------------------------- determinism


def test_same_seed_gives_byte_identical_files(
    tmp_path: Path, synth_mme_small: Path, synth_mmmu_small: Path
) -> None:
    again_mme = synth.write_mme(tmp_path / "mme", n=56, seed=0)
    again_mmmu = synth.write_mmmu(tmp_path / "mmmu", n=60, seed=0)
    assert (again_mme / MME_FILE).read_bytes() == (synth_mme_small / MME_FILE).read_bytes()
    assert (again_mmmu / MMMU_FILE).read_bytes() == (synth_mmmu_small / MMMU_FILE).read_bytes()
    assert (again_mme / "README.md").read_bytes() == (synth_mme_small / "README.md").read_bytes()


def test_worker_processes_do_not_change_the_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(synth, "PARALLEL_MIN_ITEMS", 0)  # force the process pool on a small set
    one = synth.write_mmmu(tmp_path / "one", n=40, seed=3, workers=1)
    two = synth.write_mmmu(tmp_path / "two", n=40, seed=3, workers=2)
    assert (one / MMMU_FILE).read_bytes() == (two / MMMU_FILE).read_bytes()


def test_another_seed_gives_other_pictures(tmp_path: Path, synth_mme_small: Path) -> None:
    other = rows(synth.write_mme(tmp_path / "mme", n=56, seed=1), MME_FILE)
    base = rows(synth_mme_small, MME_FILE)
    assert [r["question_id"] for r in other] == [r["question_id"] for r in base]  # same structure
    assert all(a["image"]["bytes"] != b["image"]["bytes"] for a, b in zip(other, base, strict=True))


# ---------------------------------------------------------------- CLI


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vlmparity", *args], capture_output=True, text=True, timeout=120
    )


def test_cli_writes_the_hub_layout(tmp_path: Path) -> None:
    out = run_cli("synth", "mme", "--out", str(tmp_path / "mme"), "--n", "28", "--seed", "0")
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "mme" / MME_FILE).is_file()
    assert pq.ParquetFile(tmp_path / "mme" / MME_FILE).metadata.num_rows == 28
    assert "28" in out.stdout
    out = run_cli("synth", "mmmu", "--out", str(tmp_path / "mmmu"), "--n", "3")
    assert out.returncode == 0, out.stderr
    assert [r["id"] for r in rows(tmp_path / "mmmu", MMMU_FILE)] == [
        "validation_Accounting_1",
        "validation_Agriculture_1",
        "validation_Architecture_and_Engineering_1",
    ]


def test_cli_bad_input_is_one_line_and_an_exit_code(tmp_path: Path) -> None:
    out = run_cli("synth", "mme", "--out", str(tmp_path / "x"), "--n", "0")
    assert out.returncode == 4
    assert out.stderr.startswith("vlmparity: error:") and "Traceback" not in out.stderr
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    out = run_cli("synth", "mme", "--out", str(blocker), "--n", "2")
    assert out.returncode == 3
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr


# ---------------------------------------------------------------- full size (slow)


@pytest.mark.slow
def test_full_mme_has_the_real_per_category_counts(synth_full: dict[str, Path]) -> None:
    data = rows(synth_full["mme"], MME_FILE)
    assert len(data) == 2374
    assert Counter(r["category"] for r in data) == MME_COUNTS
    assert Counter(r["answer"] for r in data) == {"Yes": 1187, "No": 1187}
    assert len({r["question_id"] for r in data}) == 1187
    quirks = sum(not r["question"].endswith(SUFFIX) for r in data)
    assert 0.01 * 2374 <= quirks <= 0.03 * 2374
    first_250 = Counter(r["category"] for r in data[:250])
    assert set(first_250) == {"code_reasoning", "artwork"}  # one cognition and one perception category
    assert len({pixel_hash(r["image"]["bytes"]) for r in data[::2]}) == 1187


@pytest.mark.slow
def test_full_mmmu_has_30_subjects_of_30(synth_full: dict[str, Path]) -> None:
    data = rows(synth_full["mmmu"], MMMU_FILE)
    assert len(data) == 900
    assert [r["id"] for r in data] == [f"validation_{s}_{k}" for s in SUBJECTS for k in range(1, 31)]
    types = Counter(r["question_type"] for r in data)
    assert (
        0.9 * 900 <= types["multiple-choice"] <= 0.97 * 900
        and types["open"] == 900 - types["multiple-choice"]
    )
    n_images = Counter(sum(r[c] is not None for c in IMAGE_COLS) for r in data)
    assert n_images[1] > 0.8 * 900 and set(n_images) == set(range(1, 8))
    option_counts = Counter(len(ast.literal_eval(r["options"])) for r in data if r["question_type"] != "open")
    assert option_counts.most_common(1)[0][0] == 4
    hashes = [pixel_hash(b) for r in data for c in IMAGE_COLS if (b := image_bytes(r[c])) is not None]
    assert len(set(hashes)) == len(hashes)
    sizes = [len(b) for r in data for c in IMAGE_COLS if (b := image_bytes(r[c])) is not None]
    assert max(sizes) > 200_000 and np.median(sizes) > 10_000


def test_in_memory_rows_match_the_files(synth_mme_small: Path, synth_mmmu_small: Path) -> None:
    from vlmparity.data.sources import load_rows

    assert synth.mme_rows(56, seed=0) == load_rows(synth_mme_small, split="test")
    assert synth.mmmu_rows(60, seed=0) == load_rows(synth_mmmu_small, split="validation")
