"""Image encoding for requests: dataset image bytes -> the data URL lmms-eval's chat path sends.

lmms-eval 0.7.3 (openai chat backend) gets each image from `datasets` (opened with Pillow, EXIF
orientation applied when the tag is present), calls `.convert("RGB")` in the task's `doc_to_visual`,
saves it with Pillow as PNG with default options and sends `data:image/png;base64,...`. `ImageEncoder`
does the same steps; the only knob that differs by default is the PNG compression level: PNG is
lossless at every level, so the server decodes exactly the same RGB pixels, and level 1 encodes about
three times faster than Pillow's default 6 (`compress_level=None` gives lmms-eval's bytes exactly).
Each distinct image (by `ImageData.key`) is encoded once per run and shared by all endpoints; the encoder
keeps a data URL only while requests that need it are still to be built (the runner releases it, and a
size cap evicts the least recently used), so memory does not grow with the dataset.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import math
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from vlmparity.errors import ConfigError, DataError
from vlmparity.tasks.base import ImageData, Sample

if TYPE_CHECKING:
    from PIL import Image as PILImage

ImageFormat = Literal["png", "jpeg"]
Parallel = Literal["thread", "process"]

MIME = {"png": "image/png", "jpeg": "image/jpeg"}
# A whole MME at level 1 is ~2.5 GB of data URLs, but requests are built in document order a few dozen
# samples ahead of sending (a few to ~60 MB of URLs): beyond this cap the least recently used go, and
# a rare miss (an endpoint far behind another, a retry in a later pass) encodes that image again.
DEFAULT_CACHE_BYTES = 128 * 1024**2

log = logging.getLogger(__name__)


class LargeImageNotices:
    """The large images already reported, so each distinct one gets one notice for whoever owns this:
    a run shares one between its data check and its encoder; an `ImageEncoder` has its own by default."""

    def __init__(self) -> None:
        self._seen: set[str] = set()  # sha256 of the images reported
        self._lock = threading.Lock()

    def first(self, key: str) -> bool:
        """True the first time `key` is seen (then report it), False after."""
        with self._lock:
            new = key not in self._seen
            self._seen.add(key)
            return new


class _Quiet(LargeImageNotices):
    """Reports nothing: for a decode whose caller gave the notice already (the encoder's jobs)."""

    def first(self, key: str) -> bool:
        return False


@dataclass(frozen=True)
class EncodeOptions:
    """How images are encoded: PNG (lossless, lmms-eval's default) or JPEG (lmms-eval's JPG option)."""

    format: ImageFormat = "png"
    compress_level: int | None = 1  # PNG only; None = Pillow's default (6), lmms-eval's exact bytes
    quality: int = 85  # JPEG only; lmms-eval's LMMS_IMAGE_JPEG_QUALITY default

    def __post_init__(self) -> None:
        if self.format not in MIME:
            raise ConfigError(f"unknown image format {self.format!r}", hint="use png or jpeg")
        if self.compress_level is not None and not 0 <= self.compress_level <= 9:
            raise ConfigError(f"PNG compress level {self.compress_level} out of range", hint="use 0..9")
        if not 1 <= self.quality <= 100:
            raise ConfigError(f"JPEG quality {self.quality} out of range", hint="use 1..100")

    @property
    def mime(self) -> str:
        return MIME[self.format]


def _silence_pillow_bomb_warning() -> None:
    """Ignore Pillow's DecompressionBombWarning (two lines pointing into Pillow); `open_image` says it in one.

    A process-wide filter rather than `warnings.catch_warnings`, which swaps global state and is not
    thread-safe: images are decoded on a thread pool. Pillow's hard limit (DecompressionBombError) stays.
    """
    from PIL import Image

    # first in the list, so that a broader filter added later ("always", "error") does not bring it back
    if warnings.filters[:1] != [("ignore", None, Image.DecompressionBombWarning, None, 0)]:
        warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)


