"""How fast request images are encoded: lmms-eval's Pillow-default PNG vs vlmparity's ImageEncoder.

Synthetic photo-like JPEGs (500-1500 px, about 230 KB on average like the MME-style set measured in
research/lmms-eval-bench.md) are turned into data URLs several ways; the script prints
milliseconds per image (best of --repeat runs; "cpu ms" is this process's CPU time over all threads),
what the server then spends decoding each one ("server ms": base64, PNG decode to RGB, as vLLM's and
OVMS's loaders do), and checks that every variant decodes to exactly the pixels of lmms-eval's encoding.
PNG level 0 stores the pixels uncompressed (still PNG, still lossless): the fastest to encode and to
decode, and the biggest bodies.

    python bench/encode.py [--n 24] [--seed 0] [--workers 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import base64
import io
import statistics
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from vlmparity.data.images import ImageEncoder, decode_rgb, to_data_url
from vlmparity.tasks.base import ImageData


def synthetic_photo(rng: np.random.Generator) -> bytes:
    """A JPEG with photo-like statistics: gradients, blobs at several scales, fine grain."""
    w, h = int(rng.integers(500, 1501)), int(rng.integers(500, 1501))
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack(
        [
            x / w * rng.uniform(60, 200),
            y / h * rng.uniform(60, 200),
            (x + y) / (w + h) * rng.uniform(60, 200),
        ],
        -1,
    )
    for cell in (160, 48, 12, 4):  # smooth structure at several scales (bicubic-upsampled noise)
        small = rng.normal(0, 40 * cell / 160 + 8, (h // cell + 2, w // cell + 2, 3)).astype(np.float32)
        up = np.asarray(
            Image.fromarray(np.clip(small + 128, 0, 255).astype(np.uint8)).resize(
                ((w // cell + 2) * cell, (h // cell + 2) * cell), Image.Resampling.BICUBIC
            ),
            dtype=np.float32,
        )[:h, :w]
        img += up - 128
    img += rng.normal(0, 2, (h, w, 3)).astype(np.float32)  # sensor grain
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="JPEG", quality=93)
    return buf.getvalue()


def lmms_eval_url(data: bytes) -> str:
    """What lmms-eval 0.7.3's chat path does per request: decode, RGB, PNG with Pillow defaults, base64."""
    buf = io.BytesIO()
    decode_rgb(data).save(buf, format="PNG")
    return to_data_url(buf.getvalue(), "image/png")


def timed(fn: Callable[[], list[str]], repeat: int) -> tuple[float, float, list[str]]:
    """Best wall time and its CPU time (this process's threads) over `repeat` runs: the machine is shared."""
    best = (float("inf"), 0.0)
    out: list[str] = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn()
        best = min(best, (time.perf_counter() - wall, time.process_time() - cpu))
    return best[0], best[1], out


def pixels(url: str) -> bytes:
    data = base64.b64decode(url.split(",", 1)[1])
    return Image.open(io.BytesIO(data)).convert("RGB").tobytes()


def server_decode_ms(urls: list[str], repeat: int) -> float:
    """Best-of-`repeat` ms per image for what a server does with a data URL: base64, PNG decode, RGB."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        for url in urls:
            image = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
            image.convert("RGB").load()
        best = min(best, time.perf_counter() - t)
    return best * 1000 / len(urls)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=24, help="number of distinct images")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2, help="runs per variant; the fastest counts")
    args = parser.parse_args()

    rng = np.random.default_rng(args.seed)
    raw = [synthetic_photo(rng) for _ in range(args.n)]
    images = [ImageData.from_bytes(b) for b in raw]
    sizes = [Image.open(io.BytesIO(b)).size for b in raw]
    kb = [len(b) / 1000 for b in raw]
    print(
        f"{args.n} synthetic JPEGs, {min(min(s) for s in sizes)}-{max(max(s) for s in sizes)} px, "
        f"{statistics.mean(kb):.0f} KB mean ({min(kb):.0f}-{max(kb):.0f} KB)"
    )

    def serial(level: int | None) -> Callable[[], list[str]]:
        return lambda: [ImageEncoder(compress_level=level, workers=1)(img) for img in images]

    def prefetched(level: int | None, parallel: str) -> Callable[[], list[str]]:
        def run() -> list[str]:
            with ImageEncoder(compress_level=level, workers=args.workers, parallel=parallel) as enc:  # type: ignore[arg-type]
                enc.prefetch(images)
                return [enc(img) for img in images]

        return run

    variants: list[tuple[str, Callable[[], list[str]]]] = [
        ("lmms-eval: Pillow default PNG (level 6), serial", lambda: [lmms_eval_url(b) for b in raw]),
        ("ImageEncoder level 6 (=lmms-eval bytes), serial", serial(None)),
        ("ImageEncoder level 1, serial", serial(1)),
        ("ImageEncoder level 0 (stored), serial", serial(0)),
        (f"ImageEncoder level 6, prefetch {args.workers} threads", prefetched(None, "thread")),
        (f"ImageEncoder level 1, prefetch {args.workers} threads", prefetched(1, "thread")),
        (f"ImageEncoder level 0, prefetch {args.workers} threads", prefetched(0, "thread")),
        (f"ImageEncoder level 1, prefetch {args.workers} processes", prefetched(1, "process")),
    ]
    reference: list[bytes] | None = None
    reference_urls: list[str] = []
    base_ms = 0.0
    print(
        f"{'variant':<50} {'ms/image':>9} {'cpu ms':>7} {'speed-up':>9} {'data URL MB':>12} "
        f"{'server ms':>10}  pixels"
    )
    for name, fn in variants:
        seconds, cpu, urls = timed(fn, args.repeat)
        ms = seconds * 1000 / len(images)
        cpu_ms = f"{cpu * 1000 / len(images):7.1f}" if "processes" not in name else f"{'-':>7}"
        if reference is None:
            reference, reference_urls, base_ms = [pixels(u) for u in urls], urls, ms
        same = all(pixels(u) == p for u, p in zip(urls, reference, strict=True))
        mb = statistics.mean(len(u) for u in urls) / 1e6
        verdict = "identical" if same else "DIFFERENT"
        server = f"{server_decode_ms(urls, args.repeat):10.1f}" if "serial" in name else f"{'':>10}"
        print(f"{name:<50} {ms:>9.1f} {cpu_ms} {base_ms / ms:>8.2f}x {mb:>12.2f} {server}  {verdict}")
        if name.startswith("ImageEncoder level 6") and "serial" in name:
            print(f"{'':<50} byte-identical to lmms-eval: {urls == reference_urls}")


if __name__ == "__main__":
    main()
