"""Synthetic MME pictures of the ten perception categories: photo-like scenes whose content decides the answer.

Each generator takes the pair's own `random.Random` and returns (picture, encoding, Yes question, No question).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image, ImageDraw

from vlmparity.synth import draw as D

# ---------------------------------------------------------------- shared vocabulary

_FIRST = (
    "Anna",
    "Marco",
    "Lena",
    "Omar",
    "Grace",
    "Hugo",
    "Maya",
    "Tomas",
    "Iris",
    "Felix",
    "Nora",
    "Ravi",
    "Elena",
    "Jonas",
    "Clara",
    "Diego",
    "Sofia",
    "Victor",
    "Aiko",
    "Samuel",
    "Ines",
    "Bruno",
    "Talia",
    "Emil",
)
_LAST = ("Moreau", "Lindqvist", "Okafor", "Brennan", "Castillo", "Novak", "Hartmann", "Silva", "Kowalski", "Tanaka",
         "Fischer", "Duarte", "Whitfield", "Romano", "Adler", "Petrov", "Quinn", "Sato", "Bauer", "Ibarra")  # fmt: skip
_ADJ = ("Silent", "Crimson", "Last", "Hidden", "Broken", "Golden", "Midnight", "Frozen", "Distant", "Electric",
        "Lonely", "Secret", "Wild", "Burning", "Paper", "Quiet", "Iron", "Velvet")  # fmt: skip
_NOUN = ("Harbor", "Garden", "Empire", "Voyage", "Letters", "Horizon", "Summer", "Kingdom", "Detective", "River",
         "Orchard", "Machine", "Frontier", "Lighthouse", "Carnival", "Station", "Mirror", "Island")  # fmt: skip


def _name(rng: random.Random) -> str:
    return f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"


def _other(make: Callable[[], str], avoid: set[str]) -> str:
    """A value from `make()` different from everything in `avoid`."""
    for _ in range(1000):
        value = make()
        if value not in avoid:
            return str(value)
    raise RuntimeError("vocabulary too small")


def _shape_name(color: str, shape: str) -> str:
    return f"{color} {shape}"


def _photo(
    rng: random.Random, sizes: tuple[tuple[int, int], ...], noise: tuple[int, int] = (8, 14)
) -> Image.Image:
    w, h = rng.choice(sizes)
    return D.photo_background(rng, w, h, noise=rng.randint(*noise))


_COCO_SIZES = ((640, 480), (640, 427), (480, 640), (640, 512), (500, 375))


def _shapes_on(
    img: Image.Image, rng: random.Random, items: list[tuple[str, str]], rmin: int, rmax: int
) -> None:
    radii = [rng.randint(rmin, rmax) for _ in items]
    draw = ImageDraw.Draw(img)
    for (color, shape), (cx, cy, r) in zip(
        items, D.scatter_positions(rng, img.width, img.height, radii), strict=True
    ):
        D.draw_shape(draw, shape, cx, cy, r, D.COLORS[color])


# ---------------------------------------------------------------- perception


def _existence(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    img = _photo(rng, _COCO_SIZES)
    present = rng.sample(D.SHAPES, rng.randint(1, 4))
    absent = rng.choice([s for s in D.SHAPES if s not in present])
    items = [(rng.choice(list(D.COLORS)), s) for s in present]
    _shapes_on(img, rng, items, 35, 70)
    yes = f"Is there a {rng.choice(present)} in this image?"
    no = f"Is there a {absent} in this image?"
    return img, "JPEG", yes, no


def _count_phrase(k: int, shape: str) -> str:
    if k == 1:
        return f"Is there only one {shape} in the image?"
    return f"Are there {D.NUMBER_WORDS[k]} {D.PLURAL[shape]} in the image?"


def _count(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    img = _photo(rng, _COCO_SIZES)
    shape = rng.choice(D.SHAPES)
    k = rng.randint(1, 6)
    others = [s for s in D.SHAPES if s != shape]
    items = [(rng.choice(list(D.COLORS)), shape) for _ in range(k)]
    items += [(rng.choice(list(D.COLORS)), rng.choice(others)) for _ in range(rng.randint(0, 2))]
    rng.shuffle(items)
    _shapes_on(img, rng, items, 25, 45)
    wrong = rng.choice([j for j in range(1, 8) if j != k])
    return img, "JPEG", _count_phrase(k, shape), _count_phrase(wrong, shape)


def _position(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    img = _photo(rng, _COCO_SIZES)
    colors = rng.sample([c for c in D.COLORS if c != "white"], 2)
    shapes = rng.sample(D.SHAPES, 2)
    a, b = _shape_name(colors[0], shapes[0]), _shape_name(colors[1], shapes[1])
    w, h = img.size
    r = min(w, h) // 8
    horizontal = rng.random() < 0.6
    if horizontal:
        ya, yb = rng.randint(r + 10, h - r - 10), rng.randint(r + 10, h - r - 10)
        xa, xb = rng.randint(r + 10, w // 2 - r - 10), rng.randint(w // 2 + r + 10, w - r - 10)
        rel_true, rel_false = "on the left of", "on the right of"
    else:
        xa, xb = rng.randint(r + 10, w - r - 10), rng.randint(r + 10, w - r - 10)
        ya, yb = rng.randint(r + 10, h // 2 - r - 10), rng.randint(h // 2 + r + 10, h - r - 10)
        rel_true, rel_false = "above", "below"
    if rng.random() < 0.5:  # swap roles so "a" is not always the left/top one
        (xa, ya), (xb, yb) = (xb, yb), (xa, ya)
        rel_true, rel_false = rel_false, rel_true
    draw = ImageDraw.Draw(img)
    D.draw_shape(draw, shapes[0], xa, ya, r, D.COLORS[colors[0]])
    D.draw_shape(draw, shapes[1], xb, yb, r, D.COLORS[colors[1]])
    return img, "JPEG", f"Is the {a} {rel_true} the {b}?", f"Is the {a} {rel_false} the {b}?"


def _color(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    img = _photo(rng, _COCO_SIZES)
    shape = rng.choice(D.SHAPES)
    color = rng.choice(list(D.COLORS))
    others = [s for s in D.SHAPES if s != shape]
    items = [(color, shape)] + [
        (rng.choice(list(D.COLORS)), rng.choice(others)) for _ in range(rng.randint(0, 3))
    ]
    _shapes_on(img, rng, items, 40, 80)
    wrong = rng.choice([c for c in D.COLORS if c != color])
    return (
        img,
        "JPEG",
        f"Is there a {color} {shape} in the image?",
        f"Is there a {wrong} {shape} in the image?",
    )


def _poster(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    w = rng.randint(280, 420)
    h = int(w * rng.uniform(1.4, 1.55))
    img = D.photo_background(rng, w, h, noise=rng.randint(6, 12), cells=3)
    title = f"{rng.choice(('The ', ''))}{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    director = _name(rng)
    year = rng.randint(1950, 2022)
    draw = ImageDraw.Draw(img)
    draw.rectangle((0, int(h * 0.05), w, int(h * 0.05) + w // 6 + 10), fill=(15, 15, 15))
    D.centered_text(img, title.upper(), int(h * 0.05) + w // 12 + 5, max(12, w // 14), (250, 230, 120))
    D.draw_shape(draw, rng.choice(D.SHAPES), w / 2, h * 0.52, w / 4, D.COLORS[rng.choice(list(D.COLORS))])
    D.centered_text(img, f"Directed by {director}", int(h * 0.86), max(10, w // 22), (255, 255, 255))
    D.centered_text(img, str(year), int(h * 0.93), max(10, w // 22), (255, 255, 255))
    if rng.random() < 0.5:
        wrong = _other(lambda: f"{rng.choice(('The ', ''))}{rng.choice(_ADJ)} {rng.choice(_NOUN)}", {title})
        return img, "JPEG", f"Is this movie titled {title}?", f"Is this movie titled {wrong}?"
    wrong = _other(lambda: _name(rng), {director})
    return img, "JPEG", f"Is this movie directed by {director}?", f"Is this movie directed by {wrong}?"


def _celebrity(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    img = _photo(rng, ((1280, 544), (1024, 576), (1200, 650), (960, 540)), noise=(10, 16))
    w, h = img.size
    k = rng.randint(1, 3)
    names: list[str] = []
    while len(names) < k:
        candidate = _name(rng)
        if candidate not in names:
            names.append(candidate)
    target = rng.randrange(k)
    draw = ImageDraw.Draw(img)
    slot = w / k
    fs = max(14, h // 26)
    for i, name in enumerate(names):
        cx = slot * i + slot / 2 + rng.uniform(-slot * 0.1, slot * 0.1)
        head = h * rng.uniform(0.08, 0.11)
        top = h * 0.2
        skin = (rng.randint(150, 240), rng.randint(110, 200), rng.randint(90, 170))
        shirt = D.COLORS[rng.choice(list(D.COLORS))]
        draw.rounded_rectangle(
            (cx - head * 1.4, top + head * 2.1, cx + head * 1.4, h * 0.82), head * 0.5, fill=shirt
        )
        draw.ellipse((cx - head, top, cx + head, top + head * 2.2), fill=skin, outline=(30, 30, 30), width=2)
        tw, _ = D.text_size(name, fs)
        D.draw_text_box(img, [name], (int(cx - tw / 2 - 8), int(h * 0.85)), fs)
        if i == target:
            draw.rectangle(
                (cx - head * 1.8, top - 12, cx + head * 1.8, h * 0.83), outline=(255, 0, 0), width=4
            )
    wrong = names[(target + 1) % k] if k > 1 else _other(lambda: _name(rng), set(names))
    q = "Is the actor inside the red bounding box named {}?"
    return img, "JPEG", q.format(names[target]), q.format(wrong)


_SCENES = ("beach", "desert", "forest", "snowfield", "city street", "lake", "mountain", "farm field")


def _scene(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    side = rng.choice((256, 384, 512, 512, 640))
    w, h = side, rng.choice((side, int(side * 0.75)))
    scene = rng.choice(_SCENES)
    sky = (rng.randint(90, 150), rng.randint(150, 200), rng.randint(210, 250))
    img = Image.new("RGB", (w, h), sky)
    draw = ImageDraw.Draw(img)
    horizon = int(h * rng.uniform(0.45, 0.6))
    ground = {
        "beach": (230, 210, 150),
        "desert": (225, 185, 110),
        "forest": (50, 110, 45),
        "snowfield": (245, 248, 252),
        "city street": (90, 90, 95),
        "lake": (70, 140, 60),
        "mountain": (110, 130, 80),
        "farm field": (160, 170, 60),
    }[scene]
    draw.rectangle((0, horizon, w, h), fill=ground)
    if scene == "beach":
        draw.rectangle((0, horizon - h // 10, w, horizon), fill=(30, 110, 190))
        draw.ellipse((w * 0.75, h * 0.08, w * 0.9, h * 0.08 + w * 0.15), fill=(255, 220, 60))
    elif scene == "desert":
        for _ in range(3):
            cx = rng.uniform(0, w)
            draw.ellipse(
                (cx - w * 0.3, horizon - h * 0.08, cx + w * 0.3, horizon + h * 0.1), fill=(215, 170, 95)
            )
        cx = rng.uniform(w * 0.2, w * 0.8)
        draw.rectangle((cx - 6, horizon - h * 0.2, cx + 6, horizon + h * 0.1), fill=(40, 130, 50))
    elif scene in ("forest", "snowfield"):
        for _ in range(14 if scene == "forest" else 4):
            cx, base = rng.uniform(0, w), horizon + rng.uniform(0, h * 0.3)
            size = rng.uniform(h * 0.12, h * 0.25)
            draw.polygon(
                [(cx, base - size * 1.6), (cx - size / 2, base), (cx + size / 2, base)], fill=(20, 90, 35)
            )
    elif scene == "city street":
        x = 0
        while x < w:
            bw, bh = rng.randint(w // 10, w // 5), rng.randint(int(h * 0.2), int(h * 0.45))
            draw.rectangle((x, horizon - bh, x + bw, horizon), fill=(rng.randint(100, 180),) * 3)
            for wy in range(horizon - bh + 8, horizon - 10, 18):
                for wx in range(x + 6, x + bw - 8, 14):
                    draw.rectangle((wx, wy, wx + 6, wy + 9), fill=(250, 230, 140))
            x += bw + 3
        draw.line((0, h * 0.85, w, h * 0.85), fill=(250, 250, 250), width=4)
    elif scene == "lake":
        draw.ellipse((w * 0.1, horizon + h * 0.05, w * 0.9, h * 0.95), fill=(40, 120, 200))
    elif scene == "mountain":
        for _ in range(3):
            cx, mh = rng.uniform(0, w), rng.uniform(h * 0.25, h * 0.45)
            draw.polygon([(cx, horizon - mh), (cx - mh, horizon), (cx + mh, horizon)], fill=(120, 110, 105))
            draw.polygon([(cx, horizon - mh), (cx - mh * 0.25, horizon - mh * 0.75), (cx + mh * 0.25, horizon - mh * 0.75)],
                         fill=(250, 250, 250))  # fmt: skip
    elif scene == "farm field":
        for y in range(horizon + 6, h, 12):
            draw.line((0, y, w, y), fill=(120, 130, 40), width=3)
        draw.rectangle((w * 0.7, horizon - h * 0.15, w * 0.85, horizon), fill=(170, 40, 40))
    sign = scene.upper()
    fs = max(12, w // 22)
    D.draw_text_box(
        img, [sign], (int(w * 0.04), int(h * 0.82) - fs), fs, box=(150, 110, 60), fill=(255, 255, 255)
    )
    img = D.add_grain(D.add_shading(img, rng, rng.randint(20, 90)), rng, rng.randint(4, 9))
    wrong = rng.choice([s for s in _SCENES if s != scene])
    q = "Is this picture captured in a place of {}?"
    return img, "JPEG", q.format(scene), q.format(wrong)


_LANDMARKS = {
    "tower": ("Eiffel Tower", "Tokyo Tower", "CN Tower", "Space Needle"),
    "arch": ("Arc de Triomphe", "Gateway Arch", "Brandenburg Gate", "Marble Arch"),
    "dome": ("Taj Mahal", "St. Peter's Basilica", "Pantheon", "Hagia Sophia"),
    "pyramid": ("Great Pyramid of Giza", "Pyramid of the Sun", "Louvre Pyramid", "Chichen Itza"),
    "bridge": ("Golden Gate Bridge", "Tower Bridge", "Charles Bridge", "Rialto Bridge"),
}


def _landmark(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    w = rng.choice((640, 800, 1024, 1200, 1500))
    h = int(w * rng.choice((0.66, 0.75, 0.8)))
    kind = rng.choice(list(_LANDMARKS))
    name = rng.choice(_LANDMARKS[kind])
    img = D.photo_background(rng, w, h, noise=0, cells=4)
    draw = ImageDraw.Draw(img)
    cx, base = w * rng.uniform(0.35, 0.65), h * 0.8
    stone = (rng.randint(120, 200),) * 3
    if kind == "tower":
        draw.polygon(
            [(cx, h * 0.1), (cx - w * 0.12, base), (cx + w * 0.12, base)], fill=stone, outline=(40, 40, 40)
        )
    elif kind == "arch":
        draw.rectangle((cx - w * 0.18, h * 0.3, cx + w * 0.18, base), fill=stone)
        draw.ellipse((cx - w * 0.07, h * 0.45, cx + w * 0.07, h * 0.65), fill=(60, 60, 70))
        draw.rectangle((cx - w * 0.07, h * 0.55, cx + w * 0.07, base), fill=(60, 60, 70))
    elif kind == "dome":
        draw.rectangle((cx - w * 0.2, h * 0.45, cx + w * 0.2, base), fill=stone)
        draw.ellipse((cx - w * 0.12, h * 0.22, cx + w * 0.12, h * 0.62), fill=stone, outline=(40, 40, 40))
    elif kind == "pyramid":
        draw.polygon([(cx, h * 0.2), (cx - w * 0.3, base), (cx + w * 0.3, base)], fill=(210, 180, 120))
    else:
        draw.rectangle((0, h * 0.55, w, h * 0.6), fill=(170, 60, 40))
        for px in (w * 0.3, w * 0.7):
            draw.rectangle((px - 12, h * 0.2, px + 12, base), fill=(170, 60, 40))
            draw.line([(0, h * 0.3), (px, h * 0.2), (w / 2, h * 0.5), (w - px, h * 0.2), (w, h * 0.3)],
                      fill=(170, 60, 40), width=4)  # fmt: skip
    draw.rectangle((0, base, w, h), fill=(90, 120, 70))
    fs = max(14, w // 36)
    D.draw_text_box(img, [f"Greetings from the {name}"], (int(w * 0.04), int(h * 0.88)), fs)
    img = D.add_grain(img, rng, rng.randint(6, 16))
    wrong = _other(lambda: rng.choice([n for names in _LANDMARKS.values() for n in names]), {name})
    q = "Is this a photo of {}?"
    return img, "JPEG", q.format(name), q.format(wrong)


_FORMS = ("sculpture", "architecture", "glassware", "ceramics", "tapestry", "metalwork")


def _artwork(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    w = rng.choice((600, 700, 800, 1000, 1200, 1400))
    h = int(w * rng.uniform(0.7, 1.25))
    img = D.photo_background(rng, w, h, noise=rng.randint(3, 10), cells=rng.randint(3, 9))
    draw = ImageDraw.Draw(img)
    for _ in range(rng.randint(6, 18)):
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h * 0.8)
        x1, y1 = x0 + rng.uniform(20, w / 3), y0 + rng.uniform(20, h / 3)
        fill = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=fill)
    frame = max(12, w // 40)
    draw.rectangle((0, 0, w - 1, h - 1), outline=(120, 85, 30), width=frame)
    artist, year = _name(rng), rng.randint(1480, 1950)
    title = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}"
    fs = max(14, w // 45)
    D.draw_text_box(
        img, [f"{artist}, {title} ({year})", "oil painting on canvas"], (frame + 10, int(h * 0.84)), fs
    )
    kind = rng.randrange(3)
    if kind == 0:
        q = "Does this artwork exist in the form of {}?"
        return img, "JPEG", q.format("painting"), q.format(rng.choice(_FORMS))
    if kind == 1:
        q = "Is this artwork created by {}?"
        return img, "JPEG", q.format(artist), q.format(_other(lambda: _name(rng), {artist}))
    q = "Is this artwork titled {}?"
    wrong = _other(lambda: f"{rng.choice(_ADJ)} {rng.choice(_NOUN)}", {title})
    return img, "JPEG", q.format(title), q.format(wrong)


_SYLLABLES = ("zen", "tro", "ka", "li", "mo", "vex", "ora", "bri", "lux", "nap", "qui", "sol", "dar", "fen", "ix",
              "pal", "rus", "tek", "vio", "wen")  # fmt: skip


def _brand(rng: random.Random) -> str:
    return "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 3))).capitalize()


def _ocr(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    w = rng.choice((400, 500, 640, 800))
    h = int(w * rng.uniform(0.5, 0.8))
    img = D.photo_background(rng, w, h, noise=rng.randint(6, 12), cells=3)
    word = _brand(rng)
    draw = ImageDraw.Draw(img)
    fs = max(24, w // max(6, len(word)))
    tw, th = D.text_size(word, fs)
    x0, y0 = (w - tw) // 2, (h - th) // 2
    badge = D.COLORS[rng.choice(("red", "blue", "green", "purple", "black"))]
    draw.rounded_rectangle(
        (x0 - fs // 2, y0 - fs // 2, x0 + tw + fs // 2, y0 + th + fs // 2), fs // 3, fill=badge
    )
    draw.text((x0, y0 - fs // 5), word, font=D.font(fs), fill=(255, 255, 255))
    wrong = _other(lambda: _brand(rng), {word})
    q = 'Is the word in the logo "{}"?'
    return img, "JPEG", q.format(word.lower()), q.format(wrong.lower())


PERCEPTION: dict[str, Callable[[random.Random], tuple[Image.Image, str, str, str]]] = {
    "existence": _existence,
    "count": _count,
    "position": _position,
    "color": _color,
    "posters": _poster,
    "celebrity": _celebrity,
    "scene": _scene,
    "landmark": _landmark,
    "artwork": _artwork,
    "OCR": _ocr,
}
