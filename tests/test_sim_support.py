"""Helpers for the simulator tests: lmms-eval-style requests built from dataset rows, tiny parquet sets.

Requests follow /work/shared/research/lmms-eval.md §1.2 (MME text), §2.3-2.4 (MMMU prompt, image order and
interleaving) and §4.2-4.3 (one user message, PNG data URLs, max_tokens 16/128, temperature 0). Written here
from those facts, independently of the project's own task modules.
"""

from __future__ import annotations

import ast
import base64
import io
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

MODEL = "llava-hf/llava-1.5-7b-hf"
MME_POST = "\nAnswer the question using a single word or phrase."
MC_PROMPT = "Answer with the option's letter from the given choices directly."
OPEN_PROMPT = "Answer the question using a single word or phrase."

Encoder = Callable[[bytes], str]


def png_url(data: bytes) -> str:
    """What lmms-eval sends: the decoded image converted to RGB, re-saved as PNG."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def jpeg_url(data: bytes, quality: int = 85) -> str:
    """A lossy re-encoding of the same pixels (LMMS_IMAGE_ENCODE_FORMAT=JPG)."""
    with Image.open(io.BytesIO(data)) as img:
        rgb = img.convert("RGB")
    buf = io.BytesIO()
    rgb.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def original_url(data: bytes) -> str:
    """The dataset's own bytes, untouched."""
    return "data:image/png;base64," + base64.b64encode(data).decode()


