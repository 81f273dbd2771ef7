"""The embedded OpenAI-compatible simulator of vLLM and OVMS (demo, tests, benchmarks).

It stands apart from the evaluation path: clients reach it only over HTTP, like a real engine.
"""

from __future__ import annotations

from vlmparity.sim.config import (
    AnswerConfig,
    FaultConfig,
    LoadConfig,
    SimConfig,
    StyleWeights,
    config_from_dict,
    load_config,
)
from vlmparity.sim.server import AsyncSimServer, SimServer

__all__ = [
    "AnswerConfig",
    "AsyncSimServer",
    "FaultConfig",
    "LoadConfig",
    "SimConfig",
    "SimServer",
    "StyleWeights",
    "config_from_dict",
    "load_config",
]
