"""The simulator's answer model over HTTP: recognition, determinism, accuracy, styles, divergence.

Expected rates come from the configuration and the documented model (vlmparity.sim.answers): the share of
right answers is `accuracy`, the share of unparseable ones is the unparseable weight, and an engine with
divergence d differs from the model's reference on a share d of the samples. Tolerances are 4 binomial
standard deviations.
"""

from __future__ import annotations

import ast
import math
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from test_sim_support import (
    MODEL,
    body_for,
    drawn_png,
    image_part,
    jpeg_url,
    mc_letter,
    mmmu_prompt,
    original_url,
    png_url,
    text_part,
    yes_no,
)
from vlmparity.data.sources import load_rows
from vlmparity.sim import SimServer

FAST = {"time_scale": 0}
TERSE = {"terse": 1, "verbose": 0, "unparseable": 0}

Row = dict[str, Any]


def expected_id(row: Row) -> str:
    return f"{row['question_id']}::{row['question'].strip()}" if "question_id" in row else str(row["id"])


def is_right(row: Row, text: str) -> bool:
    """Judge an answer the way the benchmarks would for the simulator's styles."""
    gold = str(row["answer"]).strip()
    if "question_id" in row:
        return yes_no(text) == gold.lower()
    if row["question_type"] == "multiple-choice" and row["options"] != "[]":
        return mc_letter(text) == gold
    value = re.sub(r"^The answer is (.*)\.$", r"\1", text.strip())
    return value == gold


def is_unparseable(row: Row, text: str) -> bool:
    if "question_id" in row:
        return yes_no(text) == "other"
    if row["question_type"] == "multiple-choice" and row["options"] != "[]":
        return mc_letter(text) is None
    return text.strip().endswith(".") and not text.startswith("The answer is ")


def ask(
    sim: SimServer, row: Row, encode: Callable[[bytes], str] = original_url, **extra: Any
) -> tuple[str, Any]:
    response = httpx.post(sim.base_url + "/chat/completions", json=body_for(row, encode, **extra), timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["choices"][0]["message"]["content"], sim.chat_log[-1]


def within(observed: int, n: int, p: float, sigmas: float = 4.0) -> bool:
    return abs(observed - n * p) <= sigmas * math.sqrt(n * p * (1 - p)) + 1e-9


@pytest.fixture(scope="module")
def small_rows(synth_mme_small: Path, synth_mmmu_small: Path) -> list[Row]:
    return load_rows(synth_mme_small, split="test") + load_rows(synth_mmmu_small, split="validation")


@pytest.fixture(scope="module")
def small_data(synth_mme_small: Path, synth_mmmu_small: Path) -> list[Path]:
    return [synth_mme_small, synth_mmmu_small]


def sim_for(data: list[Path], personality: str = "vllm", **answers: Any) -> SimServer:
    return SimServer(personality=personality, data=data, image_limit=None, load=FAST, answers=answers)


# ------------------------------------------------------------------ recognition


def test_recognises_every_small_question_from_the_original_bytes(
    small_data: list[Path], small_rows: list[Row]
) -> None:
    with sim_for(small_data, accuracy=1.0, styles=TERSE) as sim:
        for row in small_rows:
            text, entry = ask(sim, row)
            assert entry.sample_id == expected_id(row)
            assert is_right(row, text), (row.get("id") or row["question_id"], text)


@pytest.mark.parametrize("encode", [png_url, jpeg_url], ids=["png", "jpeg"])
def test_recognises_reencoded_images(
    encode: Callable[[bytes], str], small_data: list[Path], small_rows: list[Row]
) -> None:
    # a spread of rows (PNG encoding of the big synthetic pictures is slow), both tasks
    rows = small_rows[::9]
    with sim_for(small_data, accuracy=1.0, styles=TERSE) as sim:
        for row in rows:
            _, entry = ask(sim, row, encode)
            assert entry.sample_id == expected_id(row)


def test_mme_pair_told_apart_by_text(small_data: list[Path], small_rows: list[Row]) -> None:
    first, second = small_rows[0], small_rows[1]
    assert first["question_id"] == second["question_id"] and first["answer"] != second["answer"]
    with sim_for(small_data, accuracy=1.0, styles=TERSE) as sim:
        answers = [ask(sim, row) for row in (first, second)]
    assert [entry.sample_id for _, entry in answers] == [expected_id(first), expected_id(second)]
    assert [text for text, _ in answers] == [first["answer"], second["answer"]]


def test_any_template_around_the_question(small_data: list[Path], small_rows: list[Row]) -> None:
    mme = small_rows[4]
    mmmu = next(r for r in small_rows if "id" in r and r.get("image_2") is not None)
    with sim_for(small_data, accuracy=1.0, styles=TERSE) as sim:
        # system message and a chat-template-like wrapper around the MME question
        wrapped = {
            "model": MODEL,
            "messages": [
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": [
                    text_part("USER: <image>\nPlease look carefully."),
                    image_part(original_url(mme["image"])),
                    text_part(f"Question: {mme['question']}\nASSISTANT:"),
                ]},
            ],
            "max_tokens": 16,
        }  # fmt: skip
        httpx.post(sim.base_url + "/chat/completions", json=wrapped, timeout=60)
        assert sim.chat_log[-1].sample_id == expected_id(mme)
        # lmms-eval's simple (non-chat) layout: the whole prompt first, literal <image N> tokens, then images
        keys = sorted({f"image_{m[7:-1]}" for m in re.findall(r"<image \d+>", mmmu_prompt(mmmu))})
        simple = {
            "model": MODEL,
            "messages": [{"role": "user", "content": [text_part(mmmu_prompt(mmmu))] + [image_part(original_url(mmmu[k])) for k in keys]}],
        }  # fmt: skip
        httpx.post(sim.base_url + "/chat/completions", json=simple, timeout=60)
        assert sim.chat_log[-1].sample_id == expected_id(mmmu)


