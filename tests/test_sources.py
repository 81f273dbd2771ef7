"""Dataset sources, schema checks and fingerprints (vlmparity.data.sources / schema / fingerprint)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from vlmparity.data import sources
from vlmparity.data.fingerprint import dataset_fingerprint, files_sha256, same_data
from vlmparity.data.schema import check_rows, schema_for
from vlmparity.data.sources import load_rows, load_split, parquet_files
from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import ImageData, Sample

IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def png(color: tuple[int, int, int], size: tuple[int, int] = (6, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


def mme_rows(n_images: int = 3, start: int = 0) -> list[dict[str, Any]]:
    rows = []
    for i in range(start, start + n_images):
        img = png((i * 40 % 256, 10, 200))
        for question, answer in (("Is it blue? Please answer yes or no.", "Yes"), ("Is it red?", "No")):
            rows.append(
                {
                    "question_id": f"color/{i:04d}.png",
                    "image": img,
                    "question": question,
                    "answer": answer,
                    "category": "color",
                }
            )
    return rows


def mmmu_rows(subject: str, n: int, split: str = "validation") -> list[dict[str, Any]]:
    rows = []
    for i in range(1, n + 1):
        row: dict[str, Any] = {
            "id": f"{split}_{subject}_{i}",
            "question": f"What is shown in <image 1>? ({subject} {i})",
            "options": "['cat', 'dog']",
            "explanation": "",
            "img_type": "['Photographs']",
            "answer": "A",
            "topic_difficulty": "Easy",
            "question_type": "multiple-choice",
            "subfield": subject,
        }
        for k in range(1, 8):
            row[f"image_{k}"] = png((i, k, 7)) if k == 1 else None
        rows.append(row)
    return rows


def hf_features(rows: list[dict[str, Any]], images: tuple[str, ...]) -> dict[str, Any]:
    feats: dict[str, Any] = {}
    for name in rows[0]:
        feats[name] = {"_type": "Image"} if name in images else {"dtype": "string", "_type": "Value"}
    return feats


def write_parquet(
    path: Path, rows: list[dict[str, Any]], images: tuple[str, ...] = ("image",), hf_meta: bool = True
) -> Path:
    """Write rows the way the Hugging Face hub stores them: images as struct{bytes, path}."""
    cols: dict[str, Any] = {}
    fields = []
    for name in rows[0]:
        if name in images:
            values = [
                None
                if r[name] is None
                else ({"bytes": r[name], "path": f"{name}.png"} if isinstance(r[name], bytes) else r[name])
                for r in rows
            ]
            fields.append(pa.field(name, IMAGE_TYPE))
        else:
            values = [r[name] for r in rows]
            fields.append(pa.field(name, pa.string()))
        cols[name] = values
    schema = pa.schema(fields)
    if hf_meta:
        meta = {"info": {"features": hf_features(rows, images)}}
        schema = schema.with_metadata({b"huggingface": json.dumps(meta).encode()})
    table = pa.Table.from_pydict(cols, schema=schema)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


MMMU_IMAGES = tuple(f"image_{k}" for k in range(1, 8))


# --- local sources -----------------------------------------------------------------------------


def test_synth_layout_loads_the_requested_split_in_storage_order(tmp_path: Path) -> None:
    test_rows = mme_rows(3)
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", test_rows)
    write_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", mme_rows(1, start=50))
    rows = load_rows(tmp_path, split="test")
    assert rows == test_rows  # images come back as the stored bytes, strings as str
    assert [r["question_id"] for r in load_rows(tmp_path, split="validation")] == ["color/0050.png"] * 2


def test_hub_download_layout_with_several_shards_and_a_cache_folder(tmp_path: Path) -> None:
    a, b = mme_rows(2), mme_rows(2, start=2)
    write_parquet(tmp_path / "data" / "test-00001-of-00002-bbbb.parquet", b)
    write_parquet(tmp_path / "data" / "test-00000-of-00002-aaaa.parquet", a)
    # huggingface-cli download --local-dir keeps bookkeeping in DIR/.cache; never data
    write_parquet(tmp_path / ".cache" / "huggingface" / "test-00000-of-00001.parquet", mme_rows(1, 9))
    loaded = load_split(tmp_path, split="test")
    assert loaded.rows == a + b  # shard order, not write order
    assert [s.path.name for s in loaded.files] == [
        "test-00000-of-00002-aaaa.parquet",
        "test-00001-of-00002-bbbb.parquet",
    ]
    assert loaded.locate(5) == f"{tmp_path / 'data' / 'test-00001-of-00002-bbbb.parquet'} row 1"


def test_per_subject_folders_pick_the_split_by_name(tmp_path: Path) -> None:
    for subject in ("Art_Theory", "Accounting", "Art"):
        write_parquet(
            tmp_path / subject / "validation-00000-of-00001.parquet", mmmu_rows(subject, 2), MMMU_IMAGES
        )
        write_parquet(
            tmp_path / subject / "dev-00000-of-00001.parquet", mmmu_rows(subject, 1, "dev"), MMMU_IMAGES
        )
        write_parquet(
            tmp_path / subject / "test-00000-of-00001.parquet", mmmu_rows(subject, 1, "test"), MMMU_IMAGES
        )
    rows = load_rows(tmp_path, split="validation")
    assert [r["id"] for r in rows] == [
        "validation_Accounting_1",
        "validation_Accounting_2",
        "validation_Art_1",
        "validation_Art_2",
        "validation_Art_Theory_1",
        "validation_Art_Theory_2",
    ]
    assert rows[0]["image_1"] == png((1, 1, 7)) and rows[0]["image_2"] is None
    assert load_rows(tmp_path, split="dev")[0]["id"] == "dev_Accounting_1"


def test_split_names_match_whole_words_only(tmp_path: Path) -> None:
    write_parquet(tmp_path / "contest-00000.parquet", mme_rows(1))
    write_parquet(tmp_path / "test-00000.parquet", mme_rows(1, start=4))
    assert [p.name for p in parquet_files(tmp_path, "test")] == ["test-00000.parquet"]


def test_a_split_folder_and_a_single_file(tmp_path: Path) -> None:
    f = write_parquet(tmp_path / "validation" / "part0.parquet", mme_rows(1))
    assert parquet_files(tmp_path, "validation") == [f]
    assert load_rows(f, split="anything") == mme_rows(1)  # a file is taken as given


def test_folder_without_split_names_is_taken_whole(tmp_path: Path) -> None:
    write_parquet(tmp_path / "mine.parquet", mme_rows(1))
    assert load_rows(tmp_path, split="test") == mme_rows(1)


def test_missing_split_names_the_splits_found(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "validation-00000-of-00001.parquet", mme_rows(1))
    with pytest.raises(DataError) as err:
        load_rows(tmp_path, split="test")
    assert "split 'test'" in err.value.one_line()
    assert "splits found: validation" in err.value.one_line()


def test_nonexistent_path_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_rows(tmp_path / "nope", split="test")


def test_corrupt_parquet_is_a_data_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "data" / "test-00000-of-00001.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError) as err:
        load_rows(tmp_path, split="test")
    assert str(bad) in err.value.one_line()


def test_path_only_image_cells_resolve_beside_the_file(tmp_path: Path) -> None:
    rows = mme_rows(1)
    img = rows[0]["image"]
    (tmp_path / "data" / "imgs").mkdir(parents=True)
    (tmp_path / "data" / "imgs" / "a.png").write_bytes(img)
    for r in rows:
        r["image"] = {"bytes": None, "path": "imgs/a.png"}
    write_parquet(tmp_path / "data" / "test-0.parquet", rows)
    assert [r["image"] for r in load_rows(tmp_path, split="test")] == [img, img]

    rows[1]["image"] = {"bytes": None, "path": "imgs/missing.png"}
    write_parquet(tmp_path / "data" / "test-0.parquet", rows)
    with pytest.raises(DataError) as err:
        load_rows(tmp_path, split="test")
    line = err.value.one_line()
    assert "test-0.parquet row 1" in line and "'image'" in line and "missing.png" in line


def test_pil_cells_are_normalised_losslessly() -> None:
    im = Image.new("RGB", (5, 3), (1, 2, 3))
    im.putpixel((4, 2), (250, 0, 9))
    out = sources.normalise_image(im, base=Path("."), where="x", column="image")
    assert isinstance(out, bytes)
    assert Image.open(io.BytesIO(out)).convert("RGB").tobytes() == im.tobytes()


@pytest.mark.parametrize("hf_meta", [True, False])
def test_datasets_engine_gives_identical_rows(tmp_path: Path, hf_meta: bool) -> None:
    data = tmp_path / "ds"
    write_parquet(data / "data" / "test-00000-of-00002.parquet", mme_rows(2), hf_meta=hf_meta)
    write_parquet(data / "data" / "test-00001-of-00002.parquet", mme_rows(2, 2), hf_meta=hf_meta)
    write_parquet(data / "data" / "validation-00000-of-00001.parquet", mme_rows(1, 7), hf_meta=hf_meta)
    fast = load_split(data, split="test", engine="pyarrow")
    slow = load_split(data, split="test", engine="datasets", cache_dir=tmp_path / "cache")
    assert slow.rows == fast.rows
    assert len(slow.rows) == 8 and isinstance(slow.rows[0]["image"], bytes)
    assert [(s.path, s.start, s.stop) for s in slow.files] == [(s.path, s.start, s.stop) for s in fast.files]


def test_the_two_rows_of_an_image_share_one_bytes_object(tmp_path: Path) -> None:
    # MME stores each image once per question; one copy in memory is enough (same content, same object)
    write_parquet(tmp_path / "data" / "test-00000-of-00002.parquet", mme_rows(2))
    write_parquet(tmp_path / "data" / "test-00001-of-00002.parquet", mme_rows(1))  # image 0 again
    for engine in ("pyarrow", "datasets"):
        rows = load_rows(tmp_path, split="test", engine=engine, cache_dir=tmp_path / "cache")  # type: ignore[arg-type]
        assert rows == mme_rows(2) + mme_rows(1)
        assert rows[0]["image"] is rows[1]["image"] is rows[4]["image"] is rows[5]["image"]
        assert rows[2]["image"] is rows[3]["image"] and rows[2]["image"] is not rows[0]["image"]


@pytest.mark.parametrize("hf_meta", [True, False])
@pytest.mark.parametrize("engine", ["pyarrow", "datasets"])
def test_loading_without_images_leaves_the_image_columns_out(
    tmp_path: Path, engine: str, hf_meta: bool
) -> None:
    write_parquet(
        tmp_path / "data" / "validation-0.parquet", mmmu_rows("Art", 3), MMMU_IMAGES, hf_meta=hf_meta
    )
    full = load_split(tmp_path, split="validation", task="mmmu_val", engine=engine, cache_dir=tmp_path / "c")  # type: ignore[arg-type]
    text = load_split(
        tmp_path,
        split="validation",
        task="mmmu_val",
        engine=engine,
        cache_dir=tmp_path / "c",
        images=False,  # type: ignore[arg-type]
    )
    assert text.rows == [{k: v for k, v in r.items() if not k.startswith("image_")} for r in full.rows]
    assert [(f.start, f.stop) for f in text.files] == [(0, 3)]


def test_loading_without_images_checks_the_other_columns(tmp_path: Path) -> None:
    rows = mmmu_rows("Art", 3)
    rows[1]["image_1"] = None  # referred to by its question: only a run needs it
    rows[2]["image_1"] = b"not an image"  # only a run decodes it
    write_parquet(tmp_path / "validation-0.parquet", rows, MMMU_IMAGES)
    assert len(load_rows(tmp_path, split="validation", task="mmmu_val", images=False)) == 3
    with pytest.raises(DataError, match="image_1"):
        load_rows(tmp_path, split="validation", task="mmmu_val")
    rows[0]["options"] = "not a list"
    write_parquet(tmp_path / "validation-0.parquet", rows, MMMU_IMAGES)
    with pytest.raises(DataError, match=r"validation-0.parquet row 0.*'options'"):
        load_rows(tmp_path, split="validation", task="mmmu_val", images=False)
    bad = mmmu_rows("Art", 1)
    bad[0]["question"] = "What is <image 9>?"  # no such column, with or without images
    with pytest.raises(DataError, match="<image 9>"):
        check_rows(
            "mmmu_val", [{k: v for k, v in bad[0].items() if not k.startswith("image_")}], "m", images=False
        )


@pytest.mark.parametrize("engine", ["pyarrow", "datasets"])
def test_read_rows_fetches_some_rows_across_files_and_row_groups(tmp_path: Path, engine: str) -> None:
    first, second = mme_rows(3), mme_rows(2, start=3)
    f = write_parquet(tmp_path / "data" / "test-00000-of-00002.parquet", first)
    pq.write_table(pq.read_table(f), f, row_group_size=2)  # 3 row groups
    write_parquet(tmp_path / "data" / "test-00001-of-00002.parquet", second)
    assert pq.ParquetFile(f).metadata.num_row_groups == 3
    every = first + second  # storage order: 6 rows, then 4
    got = sources.read_rows(
        tmp_path, split="test", indices=[9, 0, 5, 4], engine=engine, cache_dir=tmp_path / "c"
    )  # type: ignore[arg-type]
    assert got == {0: every[0], 4: every[4], 5: every[5], 9: every[9]}
    assert sources.read_rows(tmp_path, split="test", indices=[], engine=engine) == {}  # type: ignore[arg-type]


def test_unknown_engine_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        load_rows(tmp_path, split="test", engine="polars")  # type: ignore[arg-type]


def test_hub_id_not_cached_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HF_HOME": str(tmp_path / "hf"),
        "HF_DATASETS_CACHE": str(tmp_path / "hf" / "datasets"),
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    code = (
        "from vlmparity.data.sources import load_rows\n"
        "from vlmparity.errors import DataError\n"
        "try:\n"
        "    load_rows('lmms-lab-encoder/MME', split='test')\n"
        "except DataError as e:\n"
        "    print('DATAERROR', e.one_line())\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path
    )
    line = out.stdout.strip()
    assert line.startswith("DATAERROR "), out.stderr[-2000:]
    assert "\n" not in line
    assert "'lmms-lab-encoder/MME'" in line and "not cached" in line
    assert "huggingface-cli download --repo-type dataset lmms-lab-encoder/MME --local-dir DIR" in line


def test_local_folder_wins_over_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_parquet(tmp_path / "lmms-lab" / "MME" / "data" / "test-00000-of-00001.parquet", mme_rows(1))
    monkeypatch.chdir(tmp_path)

    def no_hub(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the hub must not be consulted")

    monkeypatch.setattr(sources, "_load_hub", no_hub)
    loaded = load_split("lmms-lab/MME", split="test")
    assert loaded.kind == "local" and loaded.rows == mme_rows(1)


def test_hub_id_detection() -> None:
    assert sources.looks_like_hub_id("lmms-lab-encoder/MMMU")
    assert sources.looks_like_hub_id("lmms-lab/MME")
    assert not sources.looks_like_hub_id("/abs/MME")
    assert not sources.looks_like_hub_id("./MME")
    assert not sources.looks_like_hub_id("a/b/c")


# --- schema checks -----------------------------------------------------------------------------


def test_valid_rows_pass_and_load_rows_checks_when_given_a_task(tmp_path: Path) -> None:
    write_parquet(tmp_path / "data" / "test-00000-of-00001.parquet", mme_rows(2))
    assert len(load_rows(tmp_path, split="test", task="mme", verify_images=True)) == 4
    write_parquet(tmp_path / "m" / "validation-0.parquet", mmmu_rows("Art", 3), MMMU_IMAGES)
    assert len(load_rows(tmp_path / "m", split="validation", task="mmmu_val")) == 3


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    rows = [{k: v for k, v in r.items() if k != "category"} for r in mme_rows(1)]
    f = write_parquet(tmp_path / "data" / "test-0.parquet", rows)
    with pytest.raises(DataError) as err:
        load_rows(tmp_path, split="test", task="mme")
    line = err.value.one_line()
    assert str(f) in line and "'category' is missing" in line


def test_mistyped_column_names_row_and_id() -> None:
    rows = mme_rows(2)
    rows[3]["answer"] = 1
    with pytest.raises(DataError) as err:
        check_rows("mme", rows, "mme.parquet")
    line = err.value.one_line()
    assert "mme.parquet row 3" in line and "'answer'" in line and "color/0001.png" in line
    assert "int" in line


def test_empty_split() -> None:
    with pytest.raises(DataError, match="no rows"):
        check_rows("mme", [], "mme.parquet")


def test_duplicate_ids() -> None:
    rows = mmmu_rows("Art", 3)
    rows[2]["id"] = rows[0]["id"]
    with pytest.raises(DataError) as err:
        check_rows("mmmu_val", rows, "mmmu.parquet")
    assert "row 2" in err.value.one_line() and "duplicate" in err.value.one_line()


def test_mme_answer_and_pairs() -> None:
    rows = mme_rows(2)
    rows[1]["answer"] = "Maybe"
    with pytest.raises(DataError, match="expected Yes or No"):
        check_rows("mme", rows, "x")
    rows = mme_rows(2)
    rows[2]["answer"] = "yes."  # lmms-eval normalises case and dots: still valid
    check_rows("mme", rows, "x")
    rows = mme_rows(2)[:3]  # the second image lost its No question
    with pytest.raises(DataError, match="1 question"):
        check_rows("mme", rows, "x")


@pytest.mark.parametrize("options", ["cat, dog", "['cat', 'dog'", "{'a': 1}", "'cat'"])
def test_mmmu_options_must_be_a_list_literal(options: str) -> None:
    rows = mmmu_rows("Art", 2)
    rows[1]["options"] = options
    with pytest.raises(DataError) as err:
        check_rows("mmmu_val", rows, "mmmu.parquet")
    line = err.value.one_line()
    assert "mmmu.parquet row 1" in line and "'options'" in line and "validation_Art_2" in line


def test_mmmu_referenced_image_must_exist_and_id_must_carry_the_subject() -> None:
    rows = mmmu_rows("Art", 2)
    rows[0]["options"] = "['<image 2>', 'dog']"
    with pytest.raises(DataError, match=r"'image_2'.*<image 2>"):
        check_rows("mmmu_val", rows, "m")
    rows = mmmu_rows("Art", 2)
    rows[0]["id"] = "Art1"
    with pytest.raises(DataError, match="'id'"):
        check_rows("mmmu_val", rows, "m")


def test_unreadable_image_header_names_file_column_row(tmp_path: Path) -> None:
    rows = mmmu_rows("Art", 3)
    rows[2]["image_1"] = b"not an image at all"
    write_parquet(tmp_path / "validation-0.parquet", rows, MMMU_IMAGES)
    with pytest.raises(DataError) as err:
        load_rows(tmp_path, split="validation", task="mmmu_val")
    line = err.value.one_line()
    assert "validation-0.parquet row 2" in line and "'image_1'" in line and "validation_Art_3" in line


def test_truncated_image_needs_verify_images() -> None:
    rows = mme_rows(2)
    big = io.BytesIO()
    Image.effect_noise((64, 64), 40).convert("RGB").save(big, format="PNG")
    truncated = big.getvalue()[: len(big.getvalue()) // 2]  # header intact, pixels cut
    rows[2]["image"] = rows[3]["image"] = truncated
    check_rows("mme", rows, "x")  # the cheap header check cannot see it
    with pytest.raises(DataError) as err:
        check_rows("mme", rows, "x", verify_images=True)
    assert "x row 2" in err.value.one_line() and "'image'" in err.value.one_line()


def test_schema_lookup() -> None:
    assert schema_for("mme").id_columns == ("question_id", "question")
    assert "image_7" in schema_for("mmmu_val").image_columns
    with pytest.raises(ConfigError):
        schema_for("vqav2")


# --- fingerprints ------------------------------------------------------------------------------


def sample(i: str, target: str, img: bytes = b"x") -> Sample:
    return Sample("mmmu_val", i, 0, target, "Art", i, (ImageData.from_bytes(img),))


def test_fingerprint_hash_is_over_ids_and_answers_in_order() -> None:
    samples = [sample("a", "A"), sample("b", "B")]
    fp = dataset_fingerprint("src", "validation", samples, revision="abc")
    expected = hashlib.sha256(b'["a","A"]\n["b","B"]\n').hexdigest()  # the documented line format
    assert fp["content_sha256"] == expected
    assert fp["num_rows"] == 2 and fp["revision"] == "abc" and fp["of"] == "samples"
    assert json.loads(json.dumps(fp)) == fp
    swapped = dataset_fingerprint("src", "validation", samples[::-1])
    assert swapped["content_sha256"] != expected
    assert not same_data(fp, swapped)
    other_image = dataset_fingerprint("src", "validation", [sample("a", "A", b"y"), samples[1]])
    assert other_image["content_sha256"] == expected and not same_data(fp, other_image)


def test_fingerprint_of_samples_loaded_without_images_leaves_the_images_out() -> None:
    from dataclasses import replace

    full = [sample("a", "A"), sample("b", "B")]
    text = [replace(s, images=(), omitted_images=1) for s in full]
    fp_full = dataset_fingerprint("src", "validation", full)
    fp_text = dataset_fingerprint("src", "validation", text)
    # an empty image list per sample would be another images_sha256: no claim is made instead
    assert "images_sha256" in fp_full and "images_sha256" not in fp_text
    assert fp_text["content_sha256"] == fp_full["content_sha256"]
    assert same_data(fp_full, fp_text) and same_data(fp_text, fp_full)
    swapped = dataset_fingerprint("src", "validation", text[::-1])
    assert not same_data(fp_full, swapped)


def test_fingerprint_of_rows_uses_the_dataset_ids() -> None:
    rows = mme_rows(1)
    fp = dataset_fingerprint("x", "test", rows)
    line = [
        json.dumps([["color/0000.png", rows[0]["question"]], "Yes"], separators=(",", ":")),
        json.dumps([["color/0000.png", rows[1]["question"]], "No"], separators=(",", ":")),
    ]
    assert fp["of"] == "rows"
    assert fp["content_sha256"] == hashlib.sha256(("\n".join(line) + "\n").encode()).hexdigest()


def test_local_revision_ignores_folder_and_mtime(tmp_path: Path) -> None:
    f = write_parquet(tmp_path / "a" / "data" / "test-00000-of-00001.parquet", mme_rows(1))
    copy = tmp_path / "b" / "data" / f.name
    copy.parent.mkdir(parents=True)
    shutil.copyfile(f, copy)
    os.utime(copy, (1, 1))
    rev_a = load_split(tmp_path / "a", split="test").revision
    assert rev_a == load_split(tmp_path / "b", split="test").revision
    assert rev_a == "sha256:" + files_sha256([f])
    write_parquet(copy, mme_rows(1, start=3))
    assert load_split(tmp_path / "b", split="test").revision != rev_a


# --- hub ids through datasets (no network: load_dataset is replaced) ---------------------------


def fake_hub(
    monkeypatch: pytest.MonkeyPatch, rows: list[dict[str, Any]], fail: Exception | None = None
) -> list[Any]:
    import datasets

    calls: list[Any] = []
    features = datasets.Features(
        {k: datasets.Image() if k == "image" else datasets.Value("string") for k in rows[0]}
    )
    ds = datasets.Dataset.from_dict(
        {k: [{"bytes": r[k], "path": None} if k == "image" else r[k] for r in rows] for k in rows[0]},
        features=features,
    )

    def load_dataset(repo_id: str, **kwargs: Any) -> Any:
        calls.append((repo_id, kwargs))
        if fail is not None:
            raise fail
        return ds

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setattr(sources, "hub_reachable", lambda repo_id, timeout=5.0: True)  # the Hub "answers"
    return calls


def test_hub_id_rows_are_normalised_like_local_ones(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    rows = mme_rows(2)
    calls = fake_hub(monkeypatch, rows)
    loaded = load_split("lmms-lab-encoder/MME", split="test", task="mme")
    assert calls[0][0] == "lmms-lab-encoder/MME" and calls[0][1]["split"] == "test"
    assert loaded.kind == "hub" and loaded.rows == rows  # decoded PIL images never reach the rows
    assert loaded.locate(3) == "lmms-lab-encoder/MME (split test) row 3"


def test_hub_unknown_split_is_a_data_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    fake_hub(monkeypatch, mme_rows(1), ValueError("Unknown split \"dev\". Should be one of ['test']."))
    with pytest.raises(DataError, match="Unknown split"):
        load_rows("lmms-lab/MME", split="dev")


def test_hub_commit_is_read_from_the_cache_path() -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"

    from types import SimpleNamespace

    cached = SimpleNamespace(
        cache_files=[{"filename": f"/c/lmms-lab___mme/default/0.0.0/{sha}/mme-test.arrow"}]
    )
    not_hub = SimpleNamespace(cache_files=[{"filename": "/c/parquet/default-1a2b/0.0.0/abc/x.arrow"}])
    assert sources._hub_commit(cached) == sha
    assert sources._hub_commit(not_hub) is None


def test_open_questions_do_not_show_options_so_their_images_are_not_needed() -> None:
    rows = mmmu_rows("Art", 2)
    rows[0]["question_type"] = "open"
    rows[0]["options"] = "['<image 3>']"  # never part of an open question's prompt
    check_rows("mmmu_val", rows, "m")
    rows[0]["question_type"] = "multiple-choice"
    with pytest.raises(DataError, match="'image_3'"):
        check_rows("mmmu_val", rows, "m")


# --- what `vlmparity synth` writes ---------------------------------------------------------------


def test_synthetic_sets_pass_the_schema_and_both_engines_agree(
    synth_mme_small: Path, synth_mmmu_small: Path, tmp_path: Path
) -> None:
    mme = load_split(synth_mme_small, split="test", task="mme", verify_images=True)
    mmmu = load_split(synth_mmmu_small, split="validation", task="mmmu_val", verify_images=True)
    assert len(mme.rows) == 56 and len(mmmu.rows) == 60
    again = load_rows(synth_mmmu_small, split="validation", engine="datasets", cache_dir=tmp_path)
    assert again == mmmu.rows