def open_image(
    data: bytes, *, label: str | None = None, notices: LargeImageNotices | None = None
) -> PILImage.Image:
    """`Image.open` (header only), with a notice for an image above Pillow's decompression-bomb warning
    limit instead of Pillow's multi-line warning: once per distinct image of `notices` (without it, every
    time); `label` says where the image is (a row, a sample).
    """
    from PIL import Image

    _silence_pillow_bomb_warning()
    image: PILImage.Image = Image.open(io.BytesIO(data))
    limit = Image.MAX_IMAGE_PIXELS
    width, height = image.size
    large = limit is not None and max(1, width) * max(1, height) > limit
    if large and (notices is None or notices.first(hashlib.sha256(data).hexdigest())):
        log.warning("vlmparity: note: %s", large_image_notice((width, height), int(limit or 0), label))
    return image


def large_image_notice(size: tuple[int, int], limit: int, label: str | None = None) -> str:
    """One line: this image is over Pillow's warning limit (`limit` pixels) and is decoded anyway."""
    width, height = size
    where = f"{label}: " if label else ""
    return (
        f"{where}{width}x{height} image ({width * height / 1e6:.3g} Mpx) is over Pillow's decompression-bomb "
        f"warning limit of {limit / 1e6:.3g} Mpx; decoding it anyway (over {2 * limit / 1e6:.3g} Mpx is refused)"
    )


def decode_rgb(
    data: bytes, *, label: str | None = None, notices: LargeImageNotices | None = None
) -> PILImage.Image:
    """Decode image bytes to the RGB image lmms-eval hands to its encoder.

    Same steps as `datasets.Image.decode_example` (open, load, EXIF transpose when the orientation tag
    is present) followed by the tasks' `.convert("RGB")`. `label` and `notices`: see `open_image`.
    """
    from PIL import ExifTags, ImageOps

    image = open_image(data, label=label, notices=notices)
    image.load()
    if image.getexif().get(ExifTags.Base.Orientation) is not None:
        image = ImageOps.exif_transpose(image)
    return image.convert("RGB")


def encode_rgb(image: PILImage.Image, options: EncodeOptions) -> bytes:
    """Encode an RGB image as lmms-eval's `image.save(buf, format=...)` does, with our level/quality."""
    buf = io.BytesIO()
    if options.format == "png":
        kwargs: dict[str, Any] = {}
        if options.compress_level is not None:
            kwargs["compress_level"] = options.compress_level
        image.save(buf, format="PNG", **kwargs)
    else:
        image.save(buf, format="JPEG", quality=options.quality)
    return buf.getvalue()


def encode_bytes(
    data: bytes, options: EncodeOptions, *, label: str | None = None, notices: LargeImageNotices | None = None
) -> bytes:
    """Dataset image bytes -> encoded request image bytes (decode, RGB, encode)."""
    return encode_rgb(decode_rgb(data, label=label, notices=notices), options)


def to_data_url(encoded: bytes, mime: str) -> str:
    """A base64 data URL."""
    return f"data:{mime};base64,{base64.b64encode(encoded).decode('ascii')}"


def _encode_job(data: bytes, options: EncodeOptions, label: str | None = None) -> tuple[bool, str]:
    """Worker: (True, data URL) or (False, why it failed). Never raises, so it pickles cleanly.

    Silent about large images: the encoder gave that notice from the header before (`_notice`)."""
    try:
        return True, to_data_url(encode_bytes(data, options, label=label, notices=_Quiet()), options.mime)
    except Exception as exc:  # Pillow raises OSError, ValueError, SyntaxError, DecompressionBombError...
        return False, f"{type(exc).__name__}: {exc}"


def _where(label: str | None) -> str:
    return f"sample {label!r}: " if label else ""


def _sample_label(sample_id: str | None) -> str | None:
    return f"sample {sample_id!r}" if sample_id else None


