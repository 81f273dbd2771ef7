"""Synthetic MME pictures of the four cognition categories: PNG screenshots of text, sums, phrases and code.

Each generator takes the pair's own `random.Random` and returns (picture, encoding, Yes question, No question).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from PIL import Image, ImageDraw

from vlmparity.synth import draw as D


def _card(
    rng: random.Random, lines: list[str], size: int, width: tuple[int, int] = (420, 900)
) -> Image.Image:
    w = rng.randint(*width)
    h = max(160, int(size * 1.5 * len(lines) + size * 3))
    img = D.paper_background(rng, w, h, tint=25)
    D.draw_text_box(img, lines, (size, size), size, box=None)
    # Half the screenshots get grain, so sizes spread like the real ones (a few KB to a few hundred KB).
    return D.add_grain(img, rng, 2) if rng.random() < 0.5 else img


def _commonsense(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    kind = rng.randrange(4)
    if kind == 0:
        t = rng.choice([*range(-15, 0), *range(11, 20), *range(31, 41)])  # exactly one statement holds
        img = _card(rng, ["Outdoor thermometer", f"{t} °C"], rng.randint(28, 44))
        facts = {
            "Is the temperature shown in the image below freezing?": t < 0,
            "Is it hotter than 30 degrees Celsius according to the thermometer in the image?": t > 30,
            "Does the thermometer in the image show a temperature between 10 and 20 degrees Celsius?": 10
            < t
            < 20,
        }
    elif kind == 1:
        hh, mm = rng.randrange(24), rng.randrange(60)
        img = _card(rng, ["Clock (24-hour)", f"{hh:02d}:{mm:02d}"], rng.randint(30, 48))
        facts = {
            "According to the clock in the image, is it in the morning?": 5 <= hh < 12,
            "According to the clock in the image, is it in the afternoon?": 12 <= hh < 18,
            "According to the clock in the image, is it in the evening?": 18 <= hh < 24,
            "According to the clock in the image, is it in the middle of the night?": hh < 5,
        }
    elif kind == 2:
        red = rng.random() < 0.5
        w, h = rng.randint(260, 420), rng.randint(420, 600)
        img = D.paper_background(rng, w, h, tint=25)
        draw = ImageDraw.Draw(img)
        draw.rounded_rectangle((w * 0.3, h * 0.1, w * 0.7, h * 0.9), 20, fill=(30, 30, 30))
        r = w * 0.14
        draw.ellipse(
            (w / 2 - r, h * 0.3 - r, w / 2 + r, h * 0.3 + r), fill=(230, 20, 20) if red else (70, 30, 30)
        )
        draw.ellipse(
            (w / 2 - r, h * 0.7 - r, w / 2 + r, h * 0.7 + r), fill=(30, 70, 30) if red else (20, 220, 60)
        )
        facts = {
            "The image shows a traffic light. Should the cars stop now?": red,
            "The image shows a traffic light. May the cars drive on now?": not red,
        }
    else:
        price = rng.randint(3, 95)
        img = _card(rng, ["PRICE", f"${price}.00"], rng.randint(36, 56))
        bill_ok = rng.choice([b for b in (5, 10, 20, 50, 100) if b >= price])
        bill_low = rng.choice([b for b in (1, 2, 5, 10, 20, 50) if b < price] or [1, 2])
        facts = {
            f"I have one ${bill_ok} bill. Can I afford the item with the price tag in the image?": True,
            f"I have one ${bill_low} bill. Can I afford the item with the price tag in the image?": False,
        }
    yes = rng.choice([q for q, v in facts.items() if v])
    no = rng.choice([q for q, v in facts.items() if not v])
    return img, "PNG", yes, no


def _numerical(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    a, b, c = rng.randint(2, 30), rng.randint(2, 20), rng.randint(2, 9)
    form = rng.randrange(4)
    text, value = [
        (f"{a} + {b} × {c} = ?", a + b * c),
        (f"({a} + {b}) × {c} = ?", (a + b) * c),
        (f"{a} × {c} - {b} = ?", a * c - b),
        (f"{a * c} ÷ {c} + {b} = ?", a + b),
    ][form]
    text = text.replace("×", "x").replace("÷", "/")  # the embedded font is ASCII-only
    img = _card(rng, [text], rng.randint(36, 60))
    wrong = value + rng.choice([-10, -2, -1, 1, 2, 3, 10])
    q = "Is the answer to the arithmetic question in the image {}?"
    return img, "PNG", q.format(value), q.format(wrong)


_PHRASES = {
    "French": (("bonne nuit", "good night"), ("merci beaucoup", "thank you very much"),
               ("le chat noir", "the black cat"), ("la maison rouge", "the red house"),
               ("un petit chien", "a small dog"), ("la mer bleue", "the blue sea")),
    "Spanish": (("buenas noches", "good night"), ("la casa blanca", "the white house"),
                ("el perro grande", "the big dog"), ("tengo hambre", "I am hungry"),
                ("muchas gracias", "thank you very much"), ("el libro azul", "the blue book")),
    "German": (("guten Morgen", "good morning"), ("ich habe Durst", "I am thirsty"),
               ("das rote Auto", "the red car"), ("der alte Mann", "the old man"),
               ("vielen Dank", "thank you very much"), ("gute Nacht", "good night")),
    "Italian": (("buona sera", "good evening"), ("il gatto nero", "the black cat"),
                ("la luna piena", "the full moon"), ("acqua fredda", "cold water"),
                ("il treno veloce", "the fast train")),
}  # fmt: skip


def _translation(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    lang = rng.choice(list(_PHRASES))
    foreign, english = rng.choice(_PHRASES[lang])
    img = _card(rng, [foreign], rng.randint(40, 64))
    wrong = rng.choice([e for _, e in _PHRASES[lang] if e != english])
    q = "Is it appropriate to translate the {} in the image into English '{}'?"
    return img, "PNG", q.format(lang, english), q.format(lang, wrong)


_WORDS = ("cat", "river", "apple", "planet", "garden", "music", "window", "silver", "forest", "bridge")


def _program(rng: random.Random) -> tuple[list[str], str, str]:
    """Lines of a tiny Python program, its output, and a plausible wrong output."""
    kind = rng.randrange(7)
    if kind == 0:
        a, b = rng.randint(2, 60), rng.randint(2, 60)
        return [f"a = {a}", f"b = {b}", "print(a + b)"], str(a + b), str(a + b + rng.choice((-1, 1, 10)))
    if kind == 1:
        word = rng.choice(_WORDS)
        return [f"s = '{word}'", "print(s.upper())"], word.upper(), word.capitalize()
    if kind == 2:
        xs = [rng.randint(1, 20) for _ in range(rng.randint(3, 5))]
        return [f"x = {xs}", "print(sum(x))"], str(sum(xs)), str(sum(xs) + rng.choice((-2, 2, 5)))
    if kind == 3:
        n = rng.randint(3, 9)
        total = sum(range(n))
        return (
            ["total = 0", f"for i in range({n}):", "    total += i", "print(total)"],
            str(total),
            str(total + n),
        )
    if kind == 4:
        w1, w2 = rng.sample(_WORDS, 2)
        return [f"words = ['{w1}', '{w2}']", "print(' '.join(words))"], f"{w1} {w2}", f"{w2} {w1}"
    if kind == 5:
        s, k = rng.choice(("ab", "xo", "hi", "na")), rng.randint(2, 4)
        return [f"print('{s}' * {k})"], s * k, s * (k + 1)
    n = rng.randint(1, 99)
    parity, other = ("even", "odd") if n % 2 == 0 else ("odd", "even")
    lines = [f"n = {n}", "if n % 2 == 0:", "    print('even')", "else:", "    print('odd')"]
    return lines, parity, other


def _code(rng: random.Random) -> tuple[Image.Image, str, str, str]:
    lines, out, wrong = _program(rng)
    img = _card(rng, lines, rng.randint(24, 34), width=(520, 1000))
    q = "The image shows a python code. Is the output of the code '{}'?"
    return img, "PNG", q.format(out), q.format(wrong)


COGNITION: dict[str, Callable[[random.Random], tuple[Image.Image, str, str, str]]] = {
    "commonsense_reasoning": _commonsense,
    "numerical_calculation": _numerical,
    "text_translation": _translation,
    "code_reasoning": _code,
}
