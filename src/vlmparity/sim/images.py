"""Decode request images for real (Pillow) and fingerprint their pixels.

A fingerprint is an exact hash of the RGB pixels (so PNG, the dataset's own bytes or any lossless
re-encoding match exactly) plus a 16x16 grayscale thumbnail (so a lossy JPEG of the same pixels still
matches approximately). Fingerprints of request images are cached by a hash of the base64 payload, so an
image sent many times is decoded once.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

THUMB_SIDE = 16

# Images far larger than any benchmark image are still decoded, without Pillow's decompression-bomb warning;
# larger ones are refused. The simulator's own limit: Pillow's process-wide `Image.MAX_IMAGE_PIXELS`, which
# the evaluation path relies on, is left alone (see `_open`).
MAX_PIXELS = 600_000_000


@dataclass(frozen=True)
class ImagePrint:
    """What the simulator knows about one image: exact pixel hash, size and a small thumbnail."""

    pixels: str  # sha256 hex of "WxH" + RGB bytes
    size: tuple[int, int]
    thumb: np.ndarray  # float32 (THUMB_SIDE*THUMB_SIDE,) grayscale


class ImageError(Exception):
    """A request image the engine could not load; `kind` selects the engine's wording."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # bad_base64 | undecodable | remote_url | local_path
        self.detail = detail


def fingerprint_bytes(data: bytes) -> ImagePrint:
    """Decode encoded image bytes and fingerprint their RGB pixels; raises ImageError if undecodable."""
    try:
        with _open(data) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as err:
        raise ImageError("undecodable", str(err) or type(err).__name__) from None
    return fingerprint_image(rgb)


def _open(data: bytes) -> Image.Image:
    """`Image.open` (header only) under the simulator's `MAX_PIXELS` instead of Pillow's process-wide limit.

    Pillow's formats are tried in its own order, as `Image.open` does; only its decompression-bomb check,
    which reads the module-wide `Image.MAX_IMAGE_PIXELS`, is replaced by ours. Setting that global, even
    for a moment, would change the limit of every thread of the process (the evaluation path's too).
    """
    Image.init()
    prefix = data[:16]
    for name in list(Image.ID):
        factory, accept = Image.OPEN[name]
        try:
            found = accept(prefix) if accept is not None else True
            if isinstance(found, str) or not found:  # a str is Pillow's "maybe, but unsupported" note
                continue
            image = factory(io.BytesIO(data), "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue  # not this format after all: Image.open tries the next one too
        width, height = image.size
        if max(1, width) * max(1, height) > MAX_PIXELS:
            image.close()
            raise ValueError(
                f"image of {width}x{height} pixels is over the simulator's limit of {MAX_PIXELS}"
            )
        return image
    raise UnidentifiedImageError("cannot identify image file")


def fingerprint_image(rgb: Image.Image) -> ImagePrint:
    """Fingerprint an already decoded RGB image."""
    w, h = rgb.size
    digest = hashlib.sha256(f"{w}x{h}".encode())
    digest.update(rgb.tobytes())
    small = rgb.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    thumb = np.asarray(small, dtype=np.float32).reshape(-1)
    return ImagePrint(pixels=digest.hexdigest(), size=(w, h), thumb=thumb)


def payload_of(url: str) -> str:
    """The base64 payload of an image URL as the engines read it, or ImageError for other URL kinds.

    Both engines take everything after "base64," (OVMS: anywhere in the string; vLLM: data URLs). Remote
    and local URLs are refused: the simulator has no network and no media directory.
    """
    marker = url.find("base64,")
    if marker >= 0:
        return url[marker + len("base64,") :]
    if url.startswith(("http://", "https://", "ftp://", "sftp://")):
        raise ImageError("remote_url", "remote image URLs are not fetched by the simulator")
    raise ImageError("local_path", "not a base64 data URL")


def decode_base64(payload: str) -> bytes:
    """Strict base64 decoding (whitespace tolerated), raising ImageError on bad input."""
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        pass
    try:
        return base64.b64decode("".join(payload.split()), validate=True)
    except (binascii.Error, ValueError) as err:
        raise ImageError("bad_base64", f"invalid base64 data: {err}") from None


class PrintCache:
    """Thread-safe LRU cache of image fingerprints keyed by a hash of the URL's base64 payload."""

    def __init__(self, max_items: int = 8192) -> None:
        self._items: OrderedDict[bytes, ImagePrint] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_items
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(url: str) -> bytes:
        return hashlib.blake2b(url.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> ImagePrint | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                self.hits += 1
            return found

    def put(self, key: bytes, value: ImagePrint) -> None:
        with self._lock:
            self.misses += 1
            self._items[key] = value
            if len(self._items) > self._max:
                self._items.popitem(last=False)


def fingerprint_url(url: str) -> ImagePrint:
    """Decode one image URL (base64 data URL) and fingerprint it; raises ImageError."""
    return fingerprint_bytes(decode_base64(payload_of(url)))


# One cache for every simulator in the process: a fingerprint depends only on the payload, and two
# simulated engines given the same request (a paired comparison) then decode each image once.
SHARED_PRINTS = PrintCache(max_items=16384)