def test_unknown_requests_get_a_deterministic_generic_answer(
    small_data: list[Path], small_rows: list[Row]
) -> None:
    unknown = {"model": MODEL, "messages": [{"role": "user", "content": [image_part(original_url(drawn_png(7))), text_part("Is the sky green? Answer yes or no.")]}], "temperature": 0}  # fmt: skip
    known_image_other_text = {"model": MODEL, "messages": [{"role": "user", "content": [image_part(original_url(small_rows[0]["image"])), text_part("Is this a photograph of a cat?")]}]}  # fmt: skip
    with sim_for(small_data) as sim:
        texts = []
        for body in (unknown, unknown, known_image_other_text):
            texts.append(
                httpx.post(sim.base_url + "/chat/completions", json=body).json()["choices"][0]["message"][
                    "content"
                ]
            )
            assert sim.chat_log[-1].sample_id is None
    assert texts[0] == texts[1] and texts[0] in ("Yes", "No")


def test_project_task_requests_are_recognised(small_data: list[Path]) -> None:
    """The requests the evaluation path builds (vlmparity.tasks) are recognised with the tasks' sample ids."""
    tasks = pytest.importorskip("vlmparity.tasks.base")
    with sim_for(small_data, accuracy=1.0, styles=TERSE) as sim:
        for name, folder, split in (
            ("mme", small_data[0], "test"),
            ("mmmu_val", small_data[1], "validation"),
        ):
            task = tasks.get_task(name)
            samples = task.samples_from_rows(load_rows(folder, split=split))
            for sample in samples[::5]:
                gen = tasks.GenerationParams()
                request = tasks.build_request(
                    sample, task.prompt(sample), gen, lambda img: original_url(img.data)
                )
                response = httpx.post(
                    sim.base_url + "/chat/completions", json=request.with_model(MODEL), timeout=60
                )
                assert response.status_code == 200
                assert sim.chat_log[-1].sample_id == sample.id
                assert sim.chat_log[-1].body_hash == request.request_hash


