"""Image encoding: lmms-eval's chat-path data URL (decode, RGB, PNG), caching, parallel prefetch, tiling."""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image

from vlmparity.data import images as images_mod
from vlmparity.data.images import EncodeOptions, ImageEncoder, decode_rgb, tile_images, tile_layout
from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import ImageData, Sample


def photo(w: int = 64, h: int = 48, seed: int = 0, fmt: str = "JPEG", mode: str = "RGB", **kw: Any) -> bytes:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    arr = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (w + h)], -1) + rng.normal(0, 25, (h, w, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).convert(mode)
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def url_bytes(url: str, mime: str = "image/png") -> bytes:
    prefix = f"data:{mime};base64,"
    assert url.startswith(prefix)
    return base64.b64decode(url[len(prefix) :])


def pixels(data: bytes) -> tuple[str, tuple[int, int], bytes]:
    im = Image.open(io.BytesIO(data))
    return im.mode, im.size, im.tobytes()


def test_png_data_url_carries_the_exact_rgb_pixels_of_the_source() -> None:
    src = photo(fmt="JPEG", quality=90)
    out = url_bytes(ImageEncoder().data_url(ImageData.from_bytes(src)))
    expected = Image.open(io.BytesIO(src)).convert("RGB")
    assert out[:8] == b"\x89PNG\r\n\x1a\n"
    assert pixels(out) == ("RGB", expected.size, expected.tobytes())


def test_default_level_reproduces_lmms_eval_bytes_and_level_1_the_same_pixels() -> None:
    src = photo(96, 64, seed=2)
    # lmms-eval: doc_to_visual's .convert("RGB"), then image.save(buf, format="PNG") with default options
    lmms = io.BytesIO()
    Image.open(io.BytesIO(src)).convert("RGB").save(lmms, format="PNG")
    img = ImageData.from_bytes(src)
    exact = url_bytes(ImageEncoder(compress_level=None).data_url(img))
    fast = url_bytes(ImageEncoder(compress_level=1).data_url(img))
    assert exact == lmms.getvalue()
    assert fast != exact  # a different zlib level gives different bytes ...
    assert pixels(fast) == pixels(exact)  # ... but PNG is lossless: the same pixels


def test_every_png_level_carries_the_same_pixels() -> None:
    """`--png-level`: 0 (stored) to 9 trade body size for CPU; the pixels the server decodes never change."""
    src = photo(96, 64, seed=3)
    expected = Image.open(io.BytesIO(src)).convert("RGB")
    img = ImageData.from_bytes(src)
    out = {level: url_bytes(ImageEncoder(compress_level=level).data_url(img)) for level in (0, 1, 6, 9)}
    for data in out.values():
        assert pixels(data) == ("RGB", expected.size, expected.tobytes())
    # level 0 stores the pixels uncompressed: bigger than every compressing level, at least the raw size
    assert len(out[0]) > max(len(out[1]), len(out[6]), len(out[9]))
    assert len(out[0]) >= 96 * 64 * 3
    # 6 is zlib's default, Pillow's when no level is given: lmms-eval's exact bytes
    assert out[6] == url_bytes(ImageEncoder(compress_level=None).data_url(img))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK"])
def test_other_modes_are_converted_to_rgb_like_lmms_eval(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    src = photo(mode=mode, fmt=fmt)
    expected = Image.open(io.BytesIO(src)).convert("RGB")
    out = url_bytes(ImageEncoder().data_url(ImageData.from_bytes(src)))
    assert pixels(out) == ("RGB", expected.size, expected.tobytes())


def test_exif_orientation_is_applied_as_datasets_does() -> None:
    base = Image.open(io.BytesIO(photo(40, 20, fmt="PNG")))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    buf = io.BytesIO()
    base.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    out = decode_rgb(buf.getvalue())
    assert out.size == (20, 40)  # width and height swapped


def test_jpeg_option() -> None:
    enc = ImageEncoder("jpeg", quality=70)
    assert enc.mime == "image/jpeg"
    out = url_bytes(enc.data_url(ImageData.from_bytes(photo(fmt="PNG"))), "image/jpeg")
    assert Image.open(io.BytesIO(out)).format == "JPEG"
    assert Image.open(io.BytesIO(out)).size == (64, 48)


@pytest.mark.parametrize(
    "kwargs", [{"format": "webp"}, {"compress_level": 10}, {"quality": 0}, {"parallel": "gpu"}]
)
def test_bad_options_are_config_errors(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        ImageEncoder(**kwargs)


def test_each_distinct_image_is_encoded_once() -> None:
    enc = ImageEncoder()
    data = photo(seed=1)
    a, b = ImageData.from_bytes(data), ImageData.from_bytes(bytes(data))  # equal content, two objects
    urls = {enc(a), enc(b), enc.data_url(a)}
    assert len(urls) == 1
    assert enc.stats()["encoded"] == 1 and enc.stats()["hits"] == 2


def test_concurrent_callers_share_one_encoding(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = images_mod._encode_job

    def slow(data: bytes, options: EncodeOptions, label: str | None = None) -> tuple[bool, str]:
        calls.append(1)
        time.sleep(0.05)  # widen the window in which the other threads arrive
        return real(data, options, label)

    monkeypatch.setattr(images_mod, "_encode_job", slow)
    enc = ImageEncoder()
    img = ImageData.from_bytes(photo(seed=4))
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(enc(img))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and len(results) == 8 and len(set(results)) == 1


@pytest.mark.parametrize("parallel", ["thread", "process"])
def test_prefetch_encodes_distinct_images_in_parallel(parallel: str) -> None:
    imgs = [ImageData.from_bytes(photo(seed=i)) for i in range(5)]
    samples = [Sample("mme", f"s{i}", i, "Yes", "g", f"c{i // 2}", (imgs[i // 2],)) for i in range(10)]
    with ImageEncoder(parallel=parallel, workers=2) as enc:  # type: ignore[arg-type]
        assert enc.prefetch(samples) == 5
        assert enc.prefetch(imgs) == 0
        urls = [enc.data_url(s.images[0]) for s in samples]
        assert enc.stats()["encoded"] == 5 and enc.stats()["hits"] == 10
    serial = ImageEncoder()
    assert urls == [serial(s.images[0]) for s in samples]  # same bytes whichever way


def test_corrupt_image_is_a_data_error_naming_the_sample() -> None:
    bad = ImageData.from_bytes(b"\xff\xd8\xff garbage")
    good = ImageData.from_bytes(photo())
    enc = ImageEncoder(workers=2)
    assert enc.prefetch([Sample("mme", "color/0007.png q1", 0, "Yes", "color", "c", (bad,)), good]) == 2
    with pytest.raises(DataError) as err:
        enc.data_url(bad, sample_id="color/0007.png q1")
    assert "sample 'color/0007.png q1'" in err.value.one_line() and "cannot decode" in err.value.one_line()
    with pytest.raises(DataError):
        enc(bad)  # remembered, not retried
    assert enc.stats()["failed"] == 1 and enc.stats()["encoded"] == 2
    assert enc(good).startswith("data:image/png;base64,")


def test_cache_is_bounded_lru() -> None:
    imgs = [ImageData.from_bytes(photo(seed=i)) for i in range(3)]
    one = len(ImageEncoder()(imgs[0]))
    enc = ImageEncoder(max_cache_bytes=int(one * 2.5))
    for img in imgs:
        enc(img)
    assert enc.stats()["cached"] == 2
    enc(imgs[0])  # evicted first, so encoded again
    assert enc.stats()["encoded"] == 4 and enc.stats()["evicted"] == 2


def test_release_drops_data_urls_and_a_later_need_encodes_again() -> None:
    imgs = [ImageData.from_bytes(photo(seed=i)) for i in range(3)]
    enc = ImageEncoder()
    urls = [enc(img) for img in imgs]
    size = sum(len(u) for u in urls)
    assert enc.stats()["cached_bytes"] == size
    assert enc.release([imgs[0].key, imgs[2].key, "not-cached"]) == 2
    assert enc.stats()["cached"] == 1 and enc.stats()["cached_bytes"] == len(urls[1])
    assert enc.stats()["evicted"] == 0  # released, not evicted by the cap
    assert enc(imgs[0]) == urls[0]  # the same URL, encoded a second time
    assert enc.stats()["encoded"] == 4 and enc.stats()["hits"] == 0


def test_the_default_cache_does_not_hold_a_whole_dataset() -> None:
    # a whole MME is ~2.5 GB of data URLs at level 1: the cache must stay far below the 1 GiB RSS goal
    from vlmparity.data.images import DEFAULT_CACHE_BYTES

    assert ImageEncoder().max_cache_bytes == DEFAULT_CACHE_BYTES <= 256 * 1024**2


def solid(color: tuple[int, int, int], size: tuple[int, int]) -> ImageData:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return ImageData.from_bytes(buf.getvalue())


def test_tile_layout_by_hand() -> None:
    # 3 images -> 2 columns, 2 rows; column widths 4 and 2, row heights 5 and 3
    assert tile_layout([(4, 3), (2, 5), (3, 3)]) == ((6, 8), [(0, 0), (4, 0), (0, 5)])
    assert tile_layout([(7, 9)]) == ((7, 9), [(0, 0)])
    # 5 images -> 3 columns, 2 rows
    assert tile_layout([(1, 1)] * 5) == ((3, 2), [(0, 0), (1, 0), (2, 0), (0, 1), (1, 1)])


def test_tile_images_pixels_and_determinism() -> None:
    red, green, blue = solid((255, 0, 0), (4, 3)), solid((0, 255, 0), (2, 5)), solid((0, 0, 255), (3, 3))
    tiled = tile_images([red, green, blue])
    im = Image.open(io.BytesIO(tiled.data)).convert("RGB")
    assert im.size == (6, 8)
    assert im.getpixel((0, 0)) == (255, 0, 0) and im.getpixel((3, 2)) == (255, 0, 0)
    assert im.getpixel((4, 0)) == (0, 255, 0) and im.getpixel((5, 4)) == (0, 255, 0)
    assert im.getpixel((0, 5)) == (0, 0, 255) and im.getpixel((2, 7)) == (0, 0, 255)
    assert im.getpixel((3, 4)) == (255, 255, 255)  # below the red image: background
    assert im.getpixel((5, 7)) == (255, 255, 255)  # the empty fourth cell
    assert tile_images([red, green, blue]) == tiled
    with pytest.raises(DataError, match="sample 'x'"):
        tile_images([red, ImageData.from_bytes(b"nope")], sample_id="x")


# -------------------------------------------------------------------- images over Pillow's bomb limits


@pytest.fixture
def small_pillow_limit(monkeypatch: pytest.MonkeyPatch) -> int:
    """Pillow's limits at 1000 px (warning) / 2000 px (error), so tiny images stand for 89 / 179 Mpx.
    (Which images were reported is owned by a `LargeImageNotices`: each test starts with fresh ones.)"""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    return 1000


def test_large_image_notice_wording() -> None:
    # Pillow's own limit: 1024 * 1024 * 1024 // 4 // 3 = 89478485 pixels; the hard limit is twice that
    text = images_mod.large_image_notice((10000, 10000), 89478485, "sample 'q'")
    assert text == (
        "sample 'q': 10000x10000 image (100 Mpx) is over Pillow's decompression-bomb warning limit of "
        "89.5 Mpx; decoding it anyway (over 179 Mpx is refused)"
    )


def test_image_over_the_warning_limit_is_one_notice_not_pillows_warning(
    small_pillow_limit: int, caplog: pytest.LogCaptureFixture
) -> None:
    import warnings

    from vlmparity.data.schema import image_problem

    data = photo(40, 40, seed=11, fmt="PNG")  # 1600 px: over 1000, under 2000
    notices = images_mod.LargeImageNotices()  # a run's: shared by its data check and its encoder
    enc = ImageEncoder(workers=1, notices=notices)
    with warnings.catch_warnings(record=True) as caught, caplog.at_level("WARNING"):
        warnings.simplefilter("always")  # Pillow's warning would be recorded, however often
        problem = image_problem(data, full=True, label="row 4, column 'image'", notices=notices)
        assert problem is None  # the load-time check
        url = enc.data_url(ImageData.from_bytes(data), sample_id="q4")  # the request, later
        enc.prefetch([ImageData.from_bytes(data)])
        tile_images([ImageData.from_bytes(data)], sample_id="q4", notices=notices)
    assert url.startswith("data:image/png;base64,")  # encoded as usual
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    notes = [r.getMessage() for r in caplog.records]
    assert notes == [
        "vlmparity: note: row 4, column 'image': 40x40 image (0.0016 Mpx) is over Pillow's decompression-bomb "
        "warning limit of 0.001 Mpx; decoding it anyway (over 0.002 Mpx is refused)"
    ]  # once per distinct image, naming where it was first seen


def test_encoder_notice_names_the_sample(small_pillow_limit: int, caplog: pytest.LogCaptureFixture) -> None:
    enc = ImageEncoder(workers=2)
    a, b = (
        ImageData.from_bytes(photo(40, 40, seed=12, fmt="PNG")),
        ImageData.from_bytes(photo(30, 40, seed=13)),
    )
    sample = Sample("mme", "q7", 7, "Yes", "color", "q7", (a, b))
    with caplog.at_level("WARNING"):
        enc.prefetch([sample])
    notes = sorted(r.getMessage() for r in caplog.records)
    assert len(notes) == 2
    assert notes[0].startswith("vlmparity: note: sample 'q7': 30x40 image (0.0012 Mpx)")
    assert notes[1].startswith("vlmparity: note: sample 'q7': 40x40 image (0.0016 Mpx)")


def test_image_over_the_hard_limit_stays_a_data_error(small_pillow_limit: int) -> None:
    from vlmparity.data.schema import image_problem

    data = photo(50, 50, seed=14, fmt="PNG")  # 2500 px: over twice the limit
    problem = image_problem(data, label="row 0")
    assert problem is not None and problem.startswith("cannot decode image (DecompressionBombError: ")
    with pytest.raises(DataError, match="DecompressionBombError"):
        ImageEncoder().data_url(ImageData.from_bytes(data), sample_id="q0")
