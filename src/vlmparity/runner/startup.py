"""Before the first question is sent: resolve every endpoint, check that each is the server its stored
run was made against (`identity_changes`), decide log-probabilities once for every endpoint, and probe the
image limits that matter (`probe_limits`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import orjson

from vlmparity.config import RunConfig
from vlmparity.errors import ConfigError
from vlmparity.interrupt import run_async
from vlmparity.runner.engine import EndpointRun
from vlmparity.runner.plan import TaskPlan, plan_image_counts
from vlmparity.runner.progress import ProgressSink
from vlmparity.store import RunRecord, Store

if TYPE_CHECKING:
    from vlmparity.client import ResolvedEndpoint

LOGPROBS_META = "logprobs"


async def resolve_all(config: RunConfig) -> list[ResolvedEndpoint]:
    """Probe every endpoint concurrently (kind, chat URL, model, server version), waiting for readiness."""
    from vlmparity.client import resolve_endpoint

    return list(
        await asyncio.gather(
            *(
                resolve_endpoint(e.spec(), ready_timeout=config.options.ready_timeout)
                for e in config.endpoints
            )
        )
    )


def decide_logprobs(
    config: RunConfig,
    store: Store,
    resolved: Sequence[ResolvedEndpoint],
    progress: ProgressSink | None = None,
) -> RunConfig:
    """Whether this run's requests carry `logprobs: true`: one decision for every endpoint (the bodies stay
    byte-identical), kept in the store so that a resumed run sends the same bodies.

    Order: the store's recorded setting (a store holding samples but no setting predates it: off); else
    --logprobs / --no-logprobs; else off when streaming (OVMS gives none then); else on exactly when every
    endpoint answers the deterministic probe request (`client.logprobs.probe_logprobs`) with them."""
    requested = config.generation.logprobs
    stored = store.get_meta(LOGPROBS_META)
    if stored is None and store.samples():
        stored = False  # made before log-probabilities were requested: its bodies have none
    if stored is not None:
        stored = bool(stored)
        if requested is not None and requested != stored:
            flag = "--no-logprobs" if not stored else "--logprobs"
            raise ConfigError(
                f"{store.path} holds a run made {'with' if stored else 'without'} log-probabilities, so "
                f"{'--logprobs' if requested else '--no-logprobs'} would change every request",
                hint=f"rerun with {flag} (or without either), or use a new --output-path",
            )
        decision = stored
    elif requested is not None:
        decision = requested
    elif config.generation.stream:
        decision = False
    else:
        from vlmparity.client.logprobs import probe_logprobs

        async def probe_all() -> list[Any]:
            return list(
                await asyncio.gather(*(probe_logprobs(r, timeout_s=config.options.timeout) for r in resolved))
            )

        support = run_async(probe_all())  # a signal during the probe stops the run like any other
        decision = all(s.supported for s in support)
        if not decision and progress is not None:
            missing = "; ".join(f"{s.endpoint}: {s.reason}" for s in support if not s.supported)
            progress.message(f"log-probabilities off for this run ({missing})")
    store.set_meta(LOGPROBS_META, decision)
    gen = dataclasses.replace(config.generation, logprobs=decision)
    return config.model_copy(update={"generation": gen})


def endpoint_identity(url: str, resolved: ResolvedEndpoint) -> dict[str, Any]:
    """What identifies the server behind an endpoint name: backend kind, version, served model, base URL
    (credentials masked). Stored with the endpoint's answers (the store's `runs` row)."""
    return {
        "kind": str(resolved.kind.value),
        "server_version": resolved.server_version,
        "model": resolved.model,
        "url": public_url(url),
    }


_IDENTITY_NAMES = {"kind": "backend", "server_version": "version", "model": "served model", "url": "URL"}


def identity_changes(previous: RunRecord, now: Mapping[str, Any]) -> list[str]:
    """What differs between a stored endpoint run and the server now ("version 0.10.0 -> 0.11.0", ...).

    A fact the store does not have (an older store, a server that does not tell its version) is no
    change. The image limit is not part of the identity: a changed limit is a fix to pick up (the
    refusals it caused are sent again), not another server.
    """
    out = []
    for key, label in _IDENTITY_NAMES.items():
        old = getattr(previous, key)
        new = now.get(key)
        if key == "url":
            old, new = (old or "").rstrip("/"), (new or "").rstrip("/")
        if old and new and old != new:
            out.append(f"{label} {old} -> {new}")
    return out


def identity_error(name: str, changed: Sequence[str], output_path: Any) -> ConfigError:
    # Answers of another model are never mixed into a run: only a fresh run helps.
    model_changed = any(c.startswith("served model ") for c in changed)
    hint = f"to start a fresh run use another --output-path than {output_path}"
    if not model_changed:
        hint += (
            "; to continue this run on purpose with the new server add --allow-identity-change (its "
            "failures are then sent again; its answers are kept)"
        )
    return ConfigError(
        f"endpoint {name!r} was run against another server: {'; '.join(changed)}",
        hint=hint,
    )


async def probe_image_limit(
    resolved: ResolvedEndpoint, n_images: int, timeout: float
) -> tuple[str, int | None]:
    """One request with `n_images` small images: ("accepted", None), ("limit", N) from the server's refusal
    ("At most N image(s)"), or ("unknown", None) when it failed otherwise. Deterministic for a given server."""
    import httpx

    from vlmparity.client.probe_bodies import chat_body
    from vlmparity.client.transport import send_attempt

    body = chat_body(n_images) | {"model": resolved.model}
    async with httpx.AsyncClient(timeout=None) as client:
        attempt = await send_attempt(
            client,
            resolved.chat_url,
            orjson.dumps(body),
            headers=resolved.headers(),
            stream=False,
            timeout=timeout,
        )
    cls = attempt.classification
    if cls.is_answer:
        return "accepted", None
    if cls.image_limit is not None:
        return "limit", cls.image_limit
    return "unknown", None


async def probe_limits(
    config: RunConfig,
    plans: Sequence[TaskPlan],
    store: Store,
    eps: Sequence[EndpointRun],
    progress: ProgressSink,
) -> None:
    """Before the first question is sent: each endpoint's image limit, when it matters.

    - `--multi-image skip|merge` without `--max-images`: the limit decides which questions are skipped or
      merged (an explicit `--max-images` always wins and nothing is probed for it).
    - a resumed run with stored image-limit refusals: when the server's limit now differs from the one
      stored (it was restarted with another limit), those refusals are sent again without --rerun-errors.
    One request per endpoint with as many images as the largest question that needs it.
    """
    opts = config.options
    counts = plan_image_counts(plans)
    most = max(counts.values(), default=0)
    want_limit = opts.multi_image in ("skip", "merge") and opts.max_images is None and most > 0

    async def one(ep: EndpointRun) -> None:
        refused = 0
        if ep.resend is None:
            sent = store.samples()
            for key, rec in store.results(ep.run_id).items():
                srec = sent.get(key)
                if rec.outcome == "unsupported" and rec.attempts > 0 and srec is not None and key in counts:
                    refused = max(refused, srec.image_count)
        n = max(most if want_limit else 0, refused)
        if n <= 0:
            return
        verdict, limit = await probe_image_limit(ep.resolved, n, min(opts.timeout, 120.0))
        if verdict == "unknown":
            if want_limit:
                progress.message(
                    f"{ep.name}: the image-limit probe failed; every question is sent whole "
                    "(a refusal is that question's outcome)"
                )
            return
        if want_limit:
            ep.limit = limit
        if refused:
            stored = store.get_run(ep.name)
            before = stored.image_limit if stored is not None else None
            if limit != before:
                ep.resend = "unsupported"
                now = f"at most {limit}" if limit is not None else f"{n} or more"
                progress.message(
                    f"{ep.name}: the server now accepts {now} image(s) per request (stored: at most "
                    f"{before}); the questions it refused for their images are sent again"
                )
                store.replace_image_limit(ep.run_id, limit)

    await asyncio.gather(*(one(ep) for ep in eps))


def public_url(url: str) -> str:
    """The URL as it may be stored (credentials masked)."""
    from vlmparity.config import mask_url

    return mask_url(url)
