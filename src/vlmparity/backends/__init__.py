"""Backend profiles: what is particular to each kind of serving engine, one module per kind, and a registry.

`get_backend(kind) -> BackendProfile`, `backend_kinds()`, `register_backend(profile)`: the client's probing
and error classification, doctor and compare dispatch through the profiles, so adding a kind is one module
(or one `register_backend` call) and nothing else. Importing this package registers vLLM, OVMS, SGLang and
the generic OpenAI-compatible server, in that order. `EndpointSpec` and `BackendKind` are the one model of an
endpoint as configured (the client resolves it; `config.EndpointConfig` validates a run's endpoints with it).
"""

# isort: off
# Each module registers its profile when imported: this order is the order of `backend_kinds()`.
from vlmparity.backends import vllm as vllm
from vlmparity.backends import ovms as ovms
from vlmparity.backends import sglang as sglang
from vlmparity.backends import openai as openai

# isort: on
from vlmparity.backends.base import (
    AUTO,
    BackendProfile,
    ErrorShape,
    NotReady,
    ProbeReply,
    ProbeSession,
    Resolution,
    backend_kinds,
    backend_profiles,
    detection_order,
    error_shapes,
    fallback_backend,
    get_backend,
    health_or_missing,
    json_version,
    kinds_text,
    openai_like,
    register_backend,
    unregister_backend,
    version_text,
    version_tuple,
)
from vlmparity.backends.endpoint import BackendKind, EndpointSpec

__all__ = [
    "AUTO",
    "BackendKind",
    "BackendProfile",
    "EndpointSpec",
    "ErrorShape",
    "NotReady",
    "ProbeReply",
    "ProbeSession",
    "Resolution",
    "backend_kinds",
    "backend_profiles",
    "detection_order",
    "error_shapes",
    "fallback_backend",
    "get_backend",
    "health_or_missing",
    "json_version",
    "kinds_text",
    "openai_like",
    "register_backend",
    "unregister_backend",
    "version_text",
    "version_tuple",
]
