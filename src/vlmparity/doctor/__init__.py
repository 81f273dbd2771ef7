"""`doctor`: probe one endpoint and report, check by check, how it will behave in an evaluation.

`await run_doctor(spec, timeout=..., request_timeout=...) -> DoctorReport` resolves the endpoint with the
client's own probing (`resolve_endpoint`), then sends a dozen tiny chat requests through
`transport.send_attempt`: 1, 2 and 3 images in one request (the image limit), the same request twice at
temperature 0 (determinism), a fixed and varied `seed` at temperature 1, a stream with `include_usage`,
an unknown model name and a corrupt image (the server's error shape). Every request asks for at most
`MAX_TOKENS` tokens. The report holds the facts (for `--json`) and one `Check` per checklist line; a
failed check means the endpoint cannot be evaluated (exit 3), a warning never fails.

Modules: `report` (the checklist lines, the report and the pure judgements), `gate` (reachable to chat
path; `diagnose` when the endpoint was refused, through the client's public `Prober`), `behaviour` (the
request-sending checks). What differs between kinds of server comes from their backend profiles.
"""

from __future__ import annotations

import time

from vlmparity.backends.ovms import release as ovms_release
from vlmparity.client.endpoint import EndpointSpec
from vlmparity.client.probe import resolve_endpoint
from vlmparity.client.probe_bodies import chat_body, png_data_url
from vlmparity.client.transport import make_http_client
from vlmparity.doctor.behaviour import Behaviour, max_images
from vlmparity.doctor.gate import api_paths, diagnose, gate_checks
from vlmparity.doctor.report import Check, DoctorReport, Mark, error_shape, judge_determinism, judge_seed
from vlmparity.errors import EndpointError


async def run_doctor(
    spec: EndpointSpec,
    *,
    timeout: float = 30.0,
    request_timeout: float = 120.0,
    connect_timeout: float | None = None,
) -> DoctorReport:
    """Probe `spec` (waiting up to `timeout` s for readiness, and up to `connect_timeout` s for a server
    that refuses connections: None waits as long as for readiness, 0 not at all) and run every check;
    never raises for the endpoint's own failures (they become failed checks)."""
    start = time.monotonic()
    try:
        resolved = await resolve_endpoint(spec, ready_timeout=timeout, connect_timeout=connect_timeout)
    except EndpointError as err:
        return await diagnose(spec, err, time.monotonic() - start)
    report = DoctorReport(url=spec.url)
    async with make_http_client(2) as http:
        report.ovms_paths = await api_paths(resolved, http)
        gate_checks(report, resolved, spec)
        await Behaviour(resolved, http, request_timeout).run(report)
    return report


__all__ = [
    "Check",
    "DoctorReport",
    "Mark",
    "chat_body",
    "diagnose",
    "error_shape",
    "judge_determinism",
    "judge_seed",
    "max_images",
    "ovms_release",
    "png_data_url",
    "run_doctor",
]
