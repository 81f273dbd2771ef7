"""Synthetic MMMU validation (`lmms-lab/MMMU`, split `validation`): 30 subjects × 30 questions.

Each question is a pure function of (seed, subject, number). The layout of a question (how many images,
where `<image N>` placeholders go) depends only on its position, so the awkward cases of
research/lmms-eval.md §2.4 sit at fixed ids that every set of 60 or more questions contains.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from PIL import Image, ImageDraw

from vlmparity.synth import draw as D

SUBJECTS = (
    "Accounting", "Agriculture", "Architecture_and_Engineering", "Art", "Art_Theory", "Basic_Medical_Science",
    "Biology", "Chemistry", "Clinical_Medicine", "Computer_Science", "Design", "Diagnostics_and_Laboratory_Medicine",
    "Economics", "Electronics", "Energy_and_Power", "Finance", "Geography", "History", "Literature", "Manage",
    "Marketing", "Materials", "Math", "Mechanical_Engineering", "Music", "Pharmacy", "Physics", "Psychology",
    "Public_Health", "Sociology",
)  # fmt: skip
PER_SUBJECT = 30
FULL_SIZE = len(SUBJECTS) * PER_SUBJECT  # 900
MAX_IMAGES = 7

# Per-subject counts of open questions follow the official validation key (53 of 900); the positions are
# ours, with a few at numbers 1-2 so that small sets contain open questions, list-valued answers included.
OPEN_POSITIONS: dict[str, tuple[int, ...]] = {
    "Architecture_and_Engineering": (14,),
    "Basic_Medical_Science": (10, 14),
    "Biology": (10,),
    "Chemistry": (1, 13, 19, 20, 23, 25, 30),
    "Computer_Science": (9, 23, 26),
    "Economics": (20,),
    "Electronics": (2, 4, 5, 6, 11, 12, 16, 21, 24, 25, 26, 27, 29, 30),
    "Finance": (2, 10, 17, 20, 23, 24, 25, 30),
    "Geography": (1, 14, 22),
    "Manage": (3, 17, 20, 21, 23, 25),
    "Marketing": (11,),
    "Math": (2,),
    "Pharmacy": (3, 19, 26),
    "Physics": (21,),
    "Psychology": (20,),
}
# Open questions whose answer is a list literal of accepted answers, as three real ones are.
LIST_ANSWERS = {("Geography", 1): "place", ("Math", 2): "fraction", ("Chemistry", 30): "formula"}
# The awkward image layouts of §2.4 (and many-image questions) pinned to question 2 of some subjects.
FORCED_LAYOUTS: dict[tuple[str, int], tuple[str, int]] = {
    ("Accounting", 2): ("out_of_order", 2),
    ("Agriculture", 2): ("repeated", 2),
    ("Architecture_and_Engineering", 2): ("option_only", 4),
    ("Art", 2): ("unreferenced", 2),
    ("Art_Theory", 2): ("in_order", 5),
    ("Biology", 2): ("in_order", 6),
    ("Clinical_Medicine", 2): ("in_order", 7),
    ("Computer_Science", 2): ("mixed", 4),
    ("Design", 2): ("in_order", 3),
    ("Diagnostics_and_Laboratory_Medicine", 2): ("option_only", 7),
}
# Number of options of multiple-choice questions in the real validation set (847 questions).
OPTION_COUNTS = {2: 28, 3: 111, 4: 606, 5: 91, 6: 5, 7: 2, 9: 4}
DIFFICULTY = {"Easy": 30, "Medium": 50, "Hard": 20}

SUBFIELDS: dict[str, tuple[str, ...]] = {
    "Accounting": ("Financial Accounting", "Managerial Accounting", "Investment", "Auditing", "Taxation"),
    "Agriculture": ("Animal Anatomy", "Plant Physiology", "Agricultural Economics", "Plant Pathology"),
    "Architecture_and_Engineering": ("Surveying and Mapping", "Structural Engineering", "Civil Engineering"),
    "Art": ("Fine Arts", "Drawing and Painting", "Photography", "Art History"),
    "Art_Theory": ("Art History", "Art Criticism", "Aesthetics", "Color Theory"),
    "Basic_Medical_Science": ("Anatomy", "Physiology", "Immunology", "Neurobiology"),
    "Biology": ("Genetics", "Ecology", "Cell Biology", "Evolution"),
    "Chemistry": ("Organic Chemistry", "Inorganic Chemistry", "Physical Chemistry", "Analytical Chemistry"),
    "Clinical_Medicine": ("Clinical Radiology", "Cardiovascular", "Pathology", "Dental"),
    "Computer_Science": ("Data Structure and Algorithm", "Computer Network", "Operating System"),
    "Design": ("Design History", "Graphic Design", "Industrial Design"),
    "Diagnostics_and_Laboratory_Medicine": ("Medical Imaging", "Laboratory Medicine", "Electrocardiography"),
    "Economics": ("Macroeconomics", "Microeconomics", "Econometrics", "Economic Theory"),
    "Electronics": ("Analog electronics", "Digital electronics", "Signal Processing"),
    "Energy_and_Power": ("Thermodynamics", "Heat Transfer", "Fluid Mechanics", "Power Systems"),
    "Finance": ("Corporate Finance", "Financial Marketing", "Managerial Finance", "Investment"),
    "Geography": ("Human Geography", "Physical Geography", "Geographic Information Systems"),
    "History": ("Modern History", "World History", "European History", "Comparative History"),
    "Literature": ("Poetry", "Fiction", "Comparative Literature"),
    "Manage": ("Operations Management", "Management Models", "Cost Management"),
    "Marketing": ("Market Research", "Marketing Strategy", "Consumer Behavior"),
    "Materials": ("Materials Science", "Mechanics of Materials", "Polymers"),
    "Math": ("Calculus", "Geometry", "Graph Theory", "Statistics", "Linear Algebra"),
    "Mechanical_Engineering": ("Mechanical Design", "Fluid Dynamics", "Dynamics and Control"),
    "Music": ("Music Theory", "Harmony", "Music History"),
    "Pharmacy": ("Pharmacology", "Pharmaceutical Chemistry", "Pharmacokinetics"),
    "Physics": ("Classical Mechanics", "Electromagnetism", "Optics", "Thermodynamics"),
    "Psychology": ("Social Psychology", "Biological Psychology", "Clinical Psychology"),
    "Public_Health": ("Epidemiology", "Biostatistics", "Health Policy"),
    "Sociology": ("Sociology Theory", "Social Stratification", "Demography"),
}


def _lettered(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix} {c}" for c in "ABCDEFGHI")


# Chart and table vocabulary per subject: (item labels (at least 9), what is measured).
VOCAB: dict[str, tuple[tuple[str, ...], str]] = {
    "Accounting": (("Cash", "Inventory", "Receivables", "Equipment", "Land", "Patents", "Supplies", "Prepaid rent",
                    "Investments"), "balance ($ thousands)"),
    "Agriculture": (("Wheat", "Maize", "Rice", "Barley", "Soybean", "Oats", "Sorghum", "Millet", "Rye"), "yield (t/ha)"),
    "Architecture_and_Engineering": (_lettered("Beam"), "load (kN)"),
    "Art": (("Oil", "Acrylic", "Watercolor", "Pastel", "Ink", "Charcoal", "Tempera", "Gouache", "Fresco"),
            "works in the collection"),
    "Art_Theory": (("Baroque", "Rococo", "Romanticism", "Realism", "Impressionism", "Cubism", "Surrealism",
                    "Bauhaus", "Pop Art"), "paintings catalogued"),
    "Basic_Medical_Science": (("Neutrophils", "Lymphocytes", "Monocytes", "Eosinophils", "Basophils", "Platelets",
                               "Erythrocytes", "Plasma cells", "Mast cells"), "relative count"),
    "Biology": (("Oak", "Pine", "Fern", "Moss", "Maple", "Birch", "Lichen", "Grass", "Ivy"), "population"),
    "Chemistry": (_lettered("Sample"), "concentration (mmol/L)"),
    "Clinical_Medicine": (_lettered("Ward"), "admissions"),
    "Computer_Science": (_lettered("Node"), "latency (ms)"),
    "Design": (_lettered("Logo"), "preference votes"),
    "Diagnostics_and_Laboratory_Medicine": (("Glucose", "Sodium", "Potassium", "Calcium", "Urea", "Creatinine",
                                             "Albumin", "Chloride", "Iron"), "level"),
    "Economics": (tuple(str(y) for y in range(2015, 2024)), "output (billion $)"),
    "Electronics": (tuple(f"R{i}" for i in range(1, 10)), "resistance (ohm)"),
    "Energy_and_Power": (("Coal", "Gas", "Nuclear", "Hydro", "Wind", "Solar", "Biomass", "Oil", "Geothermal"),
                         "output (MW)"),
    "Finance": (_lettered("Fund"), "return (%)"),
    "Geography": (("Northport", "Lakeside", "Riverton", "Hillview", "Baymouth", "Stonebridge", "Westfield",
                   "Eastham", "Southcliff"), "population (thousands)"),
    "History": (tuple(str(y) for y in range(1850, 1940, 10)), "population (millions)"),
    "Literature": (("Novel", "Poetry", "Drama", "Essay", "Memoir", "Short story", "Epic", "Satire", "Fable"),
                   "titles published"),
    "Manage": (_lettered("Project"), "cost ($ thousands)"),
    "Marketing": (_lettered("Brand"), "market share (%)"),
    "Materials": (("Steel", "Aluminium", "Copper", "Titanium", "Brass", "Nylon", "Glass", "Concrete", "Oak"),
                  "strength (MPa)"),
    "Math": (tuple(f"x = {i}" for i in range(1, 10)), "f(x)"),
    "Mechanical_Engineering": (_lettered("Gear"), "speed (rpm)"),
    "Music": (("Violin", "Viola", "Cello", "Flute", "Oboe", "Clarinet", "Horn", "Trumpet", "Harp"), "players"),
    "Pharmacy": (_lettered("Drug"), "half-life (h)"),
    "Physics": (tuple(f"Trial {i}" for i in range(1, 10)), "velocity (m/s)"),
    "Psychology": (_lettered("Group"), "mean score"),
    "Public_Health": (_lettered("Region"), "cases per 100,000"),
    "Sociology": (("Urban", "Rural", "Suburban", "Coastal", "Inland", "Northern", "Southern", "Eastern", "Western"),
                  "households surveyed"),
}  # fmt: skip


@dataclass
class Figure:
    """One drawn image with the fact a question can ask about."""

    image: Image.Image
    fmt: str  # "PNG" or "JPEG"
    img_type: str
    value: int = 0


@dataclass
class Question:
    """One MMMU question before encoding: text, options (empty when open), answer and its figures."""

    question: str
    options: list[str]
    answer: str
    figures: list[Figure]
    explanation: str = ""
    extra: dict[str, str] = field(default_factory=dict)


def question_specs(n: int | None) -> list[tuple[str, int]]:
    """(subject, number) of an `n`-question set in storage order: round-robin over subjects, then sorted."""
    total = FULL_SIZE if n is None else max(0, min(n, FULL_SIZE))
    chosen = [(s, k) for k in range(1, PER_SUBJECT + 1) for s in SUBJECTS][:total]
    return sorted(chosen, key=lambda sk: (SUBJECTS.index(sk[0]), sk[1]))


def layout_of(seed: int, subject: str, number: int) -> tuple[str, int]:
    """Image layout of a question: (kind, image count). Forced at fixed ids, else drawn from the seed."""
    if (subject, number) in FORCED_LAYOUTS:
        return FORCED_LAYOUTS[(subject, number)]
    if number in OPEN_POSITIONS.get(subject, ()):
        return ("single", 1)
    rng = random.Random(f"mmmu-layout:{seed}:{subject}:{number}")
    kind = rng.choices(
        ("single", "in_order", "option_only", "out_of_order", "repeated", "unreferenced", "mixed"),
        weights=(90, 4, 2, 1, 1, 1, 1),
    )[0]
    if kind == "single":
        return kind, 1
    if kind in ("out_of_order", "repeated", "unreferenced"):
        return kind, 2
    if kind == "mixed":
        return kind, rng.randint(3, 5)
    return kind, rng.choices((2, 3, 4, 5, 6, 7), weights=(40, 25, 20, 7, 4, 4))[0]


def make_question(seed: int, subject: str, number: int) -> dict[str, object]:
    """Build one dataset row (image columns as encoded bytes or None)."""
    rng = random.Random(f"mmmu:{seed}:{subject}:{number}")
    qid = f"validation_{subject}_{number}"
    is_open = number in OPEN_POSITIONS.get(subject, ())
    kind, count = layout_of(seed, subject, number)
    if is_open:
        q = _open_question(rng, subject, LIST_ANSWERS.get((subject, number)))
    elif kind == "single":
        q = _single_mc(rng, subject, _option_count(rng))
    else:
        q = _MULTI[kind](rng, count)
    if not q.explanation and rng.random() < 0.08:
        q.explanation = "See the figure; the answer follows from the values shown."
    images: list[bytes | None] = [_encode(rng, f) for f in q.figures]
    images += [None] * (MAX_IMAGES - len(images))
    types: list[str] = []
    for f in q.figures:
        if f.img_type not in types:
            types.append(f.img_type)
    row: dict[str, object] = {
        "id": qid,
        "question": q.question,
        "options": repr(q.options),
        "explanation": q.explanation,
    }
    row.update({f"image_{i + 1}": img for i, img in enumerate(images)})
    row.update(
        {
            "img_type": repr(types),
            "answer": q.answer,
            "topic_difficulty": rng.choices(list(DIFFICULTY), weights=list(DIFFICULTY.values()))[0],
            "question_type": "open" if is_open else "multiple-choice",
            "subfield": rng.choice(SUBFIELDS[subject]),
        }
    )
    return row


# ---------------------------------------------------------------- helpers


def _encode(rng: random.Random, fig: Figure) -> bytes:
    # Some figures get scanner grain: real MMMU figures are scans and screenshots, tens to hundreds of KB.
    image = D.add_grain(fig.image, rng, 2) if fig.fmt == "PNG" and rng.random() < 0.3 else fig.image
    return D.encode(image, fig.fmt, quality=rng.randint(85, 94))


def _option_count(rng: random.Random) -> int:
    return rng.choices(list(OPTION_COUNTS), weights=list(OPTION_COUNTS.values()))[0]


def _letter(i: int) -> str:
    return chr(ord("A") + i)


def _choices(rng: random.Random, truth: str, pool: list[str], k: int) -> tuple[list[str], str]:
    """k distinct options: the truth plus k-1 from `pool`, shuffled; returns (options, answer letter)."""
    others = [p for p in dict.fromkeys(pool) if p != truth]
    options = [truth, *rng.sample(others, min(k - 1, len(others)))]
    rng.shuffle(options)
    return options, _letter(options.index(truth))


def _numeric_choices(
    rng: random.Random, truth: float, k: int, *, decimals: int = 0, minimum: float | None = None
) -> tuple[list[str], str]:
    """k distinct numeric options around the truth (none below `minimum`), in ascending order."""
    step = max(1.0, abs(truth) * 0.1) if decimals == 0 else max(0.5, abs(truth) * 0.05)
    values = {round(truth, decimals)}
    while len(values) < k:
        jitter = rng.uniform(-0.4, 0.4) * step if decimals > 0 else 0.0
        value = round(truth + step * rng.choice([-4, -3, -2, -1, 1, 2, 3, 4, 5, 6, 7, 8]) + jitter, decimals)
        if minimum is None or value >= minimum:
            values.add(value)
    ordered = sorted(values)
    options = [_num(v, decimals) for v in ordered]
    return options, _letter(ordered.index(round(truth, decimals)))


def _num(value: float, decimals: int = 0) -> str:
    return str(round(value)) if decimals == 0 else f"{value:.{decimals}f}"


def _shapes_figure(
    rng: random.Random, shape: str, color: str, count: int, *, photo: bool | None = None
) -> Figure:
    """`count` shapes of one kind and colour, plus distractor shapes of other kinds."""
    photo = rng.random() < 0.3 if photo is None else photo
    w = rng.choice((480, 560, 640, 800, 1024, 1280))
    h = int(w * rng.choice((0.6, 0.75, 1.0)))
    img = (
        D.photo_background(rng, w, h, noise=rng.randint(6, 14))
        if photo
        else D.paper_background(rng, w, h, tint=30)
    )
    others = [s for s in D.SHAPES if s != shape]
    items = [(color, shape)] * count + [
        (rng.choice(list(D.COLORS)), rng.choice(others)) for _ in range(rng.randint(0, 3))
    ]
    rng.shuffle(items)
    unit = min(w, h)
    radii = [rng.uniform(unit * 0.05, unit * 0.08) for _ in items]
    draw = ImageDraw.Draw(img)
    for (c, s), (cx, cy, r) in zip(items, D.scatter_positions(rng, w, h, radii), strict=True):
        D.draw_shape(draw, s, cx, cy, r, D.COLORS[c])
    return Figure(img, "JPEG" if photo else "PNG", "Photographs" if photo else "Geometric Shapes", count)


def _expression_figure(rng: random.Random, value_range: tuple[int, int] = (5, 120)) -> Figure:
    """An arithmetic expression card; `value` is its result."""
    while True:
        a, b, c = rng.randint(2, 40), rng.randint(2, 15), rng.randint(2, 9)
        text, value = rng.choice(
            [
                (f"{a} + {b} x {c}", a + b * c),
                (f"({a} - {b}) x {c}", (a - b) * c),
                (f"{a} x {c} + {b}", a * c + b),
            ]
        )
        if value_range[0] <= value <= value_range[1]:
            break
    fs = rng.randint(34, 60)
    w = max(D.text_size(text, fs)[0] + 2 * fs, rng.randint(320, 700))
    img = D.paper_background(rng, w, int(fs * 3.2), tint=30)
    D.centered_text(img, text, img.height // 2, fs, (15, 15, 15))
    return Figure(img, "PNG", "Mathematical Notations", value)


def _distinct_values(rng: random.Random, make: Callable[[random.Random], Figure], k: int) -> list[Figure]:
    """k figures from `make(rng)` with pairwise different values."""
    figures: list[Figure] = []
    while len(figures) < k:
        f = make(rng)
        if all(f.value != g.value for g in figures):
            figures.append(f)
    return figures


def _chart_data(rng: random.Random, subject: str, k: int) -> tuple[list[str], list[int], str]:
    items, measure = VOCAB[subject]
    labels = rng.sample(list(items), k)
    values = rng.sample(range(5, 100), k)  # distinct, so "highest" is unambiguous
    return labels, values, measure


def _bar_figure(rng: random.Random, subject: str, k: int) -> tuple[Figure, list[str], list[int], str]:
    labels, values, measure = _chart_data(rng, subject, k)
    w = rng.randint(max(560, 110 * k), max(900, 150 * k))
    img = D.bar_chart(
        rng, labels, values, width=w, height=int(w * rng.uniform(0.55, 0.75)), title=measure.capitalize()
    )
    return Figure(img, "PNG", "Plots and Charts"), labels, values, measure


def _table_figure(
    rng: random.Random, subject: str, rows: int
) -> tuple[Figure, list[str], list[list[float]], list[str]]:
    items, measure = VOCAB[subject]
    labels = rng.sample(list(items), rows)
    cols = ["Q1", "Q2", "Q3"][: rng.randint(2, 3)]
    decimals = rng.random() < 0.3
    data = [[round(rng.uniform(1, 60), 2) if decimals else rng.randint(1, 60) for _ in cols] for _ in labels]
    cells = [
        [label, *(_num(v, 2 if decimals else 0) for v in row)]
        for label, row in zip(labels, data, strict=True)
    ]
    img = D.table_image(rng, ["Item", *cols], cells, title=f"Table: {measure}", font_size=rng.randint(18, 28))
    return Figure(img, "PNG", "Tables"), labels, data, cols


# ---------------------------------------------------------------- single-image questions


def _single_mc(rng: random.Random, subject: str, k: int) -> Question:
    kind = rng.randrange(6 if subject != "Chemistry" else 7)
    if kind == 0:  # highest bar
        fig, labels, values, measure = _bar_figure(rng, subject, k)
        truth = labels[values.index(max(values))]
        q = f"The bar chart in <image 1> shows {measure} by item. Which item has the highest bar?"
        options = labels[:]
        rng.shuffle(options)
        return Question(q, options, _letter(options.index(truth)), [fig])
    if kind == 1:  # count shapes
        shape, color = rng.choice(D.SHAPES), rng.choice(list(D.COLORS))
        fig = _shapes_figure(rng, shape, color, rng.randint(1, 8))
        opts, ans = _numeric_choices(rng, fig.value, k, minimum=0)
        return Question(f"How many {color} {D.PLURAL[shape]} are there in <image 1>?", opts, ans, [fig])
    if kind == 2:  # expression value
        fig = _expression_figure(rng)
        opts, ans = _numeric_choices(rng, fig.value, k)
        lead = rng.choice(
            (
                "<image 1> What is the value of the expression shown?",
                "What is the value of the expression in <image 1>?",
            )
        )
        return Question(lead, opts, ans, [fig])
    if kind == 3:  # table sum
        fig, labels, data, cols = _table_figure(rng, subject, rng.randint(3, 6))
        c = rng.randrange(len(cols))
        a, b = rng.sample(range(len(labels)), 2)
        pair_sum = data[a][c] + data[b][c]
        decimals = 0 if all(float(r[c]).is_integer() for r in data) else 2
        opts, ans = _numeric_choices(rng, pair_sum, k, decimals=decimals)
        q = f"Based on the table in <image 1>, what is the sum of the {cols[c]} values of {labels[a]} and {labels[b]}?"
        return Question(q, opts, ans, [fig])
    if kind == 4:  # colour of the shapes
        shape, color = rng.choice(D.SHAPES), rng.choice(list(D.COLORS))
        fig = _shapes_figure(rng, shape, color, rng.randint(1, 4))
        opts, ans = _choices(rng, color, list(D.COLORS), min(k, len(D.COLORS)))
        return Question(f"What is the colour of the {D.PLURAL[shape]} in <image 1>?", opts, ans, [fig])
    if kind == 5:  # line chart maximum
        start = rng.randint(1990, 2012)
        n = max(k, rng.randint(5, 9))
        xs = [str(start + i) for i in range(n)]
        ys = rng.sample(range(10, 200), n)
        w = rng.randint(max(640, 90 * n), 1200)
        _, measure = VOCAB[subject]
        img = D.line_chart(rng, xs, ys, width=w, height=int(w * 0.6), title=measure.capitalize())
        truth = xs[ys.index(max(ys))]
        opts, ans = _choices(rng, truth, xs, k)
        q = f"In which year does the {measure} plotted in <image 1> reach its maximum?"
        return Question(q, opts, ans, [Figure(img, "PNG", "Plots and Charts")])
    cation, anion, formula = rng.choice(_IONS)
    fig = _ions_figure(rng, cation, anion)
    opts, ans = _choices(rng, formula, [f for _, _, f in _IONS], k)
    return Question(
        "What is the formula of the ionic compound formed by the two ions in <image 1>?", opts, ans, [fig]
    )


_IONS = (("Na+", "Cl-", "NaCl"), ("Mg2+", "S2-", "MgS"), ("K+", "Br-", "KBr"), ("Ca2+", "O2-", "CaO"),
         ("Li+", "F-", "LiF"), ("Ca2+", "Cl-", "CaCl2"), ("Na+", "O2-", "Na2O"), ("Al3+", "Cl-", "AlCl3"),
         ("Mg2+", "Cl-", "MgCl2"))  # fmt: skip


def _ions_figure(rng: random.Random, cation: str, anion: str) -> Figure:
    fs = rng.randint(30, 48)
    img = D.paper_background(rng, rng.randint(420, 720), int(fs * 5), tint=30)
    D.draw_text_box(img, [f"cation: {cation}", f"anion: {anion}"], (fs, fs), fs, box=None)
    return Figure(img, "PNG", "Chemical Structures")


def _open_question(rng: random.Random, subject: str, list_kind: str | None) -> Question:
    if list_kind == "place":
        items, _ = VOCAB["Geography"]
        city = rng.choice(items)
        direction = rng.choice(("North", "South", "East", "West", "Upper", "Lower"))
        province = f"{direction} {rng.choice(('Vale', 'Marsh', 'Ridge', 'Coast'))}"
        fig = _map_figure(rng, list(items), city, province)
        q = "Which city is marked with the red star in <image 1>? Give the city or its province."
        return Question(q, [], repr([city, province]), [fig])
    if list_kind == "fraction":
        shape = rng.choice(D.SHAPES)
        count = rng.randint(2, 5)
        fig = _shapes_figure(rng, shape, rng.choice(list(D.COLORS)), count, photo=False)
        total = rng.randint(count + 2, count + 6)
        frac = Fraction(count, total)
        q = (
            f"<image 1> shows {count} {D.PLURAL[shape]}. If a bag holds these and {total - count} other tokens, "
            f"what fraction of the tokens are {D.PLURAL[shape]}?"
        )
        return Question(q, [], repr([f"{frac.numerator}/{frac.denominator}", f"{float(frac):.3f}"]), [fig])
    if list_kind == "formula":
        cation, anion, formula = rng.choice(_IONS)
        fig = _ions_figure(rng, cation, anion)
        q = "What is the formula of the ionic compound formed by the two ions in <image 1>?"
        return Question(q, [], repr([f"${formula}$", formula]), [fig])
    kind = rng.randrange(4)
    if kind == 0:
        fig = _expression_figure(rng)
        return Question("Evaluate the expression in <image 1>.", [], str(fig.value), [fig])
    if kind == 1:
        shape, color = rng.choice(D.SHAPES), rng.choice(list(D.COLORS))
        fig = _shapes_figure(rng, shape, color, rng.randint(1, 9))
        return Question(
            f"How many {color} {D.PLURAL[shape]} are there in <image 1>?", [], str(fig.value), [fig]
        )
    if kind == 2:
        fig, _labels, data, cols = _table_figure(rng, subject, rng.randint(3, 5))
        c = rng.randrange(len(cols))
        column_sum = sum(row[c] for row in data)
        answer = _num(column_sum) if all(float(r[c]).is_integer() for r in data) else f"{column_sum:.2f}"
        return Question(
            f"Using the table in <image 1>, compute the total of the {cols[c]} column.", [], answer, [fig]
        )
    shape, color = rng.choice(D.SHAPES), rng.choice(list(D.COLORS))
    fig = _shapes_figure(rng, shape, color, rng.randint(1, 3))
    return Question(f"What colour are the {D.PLURAL[shape]} in <image 1>?", [], color, [fig])


def _map_figure(rng: random.Random, cities: list[str], marked: str, province: str) -> Figure:
    w = rng.choice((700, 900, 1100))
    h = int(w * 0.7)
    img = D.photo_background(rng, w, h, noise=rng.randint(4, 8), cells=5)
    draw = ImageDraw.Draw(img)
    shown = [marked, *rng.sample([c for c in cities if c != marked], 4)]
    fs = max(14, w // 50)
    for i, (cx, cy, _) in enumerate(D.scatter_positions(rng, w, h, [w * 0.09] * len(shown))):
        if i == 0:
            D.draw_shape(draw, "star", cx, cy, fs * 1.1, D.COLORS["red"])
        else:
            draw.ellipse((cx - 6, cy - 6, cx + 6, cy + 6), fill=(20, 20, 20))
        D.draw_text_box(img, [shown[i]], (int(cx - w * 0.06), int(cy + fs)), fs, pad=4)
    D.draw_text_box(img, [f"Province: {province}"], (10, 10), fs)
    return Figure(img, "JPEG", "Maps")


# ---------------------------------------------------------------- multi-image questions


def _value_maker(rng: random.Random) -> Callable[[random.Random], Figure]:
    if rng.random() < 0.5:
        return _expression_figure
    shape, color = rng.choice(D.SHAPES), rng.choice(list(D.COLORS))
    return lambda r: _shapes_figure(r, shape, color, r.randint(1, 9))


def _in_order(rng: random.Random, count: int) -> Question:
    figs = _distinct_values(rng, _value_maker(rng), count)
    refs = ", ".join(f"<image {i}>" for i in range(1, count)) + f" and <image {count}>"
    what = "value" if figs[0].img_type == "Mathematical Notations" else "number of shapes"
    q = f"Figures {refs} are shown in that order. Which figure has the largest {what}?"
    options = [f"Figure {i}" for i in range(1, count + 1)]
    best = max(range(count), key=lambda i: figs[i].value)
    return Question(q, options, _letter(best), figs)


def _option_only(rng: random.Random, count: int) -> Question:
    shape, color = rng.choice(D.SHAPES), rng.choice(list(D.COLORS))
    figs = _distinct_values(rng, lambda r: _shapes_figure(r, shape, color, r.randint(1, 9)), count)
    target = rng.randrange(count)
    count_noun = f"{color} {shape}" if figs[target].value == 1 else f"{color} {D.PLURAL[shape]}"
    q = f"Which of the following pictures shows exactly {figs[target].value} {count_noun}?"
    return Question(q, [f"<image {i}>" for i in range(1, count + 1)], _letter(target), figs)


def _out_of_order(rng: random.Random, count: int) -> Question:
    figs = _distinct_values(rng, _expression_figure, count)
    truth = figs[1].value - figs[0].value
    opts, ans = _numeric_choices(rng, truth, _option_count(rng))
    q = (
        "Compare <image 2> with <image 1>: what is the value of the expression in the first figure mentioned "
        "minus the value of the expression in the second?"
    )
    return Question(q, opts, ans, figs)


def _repeated(rng: random.Random, count: int) -> Question:
    figs = _distinct_values(rng, _expression_figure, count)
    truth = figs[0].value + figs[1].value
    opts, ans = _numeric_choices(rng, truth, _option_count(rng))
    q = (
        "<image 1> and <image 2> each show an expression. "
        "Add the value of <image 1> to the value of <image 2>. What is the result?"
    )
    return Question(q, opts, ans, figs)


def _unreferenced(rng: random.Random, count: int) -> Question:
    figs = _distinct_values(rng, _expression_figure, count)
    opts, ans = _numeric_choices(rng, figs[0].value, _option_count(rng))
    return Question("What is the value of the expression in <image 1>?", opts, ans, figs)


def _mixed(rng: random.Random, count: int) -> Question:
    shape, color = rng.choice(D.SHAPES), rng.choice(list(D.COLORS))
    figs = _distinct_values(rng, lambda r: _shapes_figure(r, shape, color, r.randint(1, 9)), count)
    target = rng.randrange(1, count)
    figs[0] = _shapes_figure(rng, shape, color, figs[target].value)
    q = f"Which option shows the same number of {color} {D.PLURAL[shape]} as <image 1>?"
    return Question(q, [f"<image {i}>" for i in range(2, count + 1)], _letter(target - 1), figs)


_MULTI = {
    "in_order": _in_order,
    "option_only": _option_only,
    "out_of_order": _out_of_order,
    "repeated": _repeated,
    "unreferenced": _unreferenced,
    "mixed": _mixed,
}
