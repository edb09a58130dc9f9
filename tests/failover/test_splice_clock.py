"""The splice's cost per event: one clock read for a text event (the watchdog is fed
the reading taken after the write), not one for the watchdog and two for the idle
bookkeeping. Counted on the request's injected clock, on virtual time (looptime)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from failover.executor import Budgets, Execution
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.events import Event, Finish, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind, Region
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Sink

pytestmark = pytest.mark.looptime

EU = Region("aws:eu-west-1", frozenset({"EU"}))


class Tokens:
    def __init__(self, n: int) -> None:
        self.n = n

    def passthrough(self, kind: Kind) -> bool:
        return False

    async def close(self) -> None:
        pass

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        for i in range(self.n):
            yield TokenDelta(f"t{i}")
        yield Finish("stop")
        yield Usage(3, self.n)


async def clock_reads(tokens: int) -> int:
    """Clock reads of a whole streamed request of ``tokens`` text events."""
    time = asyncio.get_running_loop().time
    reads = 0

    def clock() -> float:
        nonlocal reads
        reads += 1
        return time()

    spec = BackendSpec("a", "m", "v1", EU, ProviderKind.VLLM, "http://x", "s")
    policy = FailoverPolicy(
        TimeoutPolicy(first_token=1.0, idle=0.2), resume=False, hedge=False, rounds=1
    )
    plan = Plan("m", "v1", (Candidate(spec, "test"),))
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    ex = Execution(request, plan, {"a": Tokens(tokens)}, policy, Sink(), Budgets(), clock=clock)  # type: ignore[dict-item]
    events = [*await ex.start(), *[e async for e in ex.events()]]
    assert sum(isinstance(e, TokenDelta) for e in events) == tokens
    return reads


async def test_a_text_event_reads_the_clock_once() -> None:
    # the difference cancels what a request reads once (start, head, finish)
    assert await clock_reads(200) - await clock_reads(100) == 100
