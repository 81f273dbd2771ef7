"""Doctor's gate: the checklist lines up to a usable chat path (reachable, backend, ready, served models,
model, chat path), from a resolved endpoint (`gate_checks`) or, when `resolve_endpoint` refused it, from one
more look with the client's public `Prober` that says at which step it stopped (`diagnose`). What is
particular to a kind (its name, how it reports readiness, its API paths and release) comes from its backend
profile."""

from __future__ import annotations

import httpx

from vlmparity.backends import BackendProfile, NotReady, get_backend
from vlmparity.client.endpoint import EndpointSpec, ResolvedEndpoint
from vlmparity.client.probe import PROBE_TIMEOUT_S, Prober
from vlmparity.doctor.report import Check, DoctorReport, Mark
from vlmparity.errors import EndpointError

_GATE_ORDER = ("reachable", "backend", "ready", "models", "model", "chat")
_STEP_TITLES = {
    "reachable": "reachable",
    "backend": "backend",
    "ready": "ready",
    "models": "served models",
    "model": "model",
    "chat": "chat path",
}


def _gate_fix(step: str, spec: EndpointSpec, hint: str | None) -> str:
    if step == "reachable":
        return "check the host and port, start the server, or pass --ready-timeout SECONDS to wait while it starts"
    if step == "ready":
        if not spec.kind.auto:
            return f"wait for the model to load and raise --ready-timeout, or check --kind {spec.kind} (try auto)"
        return "wait for the model to finish loading, then rerun (or raise --ready-timeout)"
    if step == "models":
        return "point the URL at the OpenAI-compatible API port of the server"
    if step == "model":
        return "pass --model with one of the served names"
    if step == "chat":
        return (
            "give the API base URL: http://host:port/v1 (vLLM, OVMS >= 2026.3) or http://host:port/v3 (OVMS)"
        )
    return hint or "check the URL"


async def _look_again(prober: Prober, err: EndpointError) -> tuple[str, str, str | None]:
    """(failing step, message, hint) of one more look; the resolver's message unless this look failed
    differently (if it succeeds, the first failure stands)."""
    step, message, hint = "endpoint", err.message, err.hint
    try:
        await prober.resolve()
    except NotReady as nr:
        if nr.connection or prober.step == "reachable":
            step, message = "reachable", err.message
        else:
            step = "ready"
            message = err.message if "not ready" in err.message else nr.reason
    except EndpointError as again:
        # Refused before the backend was known (HTML page, API key): reachable, but not usable.
        step = "backend" if prober.step == "reachable" else prober.step
        message, hint = again.message, again.hint
    return step, message, hint


async def diagnose(spec: EndpointSpec, err: EndpointError, waited: float) -> DoctorReport:
    """The gate checks of an endpoint that `resolve_endpoint` refused: which step fails, and why.

    Runs the client's prober once more (no waiting) to find the step; the message is the resolver's own
    unless the second look failed differently.
    """
    report = DoctorReport(url=spec.url)
    async with httpx.AsyncClient(timeout=PROBE_TIMEOUT_S, follow_redirects=True) as http:
        prober = Prober(spec, http)
        step, message, hint = await _look_again(prober, err)
        profile = prober.profile
        if profile is not None and step != "backend":
            report.server_version = await _version_quietly(prober, profile)
    if step == "ready" and "not ready after" not in message and waited >= 1:
        message += f" (waited {waited:.0f} s)"
    report.kind = profile.kind if profile else None
    report.served_models = list(prober.served) if prober.served is not None else None
    if step in _GATE_ORDER:
        passed = list(_GATE_ORDER[: _GATE_ORDER.index(step)])
    else:
        passed = [s for s in _GATE_ORDER if s != "chat"] if profile else ["reachable"]
    if step == "ready" and prober.model is not None:  # OVMS: listed, but the model is still loading
        passed = ["reachable", "backend", "models", "model"]
    ok_detail = {
        "reachable": f"{prober.root} answers HTTP",
        "backend": " ".join(filter(None, [profile.title, report.server_version])) if profile else "",
        "ready": "the server reports ready",
        "models": ", ".join(prober.served or []) or "(the server lists none)",
        "model": f"{prober.model!r} is served",
    }
    for done in passed:
        if done == "backend" and profile is None:
            continue
        report.checks.append(Check(done, Mark.OK, _STEP_TITLES[done], ok_detail[done]))
    if step == "model" and prober.served and len(prober.served) == 1:
        fix = f"pass --model {prober.served[0]!r}"
    elif hint is not None and "api_key" in hint:  # 401/403 at any step: the client's key hint
        fix = "pass --api-key KEY or set OPENAI_API_KEY"
    else:
        fix = _gate_fix(step, spec, hint)
    report.checks.append(Check(step, Mark.FAIL, _STEP_TITLES.get(step, step), message, fix))
    return report