class ImageEncoder:
    """Thread-safe cache of data URLs by `ImageData.key`; `prefetch` encodes many images in parallel.

    Use `encoder(image)` / `encoder.data_url(image)` as `build_request`'s `encode_image`. Pillow releases
    the GIL while decoding and compressing, so threads use both cores and beat processes here (no
    copying of multi-MB results between processes); `parallel="process"` is there for other machines.
    """

    def __init__(
        self,
        format: ImageFormat = "png",
        *,
        compress_level: int | None = 1,
        quality: int = 85,
        workers: int | None = None,
        parallel: Parallel = "thread",
        max_cache_bytes: int = DEFAULT_CACHE_BYTES,
        notices: LargeImageNotices | None = None,
    ) -> None:
        if parallel not in ("thread", "process"):
            raise ConfigError(f"unknown parallel mode {parallel!r}", hint="use thread or process")
        self.options = EncodeOptions(format=format, compress_level=compress_level, quality=quality)
        self.workers = max(1, workers if workers is not None else (os.cpu_count() or 1))
        self.parallel: Parallel = parallel
        self.max_cache_bytes = max_cache_bytes
        # one notice per distinct large image: shared with whoever checked the data first (a run), else own
        self.notices = notices if notices is not None else LargeImageNotices()
        self._lock = threading.Lock()
        self._cache: OrderedDict[str, str] = OrderedDict()
        self._cache_bytes = 0
        self._inflight: dict[str, Future[tuple[bool, str]]] = {}
        self._failed: dict[str, str] = {}
        self._pool: Executor | None = None
        self.hits = 0
        self.encoded = 0
        self.evicted = 0  # dropped by the size cap (not by `release`): a high count means re-encoding

    @property
    def mime(self) -> str:
        return self.options.mime

    def __call__(self, image: ImageData) -> str:
        return self.data_url(image)

    def data_url(self, image: ImageData, *, sample_id: str | None = None) -> str:
        """The data URL of `image`, encoded at most once per encoder; DataError if it cannot be decoded."""
        with self._lock:
            cached = self._cache.get(image.key)
            if cached is not None:
                self._cache.move_to_end(image.key)
                self.hits += 1
                return cached
            if image.key in self._failed:
                raise self._error(image, sample_id, self._failed[image.key])
            future = self._inflight.get(image.key)
            owner = future is None
            if future is None:
                future = Future()
                self._inflight[image.key] = future
        if owner:
            self._notice(image, _sample_label(sample_id))
            self._finish(image.key, _encode_job(image.data, self.options, _sample_label(sample_id)), future)
        ok, out = future.result()
        if not ok:
            raise self._error(image, sample_id, out)
        return out

    def _notice(self, image: ImageData, label: str | None) -> None:
        """The large-image notice, from the header alone, once per distinct image of `self.notices`
        (worker processes could not share them); the encoding job itself stays silent."""
        try:
            open_image(image.data, label=label, notices=self.notices).close()
        except Exception:  # Pillow raises many types; the encoding job fails with the reason
            return

    def _error(self, image: ImageData, sample_id: str | None, why: str) -> DataError:
        return DataError(
            f"{_where(sample_id)}cannot decode image {image.key[:12]} ({len(image.data)} bytes): {why}",
            hint="the dataset file is damaged; re-download it or drop that row",
        )

    def _finish(self, key: str, result: tuple[bool, str], future: Future[tuple[bool, str]]) -> None:
        ok, out = result
        with self._lock:
            self._inflight.pop(key, None)
            self.encoded += 1
            if ok:
                self._cache[key] = out
                self._cache_bytes += len(out)
                while self._cache_bytes > self.max_cache_bytes and len(self._cache) > 1:
                    _, old = self._cache.popitem(last=False)
                    self._cache_bytes -= len(old)
                    self.evicted += 1
            else:
                self._failed[key] = out
        future.set_result(result)

    def prefetch(self, items: Iterable[ImageData | Sample]) -> int:
        """Encode the distinct, not yet cached images of `items` in parallel; returns how many it encoded.

        Failures are remembered and raised (naming the sample) by `data_url`, so one bad image does not
        stop the others. Prefetch in windows smaller than the cache (e.g. the next few hundred samples).
        """
        todo: list[tuple[ImageData, Future[tuple[bool, str]], str | None]] = []
        with self._lock:
            for item in items:
                label = _sample_label(item.id) if isinstance(item, Sample) else None
                for image in item.images if isinstance(item, Sample) else (item,):
                    key = image.key
                    if key in self._cache or key in self._inflight or key in self._failed:
                        continue
                    future: Future[tuple[bool, str]] = Future()
                    self._inflight[key] = future
                    todo.append((image, future, label))
        if not todo:
            return 0
        for image, _, label in todo:
            self._notice(image, label)
        if len(todo) == 1 or self.workers == 1:
            for image, future, label in todo:
                self._finish(image.key, _encode_job(image.data, self.options, label), future)
            return len(todo)
        pool = self._executor()
        jobs = {
            pool.submit(_encode_job, image.data, self.options, label): (image, future, label)
            for image, future, label in todo
        }
        # cache each image as soon as it is ready: a caller may be waiting for that one
        for job in as_completed(jobs):
            image, future, label = jobs[job]
            try:
                result = job.result()
            except Exception:  # a broken process pool: encode here rather than lose the image
                result = _encode_job(image.data, self.options, label)
            self._finish(image.key, result, future)
        return len(todo)

    def _executor(self) -> Executor:
        with self._lock:
            if self._pool is None:
                if self.parallel == "process":
                    import multiprocessing

                    # spawn, not fork: the caller may run threads (HTTP clients, asyncio)
                    self._pool = ProcessPoolExecutor(
                        self.workers, mp_context=multiprocessing.get_context("spawn")
                    )
                else:
                    self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="vlmparity-encode")
            return self._pool

    def release(self, keys: Iterable[str]) -> int:
        """Drop these images' data URLs now (every request that needs them is built); returns how many.

        A later need encodes the image again. Failures stay remembered.
        """
        dropped = 0
        with self._lock:
            for key in keys:
                url = self._cache.pop(key, None)
                if url is not None:
                    self._cache_bytes -= len(url)
                    dropped += 1
        return dropped

    def stats(self) -> dict[str, int]:
        """Counters: encodings run (failed ones included), cache hits, images and bytes cached, images the
        size cap evicted, failures."""
        with self._lock:
            return {
                "encoded": self.encoded,
                "hits": self.hits,
                "cached": len(self._cache),
                "cached_bytes": self._cache_bytes,
                "evicted": self.evicted,
                "failed": len(self._failed),
            }

    def close(self) -> None:
        """Stop the worker pool (the cache stays usable)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True)

    def __enter__(self) -> ImageEncoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tile_layout(sizes: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """Canvas size and top-left position of each image for `tile_images` (see there)."""
    n = len(sizes)
    cols = math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    col_w = [max((sizes[i][0] for i in range(c, n, cols)), default=0) for c in range(cols)]
    row_h = [max(h for _, h in sizes[r * cols : (r + 1) * cols]) for r in range(rows)]
    positions = [(sum(col_w[: i % cols]), sum(row_h[: i // cols])) for i in range(n)]
    return (sum(col_w), sum(row_h)), positions


def tile_images(
    images: Sequence[ImageData],
    *,
    background: tuple[int, int, int] = (255, 255, 255),
    sample_id: str | None = None,
    notices: LargeImageNotices | None = None,
) -> ImageData:
    """Tile several images into one PNG, for servers that take one image per request ("merge" policy).

    Layout: a grid of ceil(sqrt(n)) columns filled row by row in request order; each column is as wide
    as its widest image and each row as tall as its tallest, every image sits unscaled at the top-left
    of its cell, the rest is `background`. Images are decoded as `decode_rgb` does. Same input, same bytes.
    """
    from PIL import Image

    if not images:
        raise ValueError("tile_images needs at least one image")
    decoded = []
    for image in images:
        try:
            decoded.append(decode_rgb(image.data, label=_sample_label(sample_id), notices=notices))
        except Exception as exc:
            raise DataError(
                f"{_where(sample_id)}cannot decode image {image.key[:12]}: {type(exc).__name__}: {exc}",
                hint="the dataset file is damaged; re-download it or drop that row",
            ) from None
    size, positions = tile_layout([im.size for im in decoded])
    canvas = Image.new("RGB", size, background)
    for im, pos in zip(decoded, positions, strict=True):
        canvas.paste(im, pos)
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", compress_level=1)
    return ImageData.from_bytes(buf.getvalue())
