"""Backoff between rounds: tenacity's exponential ceiling, full jitter from an injected rng."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from failover.backoff import backoff_delay, exceeds_retry_after, soonest_retry_after


class Top(random.Random):
    """An rng whose uniform draw is always the top of the range: exposes the ceiling."""

    def uniform(self, a: float, b: float) -> float:
        return b


def test_ceiling_doubles_from_base_and_stops_at_cap() -> None:
    ceilings = [backoff_delay(r, None, base=0.05, cap=2.0, rng=Top()) for r in range(1, 9)]
    assert ceilings == pytest.approx([0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 2.0, 2.0])


def test_huge_rounds_do_not_overflow() -> None:
    assert backoff_delay(10_000, None, rng=Top()) == 2.0


def test_full_jitter_is_reproducible_from_the_rng() -> None:
    a = [backoff_delay(r, None, rng=random.Random(7)) for r in range(1, 6)]
    b = [backoff_delay(r, None, rng=random.Random(7)) for r in range(1, 6)]
    assert a == b
    expected = [random.Random(7).uniform(0.0, min(0.05 * 2 ** (r - 1), 2.0)) for r in range(1, 6)]
    assert a == pytest.approx(expected)


@given(st.integers(1, 200), st.floats(0, 1), st.floats(0.001, 10), st.integers(0, 2**32))
def test_delay_stays_within_zero_and_the_ceiling(
    round: int, base: float, cap: float, seed: int
) -> None:
    delay = backoff_delay(round, None, base=base, cap=cap, rng=random.Random(seed))
    assert 0.0 <= delay <= min(base * 2.0 ** min(round - 1, 1000), cap) + 1e-12


# -- scenario 12: Retry-After is honoured, within reason ---------------------------------


def test_retry_after_is_a_floor() -> None:
    rng = random.Random(1)
    assert backoff_delay(1, 1.5, rng=rng) == 1.5  # hint above the jittered backoff
    assert backoff_delay(8, 0.001, rng=Top()) == 2.0  # backoff above a tiny hint


def test_a_huge_retry_after_is_capped() -> None:
    assert backoff_delay(1, 3600.0, max_retry_after=5.0, rng=random.Random(1)) == 5.0
    assert exceeds_retry_after(3600.0, max_retry_after=5.0)
    assert not exceeds_retry_after(4.0, max_retry_after=5.0)
    assert not exceeds_retry_after(None)
    assert not exceeds_retry_after(math.nan)


def test_a_rounds_hint_is_the_soonest_usable_one_whatever_the_order() -> None:
    assert soonest_retry_after([math.nan, 3.0, None, -1.0]) == 3.0
    assert soonest_retry_after([3.0, math.nan]) == 3.0
    assert soonest_retry_after([math.inf, 0.0]) == 0.0  # 0 asks for no wait: a hint
    assert soonest_retry_after([math.inf]) == math.inf
    assert soonest_retry_after([None, math.nan, -2.0]) is None


@pytest.mark.parametrize("hint", [None, -1.0, 0.0, math.nan])
def test_absent_or_nonsense_hints_are_ignored(hint: float | None) -> None:
    assert backoff_delay(3, hint, rng=Top()) == pytest.approx(0.2)


@given(st.integers(1, 50), st.one_of(st.none(), st.floats(allow_nan=True)), st.integers(0, 99))
def test_never_more_than_the_larger_cap(round: int, hint: float | None, seed: int) -> None:
    delay = backoff_delay(round, hint, cap=2.0, max_retry_after=5.0, rng=random.Random(seed))
    assert 0.0 <= delay <= 5.0


@pytest.mark.parametrize("kw", [{"base": -1.0}, {"cap": -1.0}, {"max_retry_after": -1.0}])
def test_invalid_arguments(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        backoff_delay(1, None, rng=random.Random(), **kw)
    with pytest.raises(ValueError, match="1-based"):
        backoff_delay(0, None, rng=random.Random())


@given(st.integers(1, 2000), st.floats(0, 10), st.floats(0, 100))
def test_the_ceiling_is_tenacitys_exponential(round: int, base: float, cap: float) -> None:
    """The judge: tenacity's wait_exponential(multiplier=base, max=cap), which the
    ceiling once called (imported on the failure path, which failed under EMFILE)."""
    from tenacity import RetryCallState, Retrying, wait_exponential

    state = RetryCallState(retry_object=Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = round
    expected = float(wait_exponential(multiplier=base, max=cap)(state))
    assert backoff_delay(round, None, base=base, cap=cap, rng=Top()) == pytest.approx(expected)


def test_a_failed_round_imports_nothing() -> None:
    """Imports on the failure path need files: with the process out of descriptors
    the import itself raised, and the request answered 500."""
    import subprocess
    import sys

    probe = (
        "import sys, random; from failover.backoff import backoff_delay; before = set(sys.modules);"
        "backoff_delay(3, None, rng=random.Random(1)); print(sorted(set(sys.modules) - before))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