def test_repeated_image_is_decoded_once(small_data: list[Path], small_rows: list[Row]) -> None:
    with sim_for(small_data) as sim:
        ask(sim, small_rows[10])
        misses = sim.server.prints.misses
        for _ in range(3):
            ask(sim, small_rows[10])
            ask(sim, small_rows[11])  # the same image (an MME pair), other question
        assert sim.server.prints.misses == misses


# ------------------------------------------------------------------ determinism and sampling


def test_temperature_zero_is_deterministic_across_requests_and_servers(
    small_data: list[Path], small_rows: list[Row]
) -> None:
    rows = small_rows[::4]
    with sim_for(small_data, model_seed=3) as first, sim_for(small_data, model_seed=3) as second:
        a = [ask(first, row)[0] for row in rows]
        b = [ask(first, row)[0] for row in rows]
        c = [ask(second, row)[0] for row in rows]
    assert a == b == c


def test_temperature_with_and_without_seed(small_data: list[Path], small_rows: list[Row]) -> None:
    row = small_rows[3]
    with sim_for(small_data, temperature_noise=1.0) as sim:
        seeded = {ask(sim, row, temperature=1.0, seed=7)[0] for _ in range(8)}
        unseeded = {ask(sim, row, temperature=1.0)[0] for _ in range(30)}
        by_seed = {ask(sim, row, temperature=1.0, seed=s)[0] for s in range(30)}
    assert len(seeded) == 1
    assert len(unseeded) > 1
    assert len(by_seed) > 1


def open_body(**extra: Any) -> dict[str, Any]:
    """An unrecognised request with an open prompt (no yes/no, no options): the generic answer is a
    sentence, and a random draw of it is a string of meaningless words (sim/answers.py)."""
    content = [image_part(original_url(drawn_png(11))), text_part("Describe this picture.")]
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], "max_tokens": 16, **extra}


