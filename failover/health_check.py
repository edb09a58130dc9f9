"""Active health checks: the verdict state machine and the jittered schedule, no I/O.

The prober (not here) calls the backend's health endpoint every
:meth:`HealthState.next_delay` seconds with ``policy.timeout_s`` as the deadline,
and feeds each result to :meth:`HealthState.record`. A timeout is a failure.

State machine (Envoy ``HealthCheck``: ``unhealthy_threshold``,
``healthy_threshold``, ``interval``, ``interval_jitter_percent``)::

    HEALTHY ──(unhealthy_threshold failures in a row)──▶ UNHEALTHY
    UNHEALTHY ──(healthy_threshold passes in a row)──▶ HEALTHY

A single pass or failure resets the opposite streak, so a flapping backend
never returns. Schedule::

    next_delay = interval_s × (1 + jitter × u),  u ~ uniform(−1, 1)

The jitter spreads the probes of many gateway workers so that they do not hit a
backend in lockstep. A passing check on a healthy backend also ends its
outlier ejection (:meth:`failover.outlier.OutlierDetector.uneject`,
Envoy's default).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class HealthCheckPolicy:
    interval_s: float = 5.0
    jitter: float = 0.2
    timeout_s: float = 2.0
    unhealthy_threshold: int = 2
    healthy_threshold: int = 2

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be > 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction of the interval in [0, 1)")
        if self.unhealthy_threshold < 1 or self.healthy_threshold < 1:
            raise ValueError("thresholds must be ≥ 1")


class HealthState:
    """One backend's active-check verdict. Starts healthy unless told otherwise."""

    __slots__ = ("_healthy", "_rng", "checks", "failures", "passes", "policy")

    def __init__(
        self, policy: HealthCheckPolicy, rng: random.Random, *, healthy: bool = True
    ) -> None:
        self.policy = policy
        self._rng = rng
        self._healthy = healthy
        self.passes = 0  # consecutive passes
        self.failures = 0  # consecutive failures
        self.checks = 0

    @property
    def healthy(self) -> bool:
        return self._healthy

    def record(self, passed: bool) -> bool:
        """One check's result; True when it changed the healthy/unhealthy verdict."""
        self.checks += 1
        if passed:
            self.passes, self.failures = self.passes + 1, 0
            if not self._healthy and self.passes >= self.policy.healthy_threshold:
                self._healthy = True
                return True
        else:
            self.passes, self.failures = 0, self.failures + 1
            if self._healthy and self.failures >= self.policy.unhealthy_threshold:
                self._healthy = False
                return True
        return False

    def next_delay(self) -> float:
        """Seconds until the next check: interval ± jitter, from the injected rng."""
        p = self.policy
        return p.interval_s * (1.0 + p.jitter * self._rng.uniform(-1.0, 1.0))
