"""The answer model: deterministic answers from (sample, seeds), with configured accuracy and divergence.

How an answer is decided for a recognised sample (all draws are hashes, so they are reproducible):

1. Style: terse, verbose or unparseable with the configured weights (`hash(model_seed, "style", id)`).
2. Correctness: an unparseable answer is wrong; a parseable one is right with probability
   `accuracy / (1 - w_unparseable)`, so the share of right answers is exactly `accuracy` (as long as
   `w_unparseable <= 1 - accuracy`). Steps 1-2 give the *model's* reference answer (`model_seed`).
3. Divergence: this engine flips the correctness of a share `divergence` = d of the samples (a right
   answer becomes wrong in the same style; a wrong one becomes right, terse if it was unparseable), in
   both directions in equal mass so that its accuracy stays `a`: a right answer is flipped with
   probability d/(2a), a wrong one with d/(2(1 - a)) (`hash(engine_seed, "diverge", id)`). Two engines of
   one model (same `model_seed`) therefore have the same expected accuracy and differ on a share d of the
   samples (exactly while d <= 2 min(a, 1 - a); beyond that the flip probabilities cap at 1). To make an
   engine *less* accurate, give it a lower `accuracy`: with the same `model_seed` its right answers are a
   subset of the reference's.
4. At temperature > 0 the answer is redrawn (same probabilities, random source) with probability
   `min(1, temperature * temperature_noise)`; the random source is seeded by the request's `seed` when
   given (and `honour_seed` is true), else fresh entropy. At temperature 0 the answer is fixed, except
   that with probability `nondeterminism` it is redrawn from fresh entropy (an engine whose numerics
   depend on the batch): answers then vary from request to request but the expected accuracy does not.

An unrecognised request gets a generic answer shaped by its prompt (an option letter, Yes/No, or a
sentence the parsers cannot read); when it is drawn at random, the sentence is a string of meaningless
words (like a sampled model's), so two random draws practically never give the same text.

Tokens are whitespace-separated words: completion_tokens = words in the answer, and `max_tokens` keeps
the first N words (finish_reason "length").
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from vlmparity.sim.config import AnswerConfig
from vlmparity.sim.dataset import SimSample

TERSE, VERBOSE, UNPARSEABLE = "terse", "verbose", "unparseable"

# First four characters contain neither "yes" nor "no", so lmms-eval's MME parser reads them as "other".
_UNPARSEABLE_YESNO = (
    "I cannot determine that from the image.",
    "The image does not make this clear.",
    "It is hard to tell from this picture.",
)
# No capital letter followed by a space or a period, so the MMMU parser finds no option letter.
_UNPARSEABLE_MC = (
    "cannot determine the answer from the image.",
    "the image does not make this clear.",
    "unable to decide between the choices.",
)
_WRONG_WORDS = ("unknown", "none of these", "zebra", "blue", "triangle", "seventeen")
# Sampled babble: lower-case words holding neither "yes" nor "no" (unparseable for both benchmarks).
_BABBLE = (
    "blurry", "soft", "pixel", "light", "shade", "warm", "quiet", "edge",
    "patch", "bright", "dim", "grey", "pale", "deep", "faint", "curve",
    "line", "round", "flat", "small", "wide", "thin", "dark", "clear",
    "smooth", "rough", "plain", "sharp", "dull", "vivid", "still", "calm",
)  # fmt: skip
BABBLE_WORDS = 6  # 32**6 = 2**30 texts: fits the doctor's 8-token answers


def unit(*parts: object) -> float:
    """A reproducible uniform number in [0, 1) from the given parts."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass(frozen=True)
class Draw:
    """Whether an answer is right, and in which style it is written."""

    correct: bool
    style: str


@dataclass(frozen=True)
class SimAnswer:
    """The answer the simulated model gives to one request."""

    text: str
    sample: SimSample | None
    correct: bool | None  # None for unrecognised requests
    style: str


def _style(u: float, cfg: AnswerConfig) -> str:
    terse, verbose, _ = cfg.styles.normalised()
    if u < terse:
        return TERSE
    if u < terse + verbose:
        return VERBOSE
    return UNPARSEABLE


def _p_right_when_parseable(accuracy: float, cfg: AnswerConfig) -> float:
    w_unparseable = cfg.styles.normalised()[2]
    return 0.0 if w_unparseable >= 1 else min(1.0, accuracy / (1.0 - w_unparseable))


def reference_draw(sample: SimSample, cfg: AnswerConfig) -> Draw:
    """The model's own answer to a sample (independent of the engine)."""
    style = _style(unit(cfg.model_seed, "style", sample.id), cfg)
    if style == UNPARSEABLE:
        return Draw(False, style)
    p_right = _p_right_when_parseable(cfg.accuracy_for(sample.group), cfg)
    return Draw(unit(cfg.model_seed, "correct", sample.id) < p_right, style)


def flip_probability(correct: bool, accuracy: float, divergence: float) -> float:
    """Chance that an engine flips a sample, chosen so that flips balance and accuracy is unchanged."""
    if divergence <= 0:
        return 0.0
    mass = accuracy if correct else 1.0 - accuracy
    return 1.0 if mass <= 0 else min(1.0, divergence / (2.0 * mass))


def engine_draw(sample: SimSample, cfg: AnswerConfig) -> Draw:
    """This engine's answer: the reference, with correctness flipped on diverged samples."""
    ref = reference_draw(sample, cfg)
    p_flip = flip_probability(ref.correct, cfg.accuracy_for(sample.group), cfg.divergence)
    if unit(cfg.engine_seed, "diverge", sample.id) >= p_flip:
        return ref
    if ref.correct:
        return Draw(False, ref.style)
    return Draw(True, TERSE if ref.style == UNPARSEABLE else ref.style)


