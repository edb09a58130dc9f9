"""The active health-check verdict and its jittered schedule."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.health_check import HealthCheckPolicy, HealthState


def test_starts_healthy_and_needs_consecutive_failures() -> None:
    h = HealthState(HealthCheckPolicy(unhealthy_threshold=2), random.Random(0))
    assert h.healthy
    assert h.record(False) is False
    assert h.record(True) is False  # a pass resets the failure streak
    assert h.record(False) is False
    assert h.record(False) is True
    assert not h.healthy
    assert h.record(False) is False  # already unhealthy: no change


def test_returns_only_after_consecutive_passes() -> None:
    h = HealthState(HealthCheckPolicy(healthy_threshold=3), random.Random(0), healthy=False)
    assert [h.record(p) for p in (True, True, False, True, True)] == [False] * 5
    assert not h.healthy  # a flapping backend never returns
    assert h.record(True) is True
    assert h.healthy
    assert h.checks == 6


def test_next_delay_is_interval_plus_minus_jitter() -> None:
    h = HealthState(HealthCheckPolicy(interval_s=5.0, jitter=0.2), random.Random(42))
    delays = [h.next_delay() for _ in range(2000)]
    assert all(4.0 <= d <= 6.0 for d in delays)
    assert min(delays) < 4.1 and max(delays) > 5.9  # the whole range is used
    again = HealthState(HealthCheckPolicy(interval_s=5.0, jitter=0.2), random.Random(42))
    assert [again.next_delay() for _ in range(2000)] == delays


def test_zero_jitter_is_the_interval() -> None:
    h = HealthState(HealthCheckPolicy(interval_s=3.0, jitter=0.0), random.Random(0))
    assert h.next_delay() == 3.0


@given(st.lists(st.booleans(), max_size=100), st.integers(1, 4), st.integers(1, 4))
def test_verdict_matches_the_streak_rule(results: list[bool], down: int, up: int) -> None:
    h = HealthState(
        HealthCheckPolicy(unhealthy_threshold=down, healthy_threshold=up), random.Random(0)
    )
    healthy, streak_pass, streak_fail = True, 0, 0
    for passed in results:
        streak_pass, streak_fail = (streak_pass + 1, 0) if passed else (0, streak_fail + 1)
        before = healthy
        if healthy and streak_fail >= down:
            healthy = False
        elif not healthy and streak_pass >= up:
            healthy = True
        assert h.record(passed) is (healthy != before)
        assert h.healthy is healthy


@pytest.mark.parametrize(
    "kw",
    [
        {"interval_s": 0.0},
        {"timeout_s": 0.0},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"unhealthy_threshold": 0},
        {"healthy_threshold": 0},
    ],
)
def test_invalid_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HealthCheckPolicy(**kw)  # type: ignore[arg-type]
