"""The breaker's state machine on a fake clock (plain floats), resilience4j style:
drive outcomes synthetically, assert transitions and counters."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.breaker import BreakerPolicy, BreakerState, CircuitBreaker, outcome_of
from regions.errors import FailureClass

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


def breaker(**kw: float | int | None) -> tuple[CircuitBreaker, list[tuple[BreakerState, ...]]]:
    seen: list[tuple[BreakerState, ...]] = []
    b = CircuitBreaker(
        BreakerPolicy(**kw),  # type: ignore[arg-type]
        0.0,
        on_transition=lambda old, new: seen.append((old, new)),
    )
    return b, seen


def call(b: CircuitBreaker, success: bool, now: float, duration: float = 0.1) -> bool:
    """One call through the gate; True when it was permitted."""
    if not b.allow(now):
        return False
    b.record(success, duration, now)
    return True


def trip(b: CircuitBreaker, now: float = 0.0) -> None:
    for _ in range(b.policy.effective_minimum):
        call(b, False, now)
    assert b.state is OPEN


# -- scenario 1: a 5xx storm opens after minimum_calls -------------------------------


def test_5xx_storm_opens_exactly_at_minimum_calls() -> None:
    b, seen = breaker()
    for i in range(9):
        assert call(b, False, float(i))
        assert b.state is CLOSED, "9 of 9 failed is below minimum_calls: stays closed"
        assert b.failure_rate() is None
    assert call(b, False, 9.0)
    assert b.state is OPEN
    assert seen == [(CLOSED, OPEN)]
    assert b.failure_rate() == 1.0  # an OPEN breaker keeps the window that tripped it
    assert b.opened_until == 9.0 + 10.0


def test_open_breaker_permits_nothing_and_counts_refusals() -> None:
    b, _ = breaker()
    trip(b)
    for t in (0.0, 5.0, 9.99):
        assert not b.allow(t)
    assert b.not_permitted == 3
    assert b.state is OPEN
    b.record(False, 0.1, 5.0)  # a late outcome of a call admitted before opening
    assert b.state is OPEN and b.opened_until == 10.0


def test_failure_rate_threshold_is_inclusive() -> None:
    b, _ = breaker()
    for i in range(10):
        call(b, i % 2 == 0, 0.0)  # 5 of 10 failed = 50%
    assert b.state is OPEN


def test_minimum_calls_is_capped_at_a_count_window() -> None:
    b, _ = breaker(window_size=5, minimum_calls=100)
    for _ in range(5):
        call(b, False, 0.0)
    assert b.state is OPEN


# -- scenario 2: half-open admits exactly N probes, closes; a hanging probe re-opens ------


def test_half_open_admits_exactly_n_probes_then_closes() -> None:
    b, seen = breaker(half_open_probes=3)
    trip(b)
    assert not b.allow(9.9)
    assert [b.allow(10.0) for _ in range(5)] == [True, True, True, False, False]
    assert b.state is HALF_OPEN and b.probes_in_flight == 3
    for _ in range(3):
        b.record(True, 0.1, 10.5)
    assert b.state is CLOSED
    assert seen == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    assert b.failure_rate() is None  # fresh metrics after closing
    assert b.transitions == 3


def test_failed_probes_reopen_with_backoff_capped() -> None:
    b, _ = breaker(open_s=10.0, open_backoff=2.0, max_open_s=50.0, half_open_probes=1)
    trip(b)
    now, periods = 0.0, []
    for _ in range(5):
        assert b.opened_until is not None
        periods.append(b.opened_until - now)
        now = b.opened_until
        assert call(b, False, now)  # the probe fails
        assert b.state is OPEN
    assert periods == [10.0, 20.0, 40.0, 50.0, 50.0]
    assert call(b, True, now + 50.0)  # a passing probe closes and resets the backoff
    assert b.state is CLOSED
    trip(b, now + 60.0)
    assert b.opened_until == now + 60.0 + 10.0


def test_hanging_probe_returns_to_open_after_max_half_open() -> None:
    b, seen = breaker(half_open_probes=3, max_half_open_s=30.0)
    trip(b)
    assert all(b.allow(10.0) for _ in range(3))
    b.record(True, 0.1, 11.0)  # one passes; two hang: 1/3 or 2/3 could still fail
    assert b.state is HALF_OPEN
    assert b.poll(39.9) is HALF_OPEN and not b.allow(39.9)
    assert b.poll(40.0) is OPEN
    assert seen[-1] == (HALF_OPEN, OPEN)
    assert b.opened_until == 40.0 + 20.0  # re-opened with backoff
    b.record(True, 0.1, 41.0)  # the hung probes finally answer: ignored
    b.record(True, 0.1, 41.0)
    assert b.state is OPEN


def test_half_open_timeout_is_applied_by_allow_too() -> None:
    b, _ = breaker(max_half_open_s=30.0)
    trip(b)
    assert b.allow(10.0)
    assert not b.allow(40.0)
    assert b.state is OPEN


def test_verdict_is_taken_as_soon_as_it_cannot_change() -> None:
    b, _ = breaker(half_open_probes=3)
    trip(b)
    assert all(b.allow(10.0) for _ in range(3))
    b.record(False, 0.1, 10.1)
    assert b.state is HALF_OPEN  # 1/3 failed: still undecided
    b.record(False, 0.1, 10.2)
    assert b.state is OPEN  # 2/3 ≥ 50% whatever the third does

    b, _ = breaker(half_open_probes=3)
    trip(b)
    assert all(b.allow(10.0) for _ in range(3))
    b.record(True, 0.1, 10.1)
    b.record(True, 0.1, 10.2)
    assert b.state is CLOSED  # at most 1/3 can fail


def test_release_frees_a_probe_slot() -> None:
    b, _ = breaker(half_open_probes=2)
    trip(b)
    assert b.allow(10.0) and b.allow(10.0) and not b.allow(10.0)
    b.release(10.1)  # the client cancelled one probe
    assert b.probes_in_flight == 1
    assert b.allow(10.2)
    assert not b.allow(10.2)


def test_epoch_keeps_stale_calls_out_of_the_probe_accounting() -> None:
    b, _ = breaker(half_open_probes=1)
    assert b.allow(0.0)
    stale = b.epoch  # a long stream admitted while CLOSED
    trip(b, 0.0)
    assert b.allow(10.0)
    probe = b.epoch
    b.release(10.5, epoch=stale)  # the stale stream is cancelled: frees nothing
    assert not b.allow(10.5)
    b.record(True, 0.1, 10.6, epoch=stale)  # nor does its outcome count as the verdict
    assert b.state is HALF_OPEN
    b.record(True, 0.1, 10.7, epoch=probe)
    assert b.state is CLOSED


# -- scenario 3: 20% errors keep it closed; scenario 4: slow calls open it -----------


def test_twenty_percent_errors_stay_closed() -> None:
    b, seen = breaker()
    for i in range(1000):
        assert call(b, i % 5 != 0, i * 0.01)
    assert b.state is CLOSED and seen == []
    assert b.failure_rate() == pytest.approx(0.2)


def test_slow_calls_open_on_slow_call_rate() -> None:
    b, _ = breaker(slow_call_s=2.0, slow_call_rate=0.8)
    for _ in range(7):
        call(b, True, 0.0, duration=2.0)  # slow though successful (duration ≥ threshold)
    for _ in range(2):
        call(b, True, 0.0, duration=0.1)
    assert b.state is CLOSED
    call(b, True, 0.0, duration=5.0)  # 8 of 10 slow = 80%
    assert b.state is OPEN
    assert b.slow_rate() == 0.8 and b.failure_rate() == 0.0


# -- scenario 12: 429s are excluded by the caller ------------------------------------


def test_outcome_mapping() -> None:
    assert outcome_of(None) is True
    assert outcome_of(FailureClass.CLIENT) is None
    assert outcome_of(FailureClass.OVERLOADED) is None
    assert outcome_of(FailureClass.OVERLOADED, overloaded_counts=True) is False
    for failure in (FailureClass.SERVER, FailureClass.CONNECT, FailureClass.TIMEOUT):
        assert outcome_of(failure) is False


@pytest.mark.parametrize("counts", [False, True])
def test_429_storm_trips_only_when_the_policy_counts_it(counts: bool) -> None:
    b, _ = breaker()
    for i in range(50):
        assert b.allow(float(i)) or counts
        success = outcome_of(FailureClass.OVERLOADED, overloaded_counts=counts)
        if success is None:
            b.release(float(i))
        else:
            b.record(success, 0.1, float(i))
    assert b.state is (OPEN if counts else CLOSED)


# -- time-based window ---------------------------------------------------------------


def test_time_window_forgets_old_failures() -> None:
    b, _ = breaker(window_s=10.0, minimum_calls=4)
    for t in (0.0, 1.0, 2.0):
        call(b, False, t)
    assert b.failure_rate(5.0) is None  # 3 < minimum_calls
    for t in (12.5, 13.0, 14.0, 15.0):
        call(b, True, t)
    assert b.failure_rate(15.0) == 0.0  # the failures at 0–2 s left the window
    assert b.state is CLOSED
    assert b.failure_rate(100.0) is None  # everything expired


def test_time_window_opens_within_the_window() -> None:
    b, _ = breaker(window_s=10.0, minimum_calls=4)
    for t in (0.0, 3.0, 6.0, 9.0):
        call(b, False, t)
    assert b.state is OPEN


def test_clock_going_backwards_is_taken_as_latest() -> None:
    b, _ = breaker(window_s=10.0, minimum_calls=2)
    call(b, False, 100.0)
    call(b, False, 50.0)
    assert b.state is OPEN and b.opened_until == 110.0


def test_reset_closes_and_clears() -> None:
    b, seen = breaker()
    trip(b)
    b.reset(1.0)
    assert b.state is CLOSED and b.opened_until is None and b.failure_rate() is None
    assert seen[-1] == (OPEN, CLOSED)


@pytest.mark.parametrize(
    "kw",
    [
        {"window_size": 0},
        {"failure_rate": 0.0},
        {"slow_call_rate": 1.5},
        {"open_backoff": 0.5},
        {"max_open_s": 1.0},
        {"window_s": 0.0},
        {"half_open_probes": 0},
        {"max_half_open_s": 0.0},
        {"slow_call_s": 0.0},
    ],
)
def test_invalid_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        BreakerPolicy(**kw)  # type: ignore[arg-type]


# -- property: never more than half_open_probes probes at once -----------------------

# allow most often, so that half-open admission is pushed to its limit
_OPS = ["allow"] * 4 + ["ok", "fail", "fail", "release", "wait"]
ops = st.lists(st.tuples(st.sampled_from(_OPS), st.integers(0, 12)), min_size=10, max_size=200)


@settings(max_examples=300, deadline=None)
@given(ops, st.integers(1, 4), st.booleans())
def test_never_more_than_n_probes_in_flight(
    script: list[tuple[str, int]], n: int, time_window: bool
) -> None:
    b = CircuitBreaker(
        BreakerPolicy(
            minimum_calls=3,
            window_size=5,
            window_s=10.0 if time_window else None,
            half_open_probes=n,
            open_s=5.0,
            max_half_open_s=15.0,
        ),
        0.0,
    )
    in_flight: list[int] = []  # the epoch each permitted call was admitted in
    assert b.allow(0.0)
    in_flight.append(b.epoch)  # a call from before the trip, still running
    trip(b)  # start OPEN so that most scripts reach HALF_OPEN
    now = 0.0
    for op, x in script:
        if op == "wait":
            now += x
        elif op == "allow":
            if b.allow(now):
                in_flight.append(b.epoch)
        elif in_flight:
            epoch = in_flight.pop(x % len(in_flight))
            if op == "release":
                b.release(now, epoch=epoch)
            else:
                b.record(op == "ok", 0.1, now, epoch=epoch)
        probes = sum(1 for e in in_flight if e == b.epoch)
        if b.state is HALF_OPEN:
            assert probes <= n
            assert b.probes_in_flight == probes
        if b.state is OPEN:
            assert b.opened_until is not None
            assert b.opened_until - now <= b.policy.max_open_s
