"""Pillow drawing primitives for the synthetic benchmark images (shapes, text, charts, tables).

Everything takes an explicit `random.Random` / `numpy.random.Generator`, so a picture is a pure function of
its seed. Text uses Pillow's embedded font only (no system fonts), so output does not depend on the host.
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Sequence
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]

# Colours far enough apart that a model (or a person) names them the same way.
COLORS: dict[str, RGB] = {
    "red": (214, 39, 40),
    "green": (44, 160, 44),
    "blue": (31, 90, 220),
    "yellow": (245, 205, 30),
    "orange": (250, 127, 14),
    "purple": (128, 60, 170),
    "black": (25, 25, 25),
    "white": (250, 250, 250),
}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "hexagon")
PLURAL = {s: s + "s" for s in SHAPES}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


@lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's embedded scalable font at `size` px, with the basic layout engine (same on every host)."""
    base = ImageFont.load_default(size=size)
    if isinstance(base, ImageFont.FreeTypeFont):
        return base.font_variant(size=size, layout_engine=ImageFont.Layout.BASIC)
    return base  # Pillow built without FreeType: fixed-size bitmap font


def text_size(text: str, size: int) -> tuple[int, int]:
    """Width and height of `text` drawn at `size` px."""
    left, top, right, bottom = font(size).getbbox(text)
    return int(right - left), int(bottom - top)


def rng_np(rng: random.Random) -> np.random.Generator:
    """A numpy generator seeded from `rng` (so one seed drives both)."""
    return np.random.default_rng(rng.getrandbits(64))


def photo_background(rng: random.Random, w: int, h: int, *, noise: int = 12, cells: int = 6) -> Image.Image:
    """A smooth random colour field plus grain: compresses like a photograph and differs per seed."""
    gen = rng_np(rng)
    gw, gh = cells, max(2, cells * h // max(w, 1))
    small = gen.integers(30, 226, size=(gh, gw, 3), dtype=np.uint8)
    field = np.asarray(Image.fromarray(small, "RGB").resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    if noise > 0:
        grain = gen.integers(-noise, noise + 1, size=(h, w, 1), dtype=np.int16)
        field = field + grain
    return Image.fromarray(np.clip(field, 0, 255).astype(np.uint8), "RGB")


def paper_background(
    rng: random.Random, w: int, h: int, *, tint: int = 10, noise: int = 0, shade: int = 80
) -> Image.Image:
    """A light, unevenly shaded page with a per-seed tint (charts, tables, screenshots).

    The shading is a smooth random field, so pages differ at thumbnail scale too (the simulator matches
    lossy copies by 16x16 thumbnails); `shade` bounds how much darker than the tint the page gets.
    """
    gen = rng_np(rng)
    base = np.array([255 - rng.randint(0, tint) for _ in range(3)], dtype=np.int16)
    cells = gen.integers(0, shade + 1, size=(rng.randint(3, 5), rng.randint(3, 5)), dtype=np.uint8)
    field = np.asarray(Image.fromarray(cells, "L").resize((w, h), Image.Resampling.BICUBIC), dtype=np.int16)
    arr = base[None, None, :] - field[..., None]
    if noise > 0:
        arr = arr - gen.integers(0, noise + 1, size=(h, w, 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def add_shading(img: Image.Image, rng: random.Random, amount: int) -> Image.Image:
    """Darken a picture unevenly by up to `amount` levels (smooth random field, like uneven light)."""
    gen = rng_np(rng)
    cells = gen.integers(0, amount + 1, size=(rng.randint(3, 5), rng.randint(3, 5)), dtype=np.uint8)
    field = np.asarray(Image.fromarray(cells, "L").resize(img.size, Image.Resampling.BICUBIC), dtype=np.int16)
    arr = np.asarray(img, dtype=np.int16) - field[..., None]
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def add_grain(img: Image.Image, rng: random.Random, amount: int) -> Image.Image:
    """Add per-pixel grain to a finished picture (JPEG 'photos' get their weight from this)."""
    gen = rng_np(rng)
    arr = np.asarray(img, dtype=np.int16)
    arr = arr + gen.integers(-amount, amount + 1, size=(arr.shape[0], arr.shape[1], 1), dtype=np.int16)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def polygon_points(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    """Vertices of a regular polygon-like shape centred on (cx, cy) with radius r."""
    if shape == "square":
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in _angles(3, -math.pi / 2)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r * 0.75, cy), (cx, cy + r), (cx - r * 0.75, cy)]
    if shape == "hexagon":
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in _angles(6, 0.0)]
    if shape == "star":
        pts = []
        for i, a in enumerate(_angles(10, -math.pi / 2)):
            rr = r if i % 2 == 0 else r * 0.45
            pts.append((cx + rr * math.cos(a), cy + rr * math.sin(a)))
        return pts
    raise ValueError(f"unknown shape {shape!r}")


def _angles(n: int, start: float) -> list[float]:
    return [start + 2 * math.pi * i / n for i in range(n)]


def draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: RGB) -> None:
    """Draw one filled shape with a dark outline (so white/yellow shapes stay visible)."""
    outline = (20, 20, 20) if fill != COLORS["black"] else (235, 235, 235)
    width = max(2, int(r / 12))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=outline, width=width)
    else:
        draw.polygon(polygon_points(shape, cx, cy, r), fill=fill, outline=outline, width=width)


