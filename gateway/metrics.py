"""Prometheus metrics, aggregated per request (never per chunk).

Each gateway owns its registry (no module globals), so tests and several
gateways in one process do not collide. Label values are bounded by config:
model, version, backend, region and a small set of outcomes.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from failover.executor import Attempt

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

    def attempt_finished(self, attempt: Attempt) -> None:
        outcome = "ok" if attempt.failure is None else attempt.failure.failure.value
        self.attempts.labels(attempt.backend.name, attempt.backend.region.name, outcome).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
