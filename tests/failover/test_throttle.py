"""A 429 sets its backend aside until its Retry-After (1 s without one), read as
the executor reads hints: NaN or negative is no hint."""

from __future__ import annotations

import math

import pytest

from failover.attempt import Attempt
from failover.health import BackendHealth
from regions.errors import BackendError, FailureClass
from regions.inventory import BackendSpec, ProviderKind, Region

BUSY = BackendSpec(
    "busy", "m", "v1", Region("aws:eu-west-1", frozenset()), ProviderKind.VLLM, "http://x", "s"
)


def throttled_for(hint: float | None) -> tuple[bool, bool]:
    """After a 429 at t = 100: throttled then, and available again once its hint
    (1 s when it gave none) has passed."""
    health = BackendHealth(clock=lambda: 100.0)
    health.track([BUSY])
    attempt = Attempt(BUSY, started=100.0, ended=100.0)
    attempt.failure = BackendError(FailureClass.OVERLOADED, "429", status=429, retry_after=hint)
    health.attempt_finished(attempt)
    return (
        health.signal("busy", 100.0).why_unavailable == "throttled (Retry-After)",
        health.signal("busy", 100.0 + (hint if hint and hint > 0 else 1.0)).available,
    )


@pytest.mark.parametrize("hint", [None, 0.0, -5.0, math.nan, 3.0])
def test_a_429_throttles_for_its_hint_or_one_second(hint: float | None) -> None:
    assert throttled_for(hint) == (True, True)
