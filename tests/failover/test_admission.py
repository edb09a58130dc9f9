"""The executor's Admission protocol: asked before the first attempt, released once at the end."""

from __future__ import annotations

import asyncio

import pytest

from failover.executor import Budgets, Execution, ExecutionFailed
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.events import Usage
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Scripted, Sink, drain, spec

pytestmark = pytest.mark.looptime


class Recorded:
    """An admission that refuses when told to and remembers what it was told."""

    def __init__(self, refuse: bool = False) -> None:
        self.refuse = refuse
        self.calls: list[str] = []
        self.released: list[Usage | None] = []

    def admit(self) -> None:
        self.calls.append("admit")
        if self.refuse:
            raise ExecutionFailed(429, "rate_limit_exceeded", "slow down", 3.0)

    def release(self, usage: Usage | None) -> None:
        self.calls.append("release")
        self.released.append(usage)


def _execution(provider: Scripted, admission: Recorded) -> Execution:
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    plan = Plan("m", "v1", (Candidate(spec("a"), "test"),))
    policy = FailoverPolicy(TimeoutPolicy(first_token=0.2, idle=0.2), resume=False, hedge=False)
    return Execution(
        request,
        plan,
        {"a": provider},  # type: ignore[dict-item]
        policy,
        Sink(),
        Budgets(),
        clock=asyncio.get_running_loop().time,  # virtual time: the loop's clock
        admission=admission,
    )


async def test_admitted_before_the_first_attempt_and_released_once_with_the_usage() -> None:
    provider, admission = Scripted("a", "b", "<finish>"), Recorded()
    ex = _execution(provider, admission)
    await ex.start()
    assert admission.calls == ["admit"] and provider.calls == 1
    await drain(ex)
    await ex.aclose()
    await ex.aclose()
    assert admission.calls == ["admit", "release"]
    assert admission.released == [Usage(3, 2)]


async def test_a_refusal_reaches_no_backend_and_releases_nothing() -> None:
    provider, admission = Scripted("a"), Recorded(refuse=True)
    ex = _execution(provider, admission)
    with pytest.raises(ExecutionFailed) as refused:
        await ex.start()
    await ex.aclose()
    assert (refused.value.status, refused.value.retry_after) == (429, 3.0)
    assert provider.calls == 0 and admission.calls == ["admit"]


async def test_released_when_every_backend_failed_after_admission() -> None:
    provider, admission = Scripted(ConnectionResetError()), Recorded()
    ex = _execution(provider, admission)
    with pytest.raises(ExecutionFailed):
        await ex.start()
    await ex.aclose()
    assert admission.calls == ["admit", "release"] and admission.released == [None]