async def _version_quietly(prober: Prober, profile: BackendProfile) -> str | None:
    """The server's version if its kind says how to read it (vLLM /version, OVMS /v2 metadata); None on
    any failure."""
    if profile.version is None:
        return None
    try:
        return await profile.version(prober)
    except (NotReady, EndpointError):
        return None


async def api_paths(resolved: ResolvedEndpoint, http: httpx.AsyncClient) -> dict[str, bool] | None:
    """Which API bases the server serves, for a kind whose paths tell its release (OVMS); else None."""
    profile = get_backend(resolved.kind)
    if profile.api_paths is None:
        return None
    prober = Prober(EndpointSpec(url=resolved.root_url), http, resolved.headers())
    return await profile.api_paths(prober, resolved.chat_url)


def _backend_detail(report: DoctorReport, resolved: ResolvedEndpoint, profile: BackendProfile) -> str:
    version = f" {resolved.server_version}" if resolved.server_version else ""
    if profile.paths_report is not None and report.ovms_paths is not None:
        report.release, detail = profile.paths_report(report.ovms_paths, resolved.api_base)
        return f"{profile.title}{version}: {detail}"
    if profile.version_source is not None:
        shown = resolved.server_version or f"unknown version (no {profile.version_source})"
        return f"{profile.title} {shown} ({profile.version_source}); chat at {resolved.chat_url}"
    return f"{profile.title}{version}; chat at {resolved.chat_url}"


def gate_checks(report: DoctorReport, resolved: ResolvedEndpoint, spec: EndpointSpec) -> None:
    """Checklist lines of a resolved endpoint: reachable, backend and version, ready, models, model."""
    profile = get_backend(resolved.kind)
    report.kind = resolved.kind.value
    report.server_version = resolved.server_version
    report.api_base, report.chat_url, report.model = resolved.api_base, resolved.chat_url, resolved.model
    report.served_models = list(resolved.served_models)
    report.max_model_len = resolved.max_model_len
    report.notes = list(resolved.notes)
    report.checks.append(Check("reachable", Mark.OK, "reachable", f"{resolved.root_url} answers HTTP"))
    detail = _backend_detail(report, resolved, profile)
    if resolved.notes:
        report.checks.append(
            Check(
                "backend",
                Mark.WARN,
                "backend",
                f"{detail}; {'; '.join(resolved.notes)}",
                f"use {resolved.api_base} as the base URL (lmms-eval's OPENAI_API_BASE too)",
            )
        )
    elif profile.unrecognised is not None:
        why, fix = profile.unrecognised
        report.checks.append(Check("backend", Mark.WARN, "backend", f"{detail}: {why}", fix))
    else:
        report.checks.append(Check("backend", Mark.OK, "backend", detail))
    report.checks.append(Check("ready", Mark.OK, "ready", profile.ready_text))
    served = ", ".join(resolved.served_models) or "(the server lists none)"
    report.checks.append(Check("models", Mark.OK, "served models", served))
    if spec.model:
        detail = f"{resolved.model!r} is served"
    else:
        detail = f"using {resolved.model!r}, the only served model (pass --model to choose)"
    report.checks.append(Check("model", Mark.OK, "model", detail))