def answer_to(sim: SimServer, body: dict[str, Any]) -> str:
    response = httpx.post(sim.base_url + "/chat/completions", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return str(response.json()["choices"][0]["message"]["content"])


def test_nondeterminism_one_redraws_every_temperature_zero_answer() -> None:
    with sim_for([]) as steady, sim_for([], nondeterminism=1.0) as noisy:
        fixed = {answer_to(steady, open_body(temperature=0)) for _ in range(5)}
        drawn = [answer_to(noisy, open_body(temperature=0)) for _ in range(20)]
        seeded = [answer_to(noisy, open_body(temperature=0, seed=7)) for _ in range(5)]
    assert len(fixed) == 1  # the default (nondeterminism 0): one text
    # 2**30 possible random texts: twenty draws are all different, none is the deterministic answer
    assert len(set(drawn)) == len(drawn) and not fixed & set(drawn)
    assert len(set(seeded)) == len(seeded)  # a seed does not pin batch-dependent numerics
    for text in drawn:
        assert yes_no(text) == "other" and mc_letter(text) is None


def test_nondeterminism_rate() -> None:
    p, n = 0.3, 200
    with sim_for([]) as steady, sim_for([], nondeterminism=p) as noisy:
        fixed = answer_to(steady, open_body(temperature=0))
        changed = sum(answer_to(noisy, open_body(temperature=0)) != fixed for _ in range(n))
    assert within(changed, n, p)


def test_nondeterminism_keeps_accuracy(small_data: list[Path], small_rows: list[Row]) -> None:
    # A redrawn answer comes from the same distribution: at accuracy 1 it is still right; at accuracy 0.5
    # one question asked again and again is answered right and wrong (P(all 30 alike) = 2 * 0.5**30).
    rows = small_rows[::6]
    with sim_for(small_data, accuracy=1.0, styles=TERSE, nondeterminism=1.0) as sim:
        for row in rows:
            text, entry = ask(sim, row)
            assert entry.sample_id == expected_id(row) and is_right(row, text), text
    row = small_rows[3]
    with sim_for(small_data, accuracy=0.5, styles=TERSE, nondeterminism=1.0) as sim:
        verdicts = {is_right(row, ask(sim, row)[0]) for _ in range(30)}
    assert verdicts == {True, False}


def test_seed_ignored_when_not_honoured(small_data: list[Path], small_rows: list[Row]) -> None:
    # temperature_noise 2: at temperature 1 every answer is a random draw
    with (
        sim_for([], temperature_noise=2.0) as honoured,
        sim_for([], temperature_noise=2.0, honour_seed=False) as ignored,
    ):
        same = {answer_to(honoured, open_body(temperature=1.0, seed=7)) for _ in range(5)}
        other = answer_to(honoured, open_body(temperature=1.0, seed=8))
        free = [answer_to(ignored, open_body(temperature=1.0, seed=7)) for _ in range(8)]
        # the seed is only read when sampling: temperature 0 stays deterministic
        zero = {answer_to(ignored, open_body(temperature=0, seed=7)) for _ in range(5)}
    assert len(same) == 1 and other not in same
    assert len(set(free)) == len(free)
    assert len(zero) == 1
    row = small_rows[3]
    with sim_for(small_data, temperature_noise=1.0, honour_seed=False) as sim:
        seeded = {ask(sim, row, temperature=1.0, seed=7)[0] for _ in range(30)}
    assert len(seeded) > 1


# ------------------------------------------------------------------ accuracy, styles, divergence


def test_accuracy_extremes_and_group_override(small_data: list[Path], small_rows: list[Row]) -> None:
    with sim_for(small_data, accuracy=0.0, styles=TERSE) as wrong:
        for row in small_rows:
            text, _ = ask(wrong, row)
            assert not is_right(row, text), text
            if "id" in row and row["question_type"] == "multiple-choice":
                letters = "ABCDEFGHIJ"[
                    : len(ast.literal_eval(row["options"]))
                ]  # a wrong answer is still a valid letter
                assert mc_letter(text) in letters
    groups = {"existence": 0.0, "Accounting": 0.0}
    with sim_for(small_data, accuracy=1.0, accuracy_by_group=groups, styles=TERSE) as mixed:
        for row in small_rows:
            text, _ = ask(mixed, row)
            group = row.get("category") or re.match(r"validation_(.+?)_\d+$", row["id"]).group(1)  # type: ignore[union-attr]
            assert is_right(row, text) == (group not in groups), (group, text)


def test_styles(small_data: list[Path], small_rows: list[Row]) -> None:
    mme = next(r for r in small_rows if "question_id" in r)
    mc = next(r for r in small_rows if "id" in r and r["question_type"] == "multiple-choice")
    with sim_for(small_data, accuracy=1.0, styles={"terse": 0, "verbose": 1, "unparseable": 0}) as verbose:
        assert ask(verbose, mme)[0].startswith(mme["answer"] + ", ")
        assert ask(verbose, mc)[0] == f"The answer is ({mc['answer']})."
    with sim_for(
        small_data, accuracy=0.0, styles={"terse": 0, "verbose": 0.0001, "unparseable": 1}
    ) as unparseable:
        for row in small_rows:
            text, entry = ask(unparseable, row)
            if entry.style == "unparseable":
                assert is_unparseable(row, text) and not is_right(row, text)


def test_accuracy_and_unparseable_share_on_small_sets(small_data: list[Path], small_rows: list[Row]) -> None:
    accuracy, unparseable = 0.7, 0.2
    styles = {"terse": 0.6, "verbose": 0.2, "unparseable": unparseable}
    with sim_for(small_data, accuracy=accuracy, styles=styles, model_seed=11) as sim:
        answers = [(row, ask(sim, row)[0]) for row in small_rows]
    n = len(answers)
    assert within(sum(is_right(r, t) for r, t in answers), n, accuracy)
    assert within(sum(is_unparseable(r, t) for r, t in answers), n, unparseable)


def test_divergence_extremes(small_data: list[Path], small_rows: list[Row]) -> None:
    reference = {"model_seed": 5, "engine_seed": 1, "divergence": 0.0, "styles": TERSE}
    with (
        sim_for(small_data, **reference) as a,
        sim_for(small_data, **{**reference, "engine_seed": 2}) as same,
    ):
        assert [ask(a, r)[0] for r in small_rows] == [ask(same, r)[0] for r in small_rows]
    # At accuracy 0.5 a divergence of 1 flips every sample (probability d/(2a) = d/(2(1-a)) = 1).
    half = {**reference, "accuracy": 0.5}
    with (
        sim_for(small_data, **half) as a,
        sim_for(small_data, **{**half, "divergence": 1.0}) as flipped,
    ):
        for row in small_rows:
            assert is_right(row, ask(a, row)[0]) != is_right(row, ask(flipped, row)[0])


def test_divergence_rate_on_small_sets(small_data: list[Path], small_rows: list[Row]) -> None:
    divergence = 0.3
    base = {"model_seed": 9, "accuracy": 0.8, "styles": TERSE}
    with (
        sim_for(small_data, **base, engine_seed=1) as a,
        sim_for(small_data, **base, engine_seed=2, divergence=divergence) as b,
    ):
        differ = sum(is_right(r, ask(a, r)[0]) != is_right(r, ask(b, r)[0]) for r in small_rows)
    assert within(differ, len(small_rows), divergence)


# ------------------------------------------------------------------ full-size sets (slow)


def _judge_all(sim: SimServer, rows: list[Row]) -> list[bool]:
    """Ask every row (four client threads, so the simulator decodes on both cores) and judge the answers."""

    def one(row: Row) -> bool:
        response = httpx.post(
            sim.base_url + "/chat/completions", json=body_for(row, original_url), timeout=120
        )
        assert response.status_code == 200, response.text
        return is_right(row, response.json()["choices"][0]["message"]["content"])

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, rows))


