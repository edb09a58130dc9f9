"""Envoy-style consecutive-error ejection on a fake clock."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from failover.outlier import EjectionPolicy, OutlierDetector


def detector(
    backends: int = 4, share: float = 0.5, **kw: float
) -> tuple[OutlierDetector, list[str]]:
    d = OutlierDetector(EjectionPolicy(max_ejection_share=share, **kw))  # type: ignore[arg-type]
    names = [f"b{i}" for i in range(backends)]
    for name in names:
        d.register(name, "llama")
    return d, names


def fail(d: OutlierDetector, backend: str, now: float, times: int = 5) -> list[bool]:
    return [d.record(backend, False, now) for _ in range(times)]


# -- scenario 10: a dead region's backends are ejected -----------------------------------


def test_five_consecutive_errors_eject() -> None:
    d, _ = detector()
    assert fail(d, "b0", 0.0) == [False] * 4 + [True]
    assert d.is_ejected("b0", 0.0)
    assert d.ejected_until("b0") == 30.0
    assert d.ejected("llama", 0.0) == {"b0"}
    assert d.ejections == 1


def test_a_success_resets_the_streak() -> None:
    d, _ = detector()
    fail(d, "b0", 0.0, times=4)
    d.record("b0", True, 0.0)
    assert fail(d, "b0", 0.0, times=4) == [False] * 4
    assert not d.is_ejected("b0", 0.0)


def test_ejection_ends_lazily_on_query() -> None:
    d, _ = detector()
    fail(d, "b0", 0.0)
    assert d.is_ejected("b0", 29.9)
    assert not d.is_ejected("b0", 30.0)
    assert d.ejected_until("b0") is None
    assert d.ejected("llama", 30.0) == frozenset()


def test_records_while_ejected_are_ignored() -> None:
    d, _ = detector()
    fail(d, "b0", 0.0)
    assert fail(d, "b0", 1.0) == [False] * 5  # late outcomes of attempts started before
    assert d.ejected_until("b0") == 30.0
    # and they did not count toward the next ejection
    assert fail(d, "b0", 31.0, times=4) == [False] * 4


def test_ejection_time_grows_with_n_and_is_capped() -> None:
    d, _ = detector(base_ejection_s=30.0, max_ejection_s=100.0)
    now, lengths = 0.0, []
    for _ in range(5):
        assert fail(d, "b0", now)[-1]
        until = d.ejected_until("b0")
        assert until is not None
        lengths.append(until - now)
        now = until  # fails again right after returning
    assert lengths == [30.0, 60.0, 90.0, 100.0, 100.0]
    assert d.ejection_count("b0", now) == 4  # stops growing once base × n reaches the cap


def test_n_decays_by_one_per_healthy_base_period() -> None:
    d, _ = detector(base_ejection_s=30.0)
    fail(d, "b0", 0.0)  # n=1, back at 30
    fail(d, "b0", 30.0)  # n=2, back at 90
    assert d.ejection_count("b0", 90.0) == 2
    assert d.ejection_count("b0", 119.9) == 2
    assert d.ejection_count("b0", 120.0) == 1
    assert d.ejection_count("b0", 150.0) == 0
    fail(d, "b0", 125.0)  # n was 1 at 125: this ejection is the second → 60 s
    assert d.ejected_until("b0") == 125.0 + 60.0


def test_uneject_by_active_health_check() -> None:
    d, _ = detector()
    fail(d, "b0", 0.0)
    assert d.uneject("b0", 5.0)
    assert not d.is_ejected("b0", 5.0)
    assert not d.uneject("b0", 5.0)


# -- the share cap ----------------------------------------------------------------------


def test_share_cap_holds_back_further_ejections() -> None:
    d, _ = detector(backends=4, share=0.5)
    assert fail(d, "b0", 0.0)[-1]
    assert fail(d, "b1", 0.0)[-1]
    assert not fail(d, "b2", 0.0)[-1]  # 3 of 4 would exceed 50%
    assert d.overflows == 1
    assert not d.is_ejected("b2", 0.0)
    # b2 keeps its streak: once b0 and b1 return, its next failure ejects it
    assert d.record("b2", False, 30.0)


def test_at_least_one_ejection_in_a_group_of_two_or_more() -> None:
    d, _ = detector(backends=3, share=0.1)  # 10% of 3 rounds to 0, yet one may go
    assert fail(d, "b0", 0.0)[-1]
    assert not fail(d, "b1", 0.0)[-1]


def test_a_lone_backend_is_never_ejected() -> None:
    d, _ = detector(backends=1, share=1.0)
    assert fail(d, "b0", 0.0, times=50) == [False] * 50


def test_groups_are_capped_separately() -> None:
    d, _ = detector(backends=2, share=0.5)
    d.register("m0", "mistral")
    d.register("m1", "mistral")
    assert fail(d, "b0", 0.0)[-1]
    assert fail(d, "m0", 0.0)[-1]
    assert d.ejected("llama", 0.0) == {"b0"} and d.ejected("mistral", 0.0) == {"m0"}


def test_unknown_and_unregistered_backends_are_ignored() -> None:
    d, _ = detector()
    assert not d.record("nope", False, 0.0)
    assert not d.is_ejected("nope", 0.0)
    fail(d, "b0", 0.0)
    d.unregister("b0")
    assert d.ejected("llama", 0.0) == frozenset()


def test_cap_arithmetic() -> None:
    p = EjectionPolicy(max_ejection_share=0.3)
    assert [p.cap(n) for n in (1, 2, 3, 9, 10, 11)] == [0, 1, 1, 2, 3, 3]


@pytest.mark.parametrize(
    "kw",
    [
        {"consecutive_errors": 0},
        {"base_ejection_s": 0.0},
        {"max_ejection_s": 1.0},
        {"max_ejection_share": 1.5},
    ],
)
def test_invalid_policies_are_refused(kw: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        EjectionPolicy(**kw)  # type: ignore[arg-type]


# -- property: the cap is never exceeded --------------------------------------------------

steps = st.lists(
    st.tuples(st.integers(0, 7), st.booleans(), st.floats(0, 40)), min_size=1, max_size=300
)


@settings(max_examples=300, deadline=None)
@given(steps, st.integers(1, 8), st.sampled_from([0.0, 0.1, 0.34, 0.5, 1.0]), st.integers(1, 3))
def test_share_cap_is_never_exceeded(
    script: list[tuple[int, bool, float]], size: int, share: float, threshold: int
) -> None:
    d = OutlierDetector(
        EjectionPolicy(consecutive_errors=threshold, base_ejection_s=10.0, max_ejection_share=share)
    )
    names = [f"b{i}" for i in range(size)]
    for name in names:
        d.register(name, "g")
    limit = 0 if size < 2 else max(1, int(share * size + 1e-9))
    now = 0.0
    for index, success, advance in script:
        now += advance if index % 3 == 0 else 0.0
        d.record(names[index % size], success or index % 4 == 3, now)
        ejected = [n for n in names if d.is_ejected(n, now)]
        assert len(ejected) <= limit
        assert set(ejected) == d.ejected("g", now)
        for name in ejected:
            until = d.ejected_until(name)
            assert until is not None and now < until <= now + 300.0
