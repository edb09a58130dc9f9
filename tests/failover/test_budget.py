"""The retry (and hedge) budget on a fake clock, checked against a brute-force ledger."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.budget import RetryBudget


def test_a_fresh_budget_holds_the_floor() -> None:
    b = RetryBudget(ratio=0.2, min_per_s=10.0, ttl_s=10.0)
    assert b.balance(0.0) == 100.0
    assert all(b.withdraw(0.0) for _ in range(100))
    assert not b.withdraw(0.0)
    assert b.denied == 1


def test_five_requests_at_20_percent_earn_exactly_one_retry() -> None:
    b = RetryBudget(ratio=0.2, min_per_s=0.0)
    for _ in range(4):
        b.deposit(0.0)
    assert not b.withdraw(0.0)
    b.deposit(0.0)
    assert b.withdraw(0.0)
    assert not b.withdraw(0.0)


def test_deposits_and_withdrawals_expire_after_ttl() -> None:
    b = RetryBudget(ratio=1.0, min_per_s=0.0, ttl_s=10.0)
    for _ in range(3):
        b.deposit(0.0)
    assert b.withdraw(1.5)  # slots are 1 s wide: this one is in the next slot
    assert b.balance(9.9) == 2.0
    assert b.balance(10.0) == -1.0  # the deposits' slot expired before the withdrawal's
    assert b.balance(11.0) == 0.0
    assert not b.withdraw(11.0)


def test_long_idle_clears_everything() -> None:
    b = RetryBudget(ratio=1.0, min_per_s=1.0, ttl_s=10.0)
    for _ in range(50):
        b.deposit(0.0)
    assert b.balance(1_000.0) == 10.0


def test_clock_going_backwards_counts_in_the_current_slot() -> None:
    b = RetryBudget(ratio=1.0, min_per_s=0.0, ttl_s=10.0)
    b.deposit(50.0)
    b.deposit(10.0)
    assert b.balance(50.0) == 2.0
    assert b.balance(60.0) == 0.0


# -- scenario 3: 20% errors are all retried; an outage is not amplified ----------------


def drive(b: RetryBudget, seconds: int, rps: int, fails: float) -> tuple[int, int]:
    """Requests at ``rps`` for ``seconds``; a ``fails`` share of attempts fail and each
    failure is retried while the budget allows. Returns (requests, upstream attempts)."""
    requests = attempts = 0
    debt = 0.0
    for tick in range(seconds * rps):
        now = tick / rps
        b.deposit(now)
        requests += 1
        while True:
            attempts += 1
            debt += fails
            if debt < 1.0:
                break
            debt -= 1.0  # this attempt failed
            if not b.withdraw(now):
                break
    return requests, attempts


def test_twenty_percent_errors_are_all_retried() -> None:
    b = RetryBudget()
    requests, attempts = drive(b, seconds=60, rps=100, fails=0.2)
    assert b.denied == 0
    assert attempts == pytest.approx(requests * 1.25, rel=0.01)  # 1 / (1 − 0.2)


def test_an_outage_costs_at_most_ratio_plus_floor() -> None:
    b = RetryBudget(ratio=0.2, min_per_s=10.0, ttl_s=10.0)
    requests, attempts = drive(b, seconds=60, rps=100, fails=1.0)
    retries = attempts - requests
    # steady state: 0.2 × 100/s + 10/s; the floor's first ttl adds one reserve
    assert retries <= 0.2 * requests + 10.0 * 60 + 100
    assert retries / requests == pytest.approx(0.3, abs=0.02)


def test_the_hedge_cap_is_the_same_object() -> None:
    b = RetryBudget(ratio=0.05, min_per_s=0.1, ttl_s=10.0)
    hedges = 0
    for tick in range(6000):  # 100 requests/s for 60 s, every one wants a hedge
        now = tick / 100
        b.deposit(now)
        hedges += b.withdraw(now)
    assert hedges <= 0.05 * 6000 + 0.1 * 60 + 1
    assert hedges >= 0.05 * 6000 - 0.05 * 1000  # the share is actually available


@pytest.mark.parametrize("kw", [{"ratio": -0.1}, {"min_per_s": -1.0}, {"ttl_s": 0.0}, {"slots": 0}])
def test_invalid_budgets_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryBudget(**kw)  # type: ignore[arg-type]


# -- property: the ledger agrees with a brute-force count --------------------------------

events = st.lists(
    st.tuples(st.sampled_from(["deposit", "deposit", "withdraw"]), st.floats(0, 3)),
    max_size=300,
)


@settings(max_examples=300, deadline=None)
@given(
    events,
    st.sampled_from([0.0, 0.05, 0.2, 0.5, 1.0]),
    st.sampled_from([0.0, 0.1, 1.0]),
    st.sampled_from([(10.0, 10), (5.0, 4), (1.0, 1)]),
)
def test_withdrawals_never_exceed_floor_plus_ratio_of_deposits(
    script: list[tuple[str, float]], ratio: float, floor: float, window: tuple[float, int]
) -> None:
    ttl, slots = window
    b = RetryBudget(ratio=ratio, min_per_s=floor, ttl_s=ttl, slots=slots)
    width = ttl / slots
    log: list[tuple[int, str]] = []  # (slot epoch, kind) of every deposit and allowed withdrawal
    now = 0.0
    for kind, advance in script:
        now += advance
        epoch = math.floor(now / width)
        live = [k for e, k in log if e > epoch - slots]
        deposits, withdrawals = live.count("deposit"), live.count("withdraw")
        allowance = floor * ttl + ratio * deposits
        if kind == "deposit":
            b.deposit(now)
            log.append((epoch, kind))
        elif b.withdraw(now):
            assert withdrawals + 1 <= allowance + 1e-9
            log.append((epoch, kind))
        else:
            assert withdrawals + 1 > allowance - 1e-9  # refused only when truly exhausted
    # in any `slots` consecutive slots: withdrawals ≤ reserve + ratio × deposits of
    # those slots and of the ttl before them
    last = max((e for e, _ in log), default=0)
    for start in range(0, last + 1):
        inside = [k for e, k in log if start <= e < start + slots]
        earned = [k for e, k in log if start - slots < e < start + slots]
        reserve = floor * ttl
        assert inside.count("withdraw") <= reserve + ratio * earned.count("deposit") + 1e-9
