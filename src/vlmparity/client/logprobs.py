"""Per-token log-probabilities: reading them from a response, and asking an endpoint whether it gives them.

Both vLLM and OVMS answer `"logprobs": true` with OpenAI's shape,
`choices[0].logprobs.content = [{"token": str, "logprob": float, "bytes": [...], "top_logprobs": [...]}, ...]`
(OVMS: one log-probability per generated token, none when streaming; research/servers.md). Token ids are
kept when a server gives them (`token_id`, or vLLM's `"token_id:123"` token strings); otherwise the token
texts stand for the token sequence.

`probe_logprobs` sends one fixed, deterministic text-only request (temperature 0, seed 1234, two tokens)
before the first question; an endpoint "supports" log-probabilities when its answer carries one finite
number per generated token. The request carries the header `X-Vlmparity-Probe: logprobs` so that a log
(the simulator's) can tell it from the evaluation's requests.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from vlmparity.client.endpoint import ResolvedEndpoint
from vlmparity.tokentrace import TokenTrace

PROBE_HEADER = "X-Vlmparity-Probe"
PROBE_TEXT = "Answer with one word: what colour is a clear daytime sky?"


def _token_id(item: dict[str, Any]) -> int | None:
    tid = item.get("token_id")
    if isinstance(tid, int) and not isinstance(tid, bool):
        return tid
    token = item.get("token")
    if isinstance(token, str) and token.startswith("token_id:"):
        try:
            return int(token[len("token_id:") :])
        except ValueError:
            return None
    return None


def extract_trace(choice: Any) -> TokenTrace | None:
    """The token trace of a chat-completion choice, or None when it carries no usable log-probabilities.

    A malformed entry (not an object, no finite `logprob`) discards the whole trace: a partial one would
    misplace every later token."""
    if not isinstance(choice, dict):
        return None
    lp = choice.get("logprobs")
    content = lp.get("content") if isinstance(lp, dict) else None
    if not isinstance(content, list) or not content:
        return None
    values: list[float] = []
    tokens: list[str] = []
    ids: list[int] = []
    have_tokens = have_ids = True
    for item in content:
        if not isinstance(item, dict):
            return None
        value = item.get("logprob")
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            return None
        values.append(max(float(value), -1e30))
        token = item.get("token")
        if isinstance(token, str):
            tokens.append(token)
        else:
            have_tokens = False
        tid = _token_id(item)
        if tid is not None and -(2**63) <= tid < 2**63:
            ids.append(tid)
        else:
            have_ids = False
    return TokenTrace(tuple(values), tuple(tokens) if have_tokens else None, tuple(ids) if have_ids else None)


@dataclass(frozen=True)
class LogprobSupport:
    """Whether an endpoint answered the probe with log-probabilities, and why not."""

    endpoint: str
    supported: bool
    reason: str = ""


def probe_body(model: str) -> dict[str, Any]:
    """The probe request: fixed text, greedy, two tokens, logprobs on (the same bytes every time)."""
    return {
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "text", "text": PROBE_TEXT}]}],
        "max_tokens": 2,
        "temperature": 0.0,
        "top_p": 1.0,
        "seed": 1234,
        "logprobs": True,
    }


async def probe_logprobs(
    endpoint: ResolvedEndpoint, *, timeout_s: float = 120.0, client: httpx.AsyncClient | None = None
) -> LogprobSupport:
    """Send the probe request and judge the answer (never raises for what the server does)."""
    headers = {"Content-Type": "application/json", "Accept": "application/json", PROBE_HEADER: "logprobs"}
    key = endpoint.api_key
    if key is not None:
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    owns = client is None
    http = client or httpx.AsyncClient(timeout=timeout_s)
    name = endpoint.name
    try:
        reply = await http.post(
            endpoint.chat_url, content=orjson.dumps(probe_body(endpoint.model)), headers=headers
        )
    except (httpx.HTTPError, OSError) as exc:
        return LogprobSupport(name, False, f"the probe request failed ({type(exc).__name__})")
    finally:
        if owns:
            await http.aclose()
    if reply.status_code != 200:
        return LogprobSupport(name, False, f"the probe request was refused (HTTP {reply.status_code})")
    try:
        doc = orjson.loads(reply.content)
    except orjson.JSONDecodeError:
        return LogprobSupport(name, False, "the probe answer is not JSON")
    choices = doc.get("choices") if isinstance(doc, dict) else None
    choice = choices[0] if isinstance(choices, list) and choices else None
    if extract_trace(choice) is None:
        return LogprobSupport(name, False, "the answer carries no log-probabilities")
    return LogprobSupport(name, True)
