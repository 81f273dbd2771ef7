"""OpenAI-compatible client: endpoint probing, error classification, concurrent dispatch.

Public API (data in, data out):

- `EndpointSpec(url, name=None, model=None, api_key=None, kind="auto")` (the endpoint model of
  `vlmparity.backends`), `spec_from_env()`, `effective_api_key(spec)` (else `OPENAI_API_KEY`)
- `await resolve_endpoint(spec, ready_timeout=30.0) -> ResolvedEndpoint` (raises `EndpointError`); `Prober`,
  one look at an endpoint without waiting (what `doctor` uses; `NotReady` when waiting may help)
- `classify(status, headers, body, exc) -> Classification` with `Outcome`, `parse_retry_after`
- `Dispatcher(resolved, concurrency=None | N, ...)`; `await dispatcher.run(requests, on_result)`
  calls `on_result(Result)` per sample as answers arrive; `dispatcher.stats` for progress bars.
"""

from vlmparity.backends import NotReady
from vlmparity.client.classify import Classification, Outcome, classify, parse_retry_after, server_message
from vlmparity.client.concurrency import AdaptiveController, FixedController, LimitChange
from vlmparity.client.dispatcher import BreakerPolicy, Dispatcher, DispatchStats, Result, RetryPolicy
from vlmparity.client.endpoint import (
    BackendKind,
    EndpointSpec,
    ResolvedEndpoint,
    effective_api_key,
    spec_from_env,
)
from vlmparity.client.probe import Prober, resolve_endpoint

__all__ = [
    "AdaptiveController",
    "BackendKind",
    "BreakerPolicy",
    "Classification",
    "DispatchStats",
    "Dispatcher",
    "EndpointSpec",
    "FixedController",
    "LimitChange",
    "NotReady",
    "Outcome",
    "Prober",
    "ResolvedEndpoint",
    "Result",
    "RetryPolicy",
    "classify",
    "effective_api_key",
    "parse_retry_after",
    "resolve_endpoint",
    "server_message",
    "spec_from_env",
]