def scatter_positions(
    rng: random.Random,
    w: int,
    h: int,
    radii: Sequence[float],
    *,
    margin: int = 10,
) -> list[tuple[float, float, float]]:
    """(cx, cy, r) for circles of about the given radii that stay inside and do not overlap.

    A radius shrinks (down to half) when the canvas is crowded; callers draw with the radius returned.
    """
    placed: list[tuple[float, float, float]] = []
    for r in radii:
        for attempt in range(600):
            rr = r * (1.0 - 0.5 * attempt / 600)
            cx = rng.uniform(margin + rr, w - margin - rr)
            cy = rng.uniform(margin + rr, h - margin - rr)
            if all(math.hypot(cx - x, cy - y) > rr + pr + 6 for x, y, pr in placed):
                placed.append((cx, cy, rr))
                break
        else:  # sizes are chosen so this cannot happen
            raise RuntimeError("could not place shapes without overlap")
    return placed


def draw_text_box(
    img: Image.Image,
    lines: Sequence[str],
    xy: tuple[int, int],
    size: int,
    *,
    fill: RGB = (20, 20, 20),
    box: RGB | None = (255, 255, 255),
    pad: int = 8,
    spacing: float = 1.35,
) -> tuple[int, int, int, int]:
    """Draw lines of text (optionally on a box) at xy; returns the box drawn."""
    draw = ImageDraw.Draw(img)
    line_h = int(size * spacing)
    width = max((text_size(line, size)[0] for line in lines), default=0)
    x, y = xy
    rect = (x, y, x + width + 2 * pad, y + line_h * len(lines) + 2 * pad)
    if box is not None:
        draw.rectangle(rect, fill=box, outline=(60, 60, 60), width=2)
    for i, line in enumerate(lines):
        draw.text((x + pad, y + pad + i * line_h), line, font=font(size), fill=fill)
    return rect


