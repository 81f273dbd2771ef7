"""Reproducible fault injection.

The fault for a request is decided by a hash of (fault_seed, request body hash without `model`, how many
times this server has already seen that body). A retry of the same request therefore draws again, and
the schedule does not depend on the arrival order of different requests under concurrency.
"""

from __future__ import annotations

import threading
from collections import Counter

from vlmparity.sim.answers import unit
from vlmparity.sim.config import FAULT_KINDS, FaultConfig


def fault_for(cfg: FaultConfig, body_hash: str, nth: int) -> str | None:
    """The fault kind injected into the `nth` (0-based) arrival of a body, or None."""
    probs = cfg.probabilities()
    if not any(probs.values()):
        return None
    u = unit(cfg.fault_seed, "fault", body_hash, nth)
    edge = 0.0
    for kind in FAULT_KINDS:
        edge += probs[kind]
        if u < edge:
            return kind
    return None


class FaultSchedule:
    """Counts arrivals per body and decides faults; `counts` holds the faults injected so far."""

    def __init__(self, cfg: FaultConfig) -> None:
        self.cfg = cfg
        self.counts: Counter[str] = Counter()
        self._seen: Counter[str] = Counter()
        self._lock = threading.Lock()

    def decide(self, body_hash: str) -> tuple[str | None, int]:
        """(fault kind or None, arrival number of this body)."""
        with self._lock:
            nth = self._seen[body_hash]
            self._seen[body_hash] += 1
        kind = fault_for(self.cfg, body_hash, nth)
        if kind is not None:
            with self._lock:
                self.counts[kind] += 1
        return kind, nth