def random_draw(sample: SimSample, cfg: AnswerConfig, rng: random.Random) -> Draw:
    """A fresh draw from the same distribution, from `rng` (sampling at temperature > 0)."""
    style = _style(rng.random(), cfg)
    if style == UNPARSEABLE:
        return Draw(False, style)
    return Draw(rng.random() < _p_right_when_parseable(cfg.accuracy_for(sample.group), cfg), style)


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _as_number(text: str) -> float | None:
    try:
        return float(text.replace(",", ""))
    except ValueError:
        return None


def wrong_open_answer(gold: str, u: float) -> str:
    """A wrong answer to an open question: the gold number plus one, or a word unrelated to the gold."""
    number = _as_number(gold)
    if number is not None:
        wrong = number + 1
        return str(int(wrong)) if wrong.is_integer() and "." not in gold else f"{wrong:g}"
    low = gold.strip().lower()
    words = [w for w in _WRONG_WORDS if low not in w and w not in low] or ["xyzzy"]
    return _pick(words, u)


def _verbose_yesno(answer: str, question: str) -> str:
    found = re.match(r"\s*(Is|Are) there (.+?)\?", question)
    if found:
        verb, rest = found.group(1).lower(), found.group(2)
        return f"Yes, there {verb} {rest}." if answer == "Yes" else f"No, there {verb} not {rest}."
    return "Yes, that is what the image shows." if answer == "Yes" else "No, the image does not show that."


def render(sample: SimSample, draw: Draw, cfg: AnswerConfig, u: float | None = None) -> str:
    """The answer text for a draw; `u` (default: a hash of the sample) picks among wrong/unparseable texts."""
    if u is None:
        u = unit(cfg.model_seed, "wording", sample.id)
    if sample.kind == "yesno":
        if draw.style == UNPARSEABLE:
            return _pick(_UNPARSEABLE_YESNO, u)
        gold = "Yes" if sample.gold.lower().startswith("y") else "No"
        answer = gold if draw.correct else ("No" if gold == "Yes" else "Yes")
        return answer if draw.style == TERSE else _verbose_yesno(answer, sample.question)
    if sample.kind == "mc":
        if draw.style == UNPARSEABLE:
            return _pick(_UNPARSEABLE_MC, u)
        others = [c for c in sample.choices if c != sample.gold] or list(sample.choices)
        letter = sample.gold if draw.correct else _pick(others, u)
        return letter if draw.style == TERSE else f"The answer is ({letter})."
    if draw.style == UNPARSEABLE:
        return _pick(_UNPARSEABLE_YESNO, u)
    value = sample.gold if draw.correct else wrong_open_answer(sample.gold, u)
    return value if draw.style == TERSE else f"The answer is {value}."


def babble(rng: random.Random) -> str:
    """A sampled answer of meaningless words, as a randomly initialised model gives."""
    return " ".join(rng.choice(_BABBLE) for _ in range(BABBLE_WORDS)) + "."


def generic_answer(
    text: str, image_keys: Sequence[str], cfg: AnswerConfig, rng: random.Random | None = None
) -> str:
    """The answer to a request the simulator does not recognise, shaped by the prompt; deterministic
    unless `rng` (a random draw) is given."""
    u = rng.random() if rng is not None else unit(cfg.model_seed, "generic", text, *image_keys)
    low = text.lower()
    if "option's letter" in low or "\na. " in low or "(a)" in low:
        return _pick("ABCD", u)
    if (
        "yes or no" in low
        or "single word or phrase" in low
        or low.lstrip().startswith(("is ", "are ", "does "))
    ):
        return "Yes" if u < 0.5 else "No"
    return babble(rng) if rng is not None else _pick(_UNPARSEABLE_YESNO, u)


def choose_answer(
    sample: SimSample | None,
    text: str,
    image_keys: Sequence[str],
    cfg: AnswerConfig,
    *,
    temperature: float,
    seed: int | None,
) -> SimAnswer:
    """The answer to one request: the engine's draw, or a random one when sampling (temperature > 0) or,
    at temperature 0, with probability `nondeterminism`."""
    rng: random.Random | None = None
    if temperature > 0:
        key = sample.id if sample else "|".join([text, *image_keys])
        seeded = seed is not None and cfg.honour_seed
        rng = random.Random(f"{cfg.model_seed}|{seed}|{key}") if seeded else random.Random()
        if rng.random() >= min(1.0, temperature * cfg.temperature_noise):
            rng = None
    elif cfg.nondeterminism > 0:
        rng = random.Random()  # batch-dependent numerics: not reproducible, whatever the seed
        if rng.random() >= cfg.nondeterminism:
            rng = None
    if sample is None:
        return SimAnswer(generic_answer(text, image_keys, cfg, rng), None, None, "generic")
    if rng is not None:
        draw = random_draw(sample, cfg, rng)
        return SimAnswer(render(sample, draw, cfg, rng.random()), sample, draw.correct, draw.style)
    draw = engine_draw(sample, cfg)
    return SimAnswer(render(sample, draw, cfg), sample, draw.correct, draw.style)


def count_tokens(text: str) -> int:
    """The simulator's token count: whitespace-separated words."""
    return len(text.split())


def truncate(text: str, max_tokens: int | None) -> tuple[str, int, str]:
    """Cut an answer to `max_tokens` words: (text, completion_tokens, finish_reason)."""
    words = text.split()
    if max_tokens is not None and len(words) > max_tokens:
        return " ".join(words[:max_tokens]), max_tokens, "length"
    return text, len(words), "stop"