def centered_text(img: Image.Image, text: str, cy: int, size: int, fill: RGB) -> None:
    """Draw one line of text centred horizontally with its middle at cy."""
    draw = ImageDraw.Draw(img)
    tw, th = text_size(text, size)
    draw.text(((img.width - tw) // 2, cy - th // 2 - size // 5), text, font=font(size), fill=fill)


def bar_chart(
    rng: random.Random,
    labels: Sequence[str],
    values: Sequence[float],
    *,
    width: int,
    height: int,
    title: str,
    ylabel: str = "",
) -> Image.Image:
    """A vertical bar chart with value labels on the bars."""
    img = paper_background(rng, width, height)
    draw = ImageDraw.Draw(img)
    fs = max(12, width // 45)
    left, right, top, bottom = int(width * 0.1), int(width * 0.96), int(height * 0.14), int(height * 0.84)
    centered_text(img, title, int(height * 0.06), int(fs * 1.3), (10, 10, 10))
    vmax = max(values) * 1.15 or 1.0
    draw.line((left, top, left, bottom), fill=(0, 0, 0), width=2)
    draw.line((left, bottom, right, bottom), fill=(0, 0, 0), width=2)
    for k in range(5):
        gy = bottom - (bottom - top) * k / 4
        draw.line((left - 5, gy, right, gy), fill=(205, 205, 205), width=1)
        draw.text((4, gy - fs / 2), _fmt(vmax * k / 4), font=font(int(fs * 0.8)), fill=(60, 60, 60))
    if ylabel:
        draw.text((left + 6, top - fs * 1.4), ylabel, font=font(int(fs * 0.85)), fill=(60, 60, 60))
    slot = (right - left) / len(values)
    palette = list(COLORS.values())[:6]
    rng.shuffle(palette)
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x0 = left + slot * i + slot * 0.18
        x1 = left + slot * (i + 1) - slot * 0.18
        y0 = bottom - (bottom - top) * value / vmax
        draw.rectangle((x0, y0, x1, bottom), fill=palette[i % len(palette)], outline=(30, 30, 30))
        vt = _fmt(value)
        draw.text(
            ((x0 + x1) / 2 - text_size(vt, fs)[0] / 2, y0 - fs * 1.3), vt, font=font(fs), fill=(0, 0, 0)
        )
        lw = text_size(label, fs)[0]
        draw.text(((x0 + x1) / 2 - lw / 2, bottom + fs * 0.4), label, font=font(fs), fill=(0, 0, 0))
    return img


def line_chart(
    rng: random.Random,
    xs: Sequence[str],
    ys: Sequence[float],
    *,
    width: int,
    height: int,
    title: str,
) -> Image.Image:
    """A line chart with marked, labelled points."""
    img = paper_background(rng, width, height)
    draw = ImageDraw.Draw(img)
    fs = max(12, width // 50)
    left, right, top, bottom = int(width * 0.08), int(width * 0.96), int(height * 0.15), int(height * 0.85)
    centered_text(img, title, int(height * 0.06), int(fs * 1.3), (10, 10, 10))
    lo, hi = min(ys), max(ys)
    span = (hi - lo) or 1.0
    draw.line((left, top, left, bottom), fill=(0, 0, 0), width=2)
    draw.line((left, bottom, right, bottom), fill=(0, 0, 0), width=2)
    step = (right - left) / max(1, len(xs) - 1)
    pts = [
        (left + step * i, bottom - (bottom - top) * (0.08 + 0.84 * (y - lo) / span)) for i, y in enumerate(ys)
    ]
    draw.line(pts, fill=COLORS["blue"], width=3)
    for (px, py), x, y in zip(pts, xs, ys, strict=True):
        draw.ellipse((px - 5, py - 5, px + 5, py + 5), fill=COLORS["red"])
        draw.text((px - text_size(_fmt(y), fs)[0] / 2, py - fs * 1.5), _fmt(y), font=font(fs), fill=(0, 0, 0))
        draw.text((px - text_size(x, fs)[0] / 2, bottom + fs * 0.4), x, font=font(fs), fill=(0, 0, 0))
    return img


def table_image(
    rng: random.Random,
    header: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    title: str,
    font_size: int = 20,
) -> Image.Image:
    """A ruled table with a header row; the canvas is sized to the content."""
    fs = font_size
    cols = len(header)
    col_w = [max(text_size(str(r[c]), fs)[0] for r in [header, *rows]) + 2 * fs for c in range(cols)]
    row_h = int(fs * 2.0)
    width = sum(col_w) + 2 * fs
    height = row_h * (len(rows) + 1) + int(fs * 4)
    img = paper_background(rng, max(width, text_size(title, fs)[0] + 2 * fs), height)
    draw = ImageDraw.Draw(img)
    draw.text((fs, fs * 0.6), title, font=font(int(fs * 1.1)), fill=(0, 0, 0))
    y = int(fs * 2.6)
    draw.rectangle((fs, y, fs + sum(col_w), y + row_h), fill=(215, 225, 240))
    for r, row in enumerate([header, *rows]):
        x = fs
        for c, cell in enumerate(row):
            draw.text((x + fs * 0.6, y + row_h * r + fs * 0.45), str(cell), font=font(fs), fill=(0, 0, 0))
            x += col_w[c]
    for r in range(len(rows) + 2):
        draw.line((fs, y + row_h * r, fs + sum(col_w), y + row_h * r), fill=(40, 40, 40), width=1)
    x = fs
    for c in range(cols + 1):
        draw.line((x, y, x, y + row_h * (len(rows) + 1)), fill=(40, 40, 40), width=1)
        if c < cols:
            x += col_w[c]
    return img


def _fmt(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:.1f}"


def encode(img: Image.Image, fmt: str, *, quality: int = 88) -> bytes:
    """Encode to JPEG or PNG bytes (deterministic: no timestamps, no optimisation passes)."""
    buf = io.BytesIO()
    if fmt == "JPEG":
        img.convert("RGB").save(buf, "JPEG", quality=quality)
    elif fmt == "PNG":
        img.save(buf, "PNG", compress_level=2)
    else:
        raise ValueError(f"unsupported format {fmt!r}")
    return buf.getvalue()
