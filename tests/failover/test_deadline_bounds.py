"""The total deadline bounds every attempt a request makes, not only the one
running when it passes: no retry, hedge or resumption starts after it (each
would be a connection cut at once and a timeout charged to a healthy backend).
On virtual time (looptime)."""

from __future__ import annotations

import asyncio

import pytest

from failover.executor import Budgets, Execution, ExecutionFailed
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.events import StreamError, TokenDelta
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Scripted, Sink, spec

pytestmark = pytest.mark.looptime


def execution(providers: dict[str, Scripted], policy: FailoverPolicy) -> tuple[Execution, Sink]:
    sink = Sink()
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    plan = Plan("m", "v1", tuple(Candidate(spec(n), "test") for n in providers))
    clock = asyncio.get_running_loop().time
    ex = Execution(request, plan, providers, policy, sink, Budgets(), clock=clock)  # type: ignore[arg-type]
    return ex, sink


async def test_no_retry_starts_after_the_total_deadline() -> None:
    # a is still waiting for its first token when the whole request's 1 s is up:
    # b and c are never called, and no timeout is charged to them.
    providers = {"a": Scripted(5.0, " late"), "b": Scripted(" b"), "c": Scripted(" c")}
    policy = FailoverPolicy(
        TimeoutPolicy(first_token=2.0, idle=2.0, total=1.0), resume=False, hedge=False, rounds=3
    )
    ex, sink = execution(providers, policy)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(ExecutionFailed) as info:
        await ex.start()
    assert info.value.status == 503
    assert loop.time() - t0 == pytest.approx(1.0)
    assert [p.calls for p in providers.values()] == [1, 0, 0]
    assert sink.outcomes == [("a", "timeout")]


async def test_no_resumption_starts_after_the_total_deadline() -> None:
    # a streams a token, then stalls past the total deadline (not the idle
    # timeout): the stream ends with an error, not with a resumption on b that
    # the deadline would cut at once.
    providers = {"a": Scripted(" one", 5.0, " two"), "b": Scripted(" b")}
    policy = FailoverPolicy(
        TimeoutPolicy(first_token=2.0, idle=10.0, total=1.0), resume=True, hedge=False, rounds=1
    )
    ex, sink = execution(providers, policy)
    head = await ex.start()
    rest = [e async for e in ex.events()]
    assert [e.text for e in head if isinstance(e, TokenDelta)] == [" one"]
    assert isinstance(rest[-1], StreamError)
    assert providers["b"].calls == 0
    assert sink.outcomes == [("a", "timeout")]