def image_part(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def text_part(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def mme_text(question: str) -> str:
    """lmms-eval's MME prompt: suffix ' Please answer yes or no.' removed, post-prompt appended."""
    return question.strip().replace(" Please answer yes or no.", "") + MME_POST


def mme_messages(row: Mapping[str, Any], encode: Encoder = png_url) -> list[dict[str, Any]]:
    """MME: the image part first, then the text (lmms-eval's auto doc_to_messages)."""
    return [
        {"role": "user", "content": [image_part(encode(row["image"])), text_part(mme_text(row["question"]))]}
    ]


def mmmu_prompt(row: Mapping[str, Any]) -> str:
    """construct_prompt with the default kwargs."""
    options = ast.literal_eval(row["options"])
    if row["question_type"] == "multiple-choice" and options:
        block = "\n".join(f"{chr(65 + i)}. {opt}" for i, opt in enumerate(options))
        return f"{row['question']}\n{block}\n\n{MC_PROMPT}"
    return f"{row['question']}\n\n{OPEN_PROMPT}"


def mmmu_messages(row: Mapping[str, Any], encode: Encoder = png_url) -> list[dict[str, Any]]:
    """MMMU: images by sorted number, interleaved at `<image>` splits, stripped text segments."""
    prompt = mmmu_prompt(row)
    keys = sorted({f"image_{m[7:-1]}" for m in re.findall(r"<image \d+>", prompt)})
    visuals = [row[k] for k in keys if row.get(k) is not None]
    parts = re.sub(r"<image \d+>", "<image>", prompt).split("<image>")
    content: list[dict[str, Any]] = []
    for i, visual in enumerate(visuals):
        if i < len(parts) - 1 and parts[i].strip():
            content.append(text_part(parts[i].strip()))
        content.append(image_part(encode(visual)))
    content.append(text_part(parts[-1].strip()))
    return [{"role": "user", "content": content}]


def messages_for(row: Mapping[str, Any], encode: Encoder = png_url) -> list[dict[str, Any]]:
    return mme_messages(row, encode) if "question_id" in row else mmmu_messages(row, encode)


def body_for(row: Mapping[str, Any], encode: Encoder = png_url, **extra: Any) -> dict[str, Any]:
    """The chat body lmms-eval 0.7.3 sends for a row (MME: 16 tokens, MMMU: 128; temperature 0)."""
    max_tokens = 16 if "question_id" in row else 128
    body: dict[str, Any] = {"model": MODEL, "messages": messages_for(row, encode), "max_tokens": max_tokens}
    body["temperature"] = 0
    body.update(extra)
    return body


def mme_gold(row: Mapping[str, Any]) -> str:
    return str(row["answer"]).strip()


def yes_no(text: str) -> str:
    """lmms-eval's MME label (research §1.3): 'yes', 'no' or 'other'."""
    s = text.lower().strip().replace(".", "")
    if s in ("yes", "no"):
        return s
    if len(s) == 1:
        return {"y": "yes", "n": "no"}.get(s, "other")
    head = s[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def mc_letter(text: str) -> str | None:
    """The letter of a terse ("B") or verbose ("The answer is (B).") multiple-choice answer."""
    found = re.fullmatch(r"\s*([A-Z])\s*|.*\(([A-Z])\)\.?\s*", text)
    if not found:
        return None
    return found.group(1) or found.group(2)


# ------------------------------------------------------------------ tiny hand-made sets


def drawn_png(seed: int, size: tuple[int, int] = (64, 48)) -> bytes:
    """A small PNG whose pixels depend on `seed` (distinct pictures for distinct seeds)."""
    img = Image.new("RGB", size, ((seed * 53) % 256, (seed * 97) % 256, (seed * 31) % 256))
    draw = ImageDraw.Draw(img)
    x = 4 + (seed * 7) % (size[0] - 20)
    draw.rectangle([x, 8, x + 14, 30], fill=(255 - (seed * 53) % 256, 20, 200))
    draw.ellipse([2, 30, 20 + seed % 20, 46], fill=(10, 240 - seed % 200, 30))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def write_tiny_mme(folder: Path, pairs: int = 4) -> Path:
    """An MME-shaped parquet (split test): `pairs` images, one Yes and one No question each."""
    rows = []
    categories = ["existence", "count", "color", "OCR", "code_reasoning"]
    for i in range(pairs):
        image = {"bytes": drawn_png(i), "path": f"{i:04d}.png"}
        category = categories[i % len(categories)]
        qid = f"{category}/{i:04d}.png"
        rows.append({"question_id": qid, "image": image, "question": f"Is there a square number {i} in the image? Please answer yes or no.", "answer": "Yes", "category": category})  # fmt: skip
        rows.append({"question_id": qid, "image": image, "question": f"Is there a circle number {i} in the image? Please answer yes or no.", "answer": "No", "category": category})  # fmt: skip
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    schema = pa.schema(
        [("question_id", pa.string()), ("image", image_type), ("question", pa.string()), ("answer", pa.string()),
         ("category", pa.string())]
    )  # fmt: skip
    out = folder / "data" / "test-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), out)
    return folder


def write_tiny_mmmu(folder: Path) -> Path:
    """An MMMU-shaped parquet (split validation): MC, open and two-image questions."""
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

    def img(seed: int) -> dict[str, Any]:
        return {"bytes": drawn_png(100 + seed), "path": f"{seed}.png"}

    base = {f"image_{k}": None for k in range(1, 8)}
    rows = [
        {**base, "id": "validation_Art_1", "question": "Which colour dominates <image 1>?",
         "options": "['red', 'green', 'blue', 'grey']", "image_1": img(1), "answer": "B",
         "question_type": "multiple-choice", "subfield": "Painting"},
        {**base, "id": "validation_Math_1", "question": "How many sides does the shape in <image 1> have?",
         "options": "[]", "image_1": img(2), "answer": "4", "question_type": "open", "subfield": "Geometry"},
        {**base, "id": "validation_Math_2", "question": "Compare <image 2> with <image 1>: which is larger?",
         "options": "['the first', 'the second']", "image_1": img(3), "image_2": img(4), "answer": "A",
         "question_type": "multiple-choice", "subfield": "Geometry"},
        {**base, "id": "validation_Art_Theory_3", "question": "Name the movement of <image 1>.",
         "options": "[]", "image_1": img(5), "answer": "cubism", "question_type": "open", "subfield": "Art History"},
    ]  # fmt: skip
    for row in rows:
        row.update({"explanation": "", "img_type": "['Paintings']", "topic_difficulty": "Easy"})
    fields = [
        ("id", pa.string()),
        ("question", pa.string()),
        ("options", pa.string()),
        ("explanation", pa.string()),
    ]
    fields += [(f"image_{k}", image_type) for k in range(1, 8)]
    fields += [
        (c, pa.string()) for c in ("img_type", "answer", "topic_difficulty", "question_type", "subfield")
    ]
    out = folder / "data" / "validation-00000-of-00001.parquet"
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=pa.schema(fields)), out)
    return folder
