"""A passing active health check ends an outlier ejection (Envoy's
``successful_active_health_check_uneject_host``, on by default)."""

from __future__ import annotations

from failover.executor import Attempt
from failover.health import BackendHealth, HealthPolicy
from failover.outlier import EjectionPolicy
from regions.errors import BackendError, FailureClass
from regions.inventory import BackendSpec, ProviderKind, Region

EU = Region("aws:eu-west-1", frozenset({"EU"}))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def spec(name: str) -> BackendSpec:
    return BackendSpec(name, "m", "v1", EU, ProviderKind.VLLM, "http://x", "s")


def ejected_world() -> tuple[BackendHealth, Clock, BackendSpec]:
    clock = Clock()
    health = BackendHealth(HealthPolicy(ejection=EjectionPolicy(consecutive_errors=3)), clock=clock)
    bad = spec("bad")
    health.track([bad, spec("good")])
    for _ in range(3):
        attempt = Attempt(bad, started=clock.now, ended=clock.now)
        attempt.failure = BackendError(FailureClass.SERVER, "500", status=500)
        health.attempt_finished(attempt)
    assert health.status(clock.now)["bad"]["why"], "three 5xx in a row eject the backend"
    return health, clock, bad


def test_a_passing_health_check_returns_an_ejected_backend() -> None:
    health, clock, _ = ejected_world()
    clock.now += 1
    health.probed("bad", healthy=True, queue_depth=None, passed=True)
    assert health.status(clock.now)["bad"]["available"] is True


def test_a_failing_check_or_an_unhealthy_verdict_keeps_the_ejection() -> None:
    health, clock, _ = ejected_world()
    clock.now += 1
    health.probed("bad", healthy=True, queue_depth=None, passed=False)  # one miss: still healthy
    assert health.status(clock.now)["bad"]["available"] is False
    health.probed("bad", healthy=False, queue_depth=None, passed=True)  # a pass below threshold
    assert health.status(clock.now)["bad"]["available"] is False
