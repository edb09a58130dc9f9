"""Prometheus metrics, aggregated per request (never per chunk).

Each gateway owns its registry (no module globals), so tests and several
gateways in one process do not collide. Label values are bounded by config:
model, version, backend, region and a small set of outcomes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from failover.breaker import BreakerState
from failover.executor import Attempt
from regions.inventory import BackendSpec

_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "meridian_requests",
            "Client requests by outcome",
            ["model", "version", "backend", "region", "status"],
            registry=r,
        )
        self.ttft = Histogram(
            "meridian_time_to_first_token_seconds",
            "Time from request arrival to the first token sent to the client",
            ["model", "backend", "region"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.duration = Histogram(
            "meridian_request_duration_seconds",
            "Time from request arrival to the end of the response",
            ["model", "backend", "region"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "meridian_tokens",
            "Tokens by direction (prompt, completion)",
            ["model", "backend", "direction"],
            registry=r,
        )
        self.in_flight = Gauge(
            "meridian_in_flight_requests", "Requests being served", ["model"], registry=r
        )
        self.attempts = Counter(
            "meridian_backend_attempts",
            "Backend attempts by outcome (ok or a failure class)",
            ["backend", "region", "outcome"],
            registry=r,
        )

        self.breaker = Gauge(
            "meridian_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open",
            ["backend", "region"],
            registry=r,
        )
        self.ejections = Counter(
            "meridian_ejections", "Outlier ejections", ["backend", "region"], registry=r
        )
        self.failover_events = Counter(
            "meridian_failover_events",
            "hedged, resumed (mid-stream), budget_exhausted (a retry refused by the budget)",
            ["event"],
            registry=r,
        )

        self.control_degraded = Gauge(
            "meridian_control_plane_degraded",
            "1 while the control-plane store is unreachable (serving on the last snapshot)",
            registry=r,
        )
        self.control_revision = Gauge(
            "meridian_control_plane_revision", "Store revision of the routing snapshot", registry=r
        )
        self.rate_limited = Counter(
            "meridian_rate_limited",
            "Requests refused by tenant limits (429)",
            ["tenant", "reason"],
            registry=r,
        )
        # Shadow traffic (gateway.shadow): copies sent, dropped (reason), compared pairs.
        self.shadow_mirrored = Counter(
            "meridian_shadow_mirrored",
            "Requests copied to a shadow candidate",
            ["model"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "meridian_shadow_dropped",
            "Shadow copies not sent: concurrency, queue, tokens (caps) or residency",
            ["model", "reason"],
            registry=r,
        )
        self.shadow_compared = Counter(
            "meridian_shadow_compared", "Primary/shadow pairs compared", ["model"], registry=r
        )
        self.shadow_disagreeing = Counter(
            "meridian_shadow_disagreeing",
            "Compared pairs whose texts differ or where exactly one side failed",
            ["model"],
            registry=r,
        )

    def attempt_finished(self, attempt: Attempt) -> None:
        self.attempts.labels(
            attempt.backend.name, attempt.backend.region.name, attempt.outcome
        ).inc()

    def breaker_changed(self, backend: BackendSpec, state: BreakerState) -> None:
        self.breaker.labels(backend.name, backend.region.name).set(_BREAKER_VALUE[state])

    def ejected(self, backend: BackendSpec, until: float) -> None:
        self.ejections.labels(backend.name, backend.region.name).inc()

    def count(self, event: str) -> None:
        self.failover_events.labels(event).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
