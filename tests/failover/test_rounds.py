"""Rounds over the plan on an injected clock and sleep: the backoff and the total
deadline, exactly, without waiting; Retry-After hints that are no hints."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import pytest

from failover.budget import RetryBudget
from failover.executor import Budgets, Execution, ExecutionFailed
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.errors import BackendError, FailureClass
from regions.events import Event
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Scripted, Sink, spec


class Clock:
    """Virtual time: it moves only when the execution sleeps, and records each sleep."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def overloaded(retry_after: float | None) -> BackendError:
    return BackendError(FailureClass.OVERLOADED, "429", status=429, retry_after=retry_after)


def execution(providers: dict[str, Scripted], policy: FailoverPolicy, clock: Clock) -> Execution:
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    plan = Plan("m", "v1", tuple(Candidate(spec(name), "test") for name in providers))
    return Execution(
        request,
        plan,
        providers,  # type: ignore[arg-type]
        policy,
        Sink(),
        Budgets(),
        clock=clock,
        sleep=clock.sleep,
    )


def policy(rounds: int, total: float) -> FailoverPolicy:
    return FailoverPolicy(
        TimeoutPolicy(total=total), resume=False, hedge=False, rounds=rounds, max_retry_after_s=2.0
    )


async def test_the_total_deadline_ends_the_rounds_after_exactly_the_backoffs_that_fit() -> None:
    # Retry-After 0.3 s floors every backoff (the jitter's ceiling stays below it for
    # three rounds, and a fourth is ≥ 0.3 s whatever it draws): after 0.9 s, the next
    # backoff would end past the 1 s deadline, so the client is answered at once
    # instead of after a wait nothing could follow.
    clock = Clock()
    backend = Scripted(overloaded(0.3))
    ex = execution({"a": backend}, policy(rounds=10, total=1.0), clock)
    with pytest.raises(ExecutionFailed) as info:
        await ex.start()
    assert clock.slept == pytest.approx([0.3, 0.3, 0.3])
    assert backend.calls == 4
    assert clock.now == pytest.approx(0.9)
    assert (info.value.status, info.value.retry_after) == (503, 0.3)


async def test_rounds_end_when_the_policy_has_no_more() -> None:
    clock = Clock()
    backend = Scripted(overloaded(0.3))
    ex = execution({"a": backend}, policy(rounds=3, total=600.0), clock)
    with pytest.raises(ExecutionFailed):
        await ex.start()
    assert backend.calls == 3
    assert clock.slept == pytest.approx([0.3, 0.3])


async def test_a_nan_hint_is_no_hint_beside_one_that_exceeds_the_cap() -> None:
    # The soonest usable hint (3 s) is longer than a client may be held (2 s):
    # answer now, whatever order the hints came in. The NaN is not the soonest.
    clock = Clock()
    providers = {"a": Scripted(overloaded(math.nan)), "b": Scripted(overloaded(3.0))}
    ex = execution(providers, policy(rounds=2, total=600.0), clock)
    with pytest.raises(ExecutionFailed) as info:
        await ex.start()
    assert clock.slept == []
    assert [p.calls for p in providers.values()] == [1, 1]
    assert (info.value.status, info.value.retry_after) == (503, 3.0)


@pytest.mark.parametrize("hint", [math.nan, math.inf, -1.0])
async def test_a_nonsense_hint_never_reaches_the_client(hint: float) -> None:
    # Retry-After goes out as a whole number of seconds: NaN or inf there would
    # be a 500. An infinite wait exceeds any cap (no second round); a NaN or a
    # negative one is no hint (the second round runs after a plain backoff).
    clock = Clock()
    backend = Scripted(overloaded(hint))
    ex = execution({"a": backend}, policy(rounds=2, total=600.0), clock)
    with pytest.raises(ExecutionFailed) as info:
        await ex.start()
    assert (info.value.status, info.value.retry_after) == (503, 1.0)
    assert backend.calls == (1 if hint == math.inf else 2)
    assert all(0.0 <= s <= 0.05 for s in clock.slept)  # round 1's ceiling: base 50 ms


class Answers:
    """A backend answering each call with the next of its errors."""

    def __init__(self, *errors: BackendError) -> None:
        self.errors = list(errors)
        self.calls = 0

    def passthrough(self, kind: Kind) -> bool:
        return False

    async def close(self) -> None:
        pass

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        self.calls += 1
        raise self.errors.pop(0)
        yield  # an async generator, as adapters are


async def test_a_rounds_hint_is_its_own_not_an_earlier_rounds() -> None:
    # Round 1 asked for 0.3 s, which was waited; round 2 asks for 30 s, longer
    # than a client may be held: answer at once with that hint, instead of
    # waiting 0.3 s again on a hint already honoured.
    clock = Clock()
    backend = Answers(overloaded(0.3), overloaded(30.0), overloaded(0.3))
    ex = execution({"a": backend}, policy(rounds=3, total=600.0), clock)  # type: ignore[dict-item]
    with pytest.raises(ExecutionFailed) as info:
        await ex.start()
    assert clock.slept == pytest.approx([0.3])
    assert backend.calls == 2
    assert (info.value.status, info.value.retry_after) == (503, 30.0)


async def test_a_round_that_could_try_nothing_ends_the_rounds() -> None:
    # Round 2 spent the retry budget's only withdrawal (its floor is one); round 3
    # could try nothing, so no round follows it: one backoff after each of the
    # first two, none after the third.
    clock = Clock()
    backend = Scripted(overloaded(None))
    ex = execution({"a": backend}, policy(rounds=5, total=600.0), clock)
    ex.budgets.retries = RetryBudget(ratio=0.0, min_per_s=0.1, ttl_s=10.0)
    with pytest.raises(ExecutionFailed):
        await ex.start()
    assert backend.calls == 2
    assert len(clock.slept) == 2
