"""What routing knows about a backend's live state, as plain data.

The failover layer keeps breakers, ejections, health checks and latency
estimates; it hands routing a :class:`Signals` view. Routing only reads it,
so its decisions stay pure functions of (snapshot, signals, request, rng).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol


class BackendSignal(NamedTuple):
    """Built per backend per request: a NamedTuple, the cheapest immutable record."""

    ttft_s: float | None = None  # peak-EWMA of time to first token; None = no sample yet
    itl_s: float | None = None  # mean inter-token latency
    in_flight: int = 0
    queue_depth: int = 0  # requests waiting at the backend (vLLM num_requests_waiting)
    available: bool = True
    why_unavailable: str = ""


COLD = BackendSignal()


class Signals(Protocol):
    def signal(self, backend: str, now: float) -> BackendSignal: ...


class NoSignals:
    """Every backend available and cold: static routing by weights."""

    def signal(self, backend: str, now: float) -> BackendSignal:
        return COLD