@pytest.mark.slow
def test_full_sets_accuracy_per_group_and_divergence(synth_full: dict[str, Path]) -> None:
    data = [synth_full["mme"], synth_full["mmmu"]]
    mme = load_rows(synth_full["mme"], split="test")
    mmmu = load_rows(synth_full["mmmu"], split="validation")
    overrides = {"OCR": 0.2, "celebrity": 0.5, "Math": 0.3}
    base = {"model_seed": 21, "accuracy": 0.8, "accuracy_by_group": overrides}
    divergence = 0.1
    with (
        sim_for(data, **base, engine_seed=1) as a,
        sim_for(data, **base, engine_seed=2, divergence=divergence) as b,
    ):
        rows = mme + mmmu
        right_a = _judge_all(a, rows)
        right_b = _judge_all(b, rows)
    groups = [r.get("category") or re.match(r"validation_(.+?)_\d+$", r["id"]).group(1) for r in rows]  # type: ignore[union-attr]
    by_group: dict[float, list[bool]] = {}
    for group, right in zip(groups, right_a, strict=True):
        by_group.setdefault(overrides.get(group, 0.8), []).append(right)
    for p, flags in by_group.items():
        assert within(sum(flags), len(flags), p), (p, sum(flags), len(flags))
    differ = sum(x != y for x, y in zip(right_a, right_b, strict=True))
    assert within(differ, len(rows), divergence)
    # flips balance in both directions, so engine b keeps the configured accuracy on every group
    default = [y for g, y in zip(groups, right_b, strict=True) if g not in overrides]
    assert within(sum(default), len(default), 0.8)


def test_divergence_keeps_accuracy_and_differs_at_rate(small_data: list[Path], small_rows: list[Row]) -> None:
    # Two engines of one model, each with divergence 0.3 against the model's own answers: both keep the
    # configured accuracy (flips balance), and each differs from the divergence-free engine on ~30 %.
    base = {"model_seed": 4, "accuracy": 0.7, "styles": TERSE}
    with (
        sim_for(small_data, **base, engine_seed=1) as ref,
        sim_for(small_data, **base, engine_seed=3, divergence=0.3) as cand,
    ):
        right_ref = [is_right(r, ask(ref, r)[0]) for r in small_rows]
        right_cand = [is_right(r, ask(cand, r)[0]) for r in small_rows]
    n = len(small_rows)
    assert within(sum(right_ref), n, 0.7)
    assert within(sum(right_cand), n, 0.7)
    assert within(sum(x != y for x, y in zip(right_ref, right_cand, strict=True)), n, 0.3)
