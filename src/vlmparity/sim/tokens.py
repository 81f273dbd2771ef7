"""Per-token log-probabilities of the simulated model, and the numeric knobs that make two engines differ.

Tokens are the answer's whitespace-separated words (as everywhere in the simulator). Each token has a
*margin*: the logit gap between it and the runner-up, drawn reproducibly from the simulated model
(`answers.model_seed`), the request (its hash without `model`: the same question gives the same margins on
every engine) and the position and word. The reported log-probability is the two-way softmax of that gap,
`-log(1 + exp(-|gap|))`: a near-tie (gap near 0) reports about -0.69, a confident token about 0.

Knobs (`SimConfig.tokens`), each the fingerprint of one cause in `compare`'s closeness analysis:
- `numeric_noise` (σ, default 0): every gap is perturbed by σ·N(0,1) drawn from (`noise_seed`, request,
  position), like other kernels or precision. Log-probabilities move by about σ/2 at near-ties, and the
  first token whose perturbed gap turns negative flips to its runner-up (a near-tie decided the other way).
- `bos_offset`: added to `usage.prompt_tokens` (a BOS token or chat template the other engine lacks).
- `max_tokens_cap`: generation stops at this many tokens whatever `max_tokens` asks (a server-side
  default limit): `finish_reason` is `length` for longer answers.
- `logprobs` (default true): false ignores the request's `logprobs` (an engine without them).
The image-token count is `SimConfig.tokens_per_image`; a different `answers.model_seed` is "other weights".
With every knob at its default two simulators answer the same request with the same tokens and the same
log-probabilities, bit for bit.
"""

from __future__ import annotations

import math

from vlmparity.sim.answers import unit

MARGIN_SCALE = 6.0  # gap = 6·u³: about 8 % of tokens have a gap below 0.003 (near-ties), most are confident

_SWAPS = {"Yes": "No", "No": "Yes", "yes": "no", "no": "yes", "YES": "NO", "NO": "YES"}


def runner_up(word: str) -> str:
    """The token a near-tie flips to: yes↔no, a letter answer to the next letter, else another casing."""
    if word in _SWAPS:
        return _SWAPS[word]
    core = word.rstrip(".")
    if len(core) == 1 and core.isalpha() and core.isupper():
        return chr((ord(core) - ord("A") + 1) % 26 + ord("A")) + word[len(core) :]
    return (
        word.lower()
        if word != word.lower()
        else word.capitalize()
        if word != word.capitalize()
        else word + ","
    )


def _gauss(*parts: object) -> float:
    u1 = max(unit("g1", *parts), 1e-300)
    u2 = unit("g2", *parts)
    return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def logprob_of_gap(gap: float) -> float:
    return -math.log1p(math.exp(-abs(gap)))


def generate(
    words: list[str], request_key: str, *, model_seed: int, noise: float, noise_seed: int
) -> tuple[list[str], list[float]]:
    """The generated tokens (after at most one near-tie flip) and their log-probabilities."""
    out: list[str] = []
    logprobs: list[float] = []
    flipped = False
    for i, word in enumerate(words):
        gap = MARGIN_SCALE * unit("gap", model_seed, request_key, i, word) ** 3
        if noise > 0:
            gap += noise * _gauss(noise_seed, request_key, i)
        if gap < 0 and not flipped:
            word = runner_up(word)
            flipped = True
        out.append(word)
        logprobs.append(logprob_of_gap(gap))
    return out, logprobs
