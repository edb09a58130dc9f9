"""Routing's answer for one request: the backends to try, in order, and why.

Routing errors say which constraint removed what, so a client and an operator
can tell "not allowed here" (403) from "allowed but down" (503).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from regions.inventory import BackendSpec


class Candidate(NamedTuple):
    """One backend of a plan (a NamedTuple: several are built per request).

    ``why`` is the decision (p2c pick, failover, prefix affinity); ``reason``
    formats it with the score only when someone asks."""

    backend: BackendSpec
    why: str
    score: float | None = None
    latency: float | None = None
    price: float | None = None
    cold: bool = False

    @property
    def reason(self) -> str:
        if self.score is None or self.latency is None or self.price is None:
            return self.why
        cold = " cold" if self.cold else ""
        return (
            f"{self.why}, score {self.score:.3f} (latency {self.latency * 1000:.1f} ms{cold}, "
            f"price ${self.price:.6f})"
        )


@dataclass(frozen=True, slots=True)
class Plan:
    model: str
    version: str
    candidates: tuple[Candidate, ...]
    excluded: tuple[tuple[str, str], ...] = ()

    @property
    def backends(self) -> tuple[BackendSpec, ...]:
        return tuple(c.backend for c in self.candidates)

    def explain(self) -> str:
        """One line for the debug header: chosen order, then exclusions."""
        parts = [f"{self.model}@{self.version}"]
        parts += [f"{c.backend.name}: {c.reason}" for c in self.candidates]
        parts += [f"{name}: excluded ({why})" for name, why in self.excluded]
        return "; ".join(parts)


class RoutingError(Exception):
    """A request that no backend may serve; carries an HTTP-ish status for front ends."""

    status = 503
    code = "no_backend_available"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class UnknownModel(RoutingError):
    status = 404
    code = "model_not_found"


class ResidencyViolation(RoutingError):
    """No region allowed by the residency constraint serves this model at all."""

    status = 403
    code = "residency_violation"


class NoBackendAvailable(RoutingError):
    """Allowed regions exist, but none of their backends can take the request now."""

    status = 503
    code = "no_backend_available"
