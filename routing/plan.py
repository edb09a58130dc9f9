"""Routing's answer for one request: the backends to try, in order, and why.

Routing errors say which constraint removed what, for the operator (the log,
``route explain``); the client is told the class only, "not allowed here"
(403) or "allowed but down" (503), with the request id.
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
    """A request that no backend may serve; carries an HTTP-ish status for front ends.

    ``message`` says which constraint removed which backend or region: for the
    log and ``route explain``. Tenants read :meth:`tenant_message`, the reason
    class only (``public``, or the class's ``reason``), so an error never tells a
    client which regions exist, which are drained, or which backends are down.
    """

    status = 503
    code = "no_backend_available"
    reason = "no backend that may serve this request is available now; retry later"
    disclose = False  # True: ``message`` holds nothing but what the client sent

    def __init__(
        self, message: str, *, retry_after: float | None = None, public: str | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after
        self.public = public

    def tenant_message(self, request_id: str) -> str:
        """What the client is told; quote the request id to an operator for the details."""
        said = self.message if self.disclose else self.public or self.reason
        return f"{said} (request id {request_id})"


class UnknownModel(RoutingError):
    status = 404
    code = "model_not_found"
    reason = "the model does not exist or this key may not use it"
    disclose = True  # the message names only the client's own model


class ResidencyViolation(RoutingError):
    """No region allowed by the residency constraint serves this model at all."""

    status = 403
    code = "residency_violation"
    reason = "no region allowed by this request's residency serves this model"


class NoBackendAvailable(RoutingError):
    """Allowed regions exist, but none of their backends can take the request now."""

    status = 503
    code = "no_backend_available"
