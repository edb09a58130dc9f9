"""A withdrawal from the retry or hedge budget that starts no attempt (every
candidate left is held by its breaker) is given back: the budget counts attempts
made, not attempts wanted. On virtual time (looptime)."""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from failover.budget import RetryBudget
from failover.executor import Budgets, Execution, ExecutionFailed
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.errors import BackendError, FailureClass
from regions.inventory import BackendSpec
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Scripted, Sink, spec

pytestmark = pytest.mark.looptime


class Holding(Sink):
    """Holds ``held`` (an open breaker); hedges every attempt after 100 ms."""

    def __init__(self, hedge: bool) -> None:
        super().__init__()
        self.hedge = hedge

    def admit(self, backend: BackendSpec, now: float) -> int | None:
        return None if backend.name == "held" else 0

    def hedge_delay(self, backend: BackendSpec) -> float | None:
        return 0.1 if self.hedge else None


def one() -> RetryBudget:
    return RetryBudget(ratio=0.0, min_per_s=0.1, ttl_s=10.0)  # exactly one withdrawal


async def run(
    providers: dict[str, Scripted], order: str, budgets: Budgets, *, hedge: bool
) -> Execution:
    loop = asyncio.get_running_loop()
    policy = FailoverPolicy(TimeoutPolicy(first_token=10.0), resume=False, hedge=hedge, rounds=1)
    plan = Plan("m", "v1", tuple(Candidate(spec(n), "test") for n in order.split()))
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    ex = Execution(
        request,
        plan,
        providers,  # type: ignore[arg-type]
        policy,
        Holding(hedge),
        budgets,
        clock=loop.time,
    )
    with contextlib.suppress(ExecutionFailed):  # the first request of each test fails
        await ex.start()
    await ex.aclose()
    return ex


async def test_a_retry_that_found_nothing_to_start_is_given_back() -> None:
    budgets = Budgets(retries=one())
    down = BackendError(FailureClass.CONNECT, "refused")
    await run({"a": Scripted(down), "held": Scripted(" x")}, "a held", budgets, hedge=False)
    ex = await run({"a": Scripted(down), "b": Scripted(" b")}, "a b", budgets, hedge=False)
    assert [(a.backend.name, a.kind) for a in ex.attempts] == [("a", "primary"), ("b", "retry")]


async def test_a_hedge_that_found_nothing_to_start_is_given_back() -> None:
    budgets = Budgets(hedges=one())
    first = {"slow": Scripted(0.5, " s"), "held": Scripted(" x")}
    await run(first, "slow held", budgets, hedge=True)
    ex = await run(
        {"slow": Scripted(0.5, " s"), "b": Scripted(" b")}, "slow b", budgets, hedge=True
    )
    assert [(a.backend.name, a.kind) for a in ex.attempts] == [("slow", "primary"), ("b", "hedge")]


def test_a_refund_restores_the_balance_a_withdrawal_took() -> None:
    budget = one()
    assert budget.withdraw(0.0) and budget.balance(0.0) == 0.0
    budget.refund(0.0)
    assert budget.balance(0.0) == 1.0 and budget.withdraw(0.0)
