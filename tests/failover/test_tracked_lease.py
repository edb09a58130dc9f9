"""The executor takes a TrackedProvider's in-flight count as a lease: held from the
attempt's open to its close, however the attempt ends, with no generator of its
own between the adapter and the client. On virtual time (looptime)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator

import pytest

import regions.discovery.tracked
from failover.executor import Budgets, Execution
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.discovery import TrackedProvider
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage
from regions.provider import Probe
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Sink, spec

pytestmark = pytest.mark.looptime

TRACKED = regions.discovery.tracked.__file__


class Adapter:
    """Yields ``tokens``, then fails with ``fail`` or finishes; notes which files
    the frames driving it belong to, at every event."""

    def __init__(self, tokens: int = 3, fail: BackendError | None = None) -> None:
        self.tokens, self.fail = tokens, fail
        self.callers: set[str] = set()
        self.closed = 0
        self.gate = asyncio.Event()
        self.gate.set()

    def passthrough(self, kind: Kind) -> bool:
        return False

    async def close(self) -> None:
        pass

    async def probe(self) -> Probe:
        return Probe(healthy=True)

    def _note_callers(self) -> None:
        frame = sys._getframe(1)
        while frame is not None:
            self.callers.add(frame.f_code.co_filename)
            frame = frame.f_back  # type: ignore[assignment]

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        try:
            for i in range(self.tokens):
                await self.gate.wait()
                self._note_callers()
                yield TokenDelta(f"t{i} ")
            if self.fail is not None:
                raise self.fail
            yield Finish("stop")
            yield Usage(3, self.tokens)
        finally:
            self.closed += 1


def execution(*backends: tuple[str, TrackedProvider], resume: bool = False) -> Execution:
    policy = FailoverPolicy(
        TimeoutPolicy(first_token=1.0, idle=1.0), resume=resume, hedge=False, rounds=1
    )
    plan = Plan("m", "v1", tuple(Candidate(spec(name), "test") for name, _ in backends))
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    clock = asyncio.get_running_loop().time
    return Execution(request, plan, dict(backends), policy, Sink(), Budgets(), clock=clock)


async def answer(ex: Execution) -> str:
    events = [*await ex.start(), *[e async for e in ex.events()]]
    await ex.aclose()
    return "".join(e.text for e in events if isinstance(e, TokenDelta))


async def test_events_pass_no_generator_of_the_tracked_provider() -> None:
    inner = Adapter()
    tracked = TrackedProvider("a", inner)
    assert await answer(execution(("a", tracked))) == "t0 t1 t2 "
    assert TRACKED not in inner.callers  # one generator fewer for every event
    assert (tracked.in_flight, inner.closed) == (0, 1)


async def test_the_lease_is_held_while_streaming_and_released_when_the_client_leaves() -> None:
    inner = Adapter(tokens=5)
    tracked = TrackedProvider("a", inner)
    ex = execution(("a", tracked))
    await ex.start()
    events = ex.events()
    await anext(events)
    assert tracked.in_flight == 1
    inner.gate.clear()  # the upstream stalls; retiring waits for the stream
    retiring = asyncio.create_task(tracked.retire(deadline_s=30))
    await asyncio.sleep(1)
    assert not retiring.done()
    await events.aclose()  # the client went away
    await ex.aclose()
    await ex.aclose()  # idempotent: released once
    assert (tracked.in_flight, inner.closed) == (0, 1)
    assert await retiring == 0  # closed as soon as the stream was


async def test_retire_waits_for_an_execution_then_closes() -> None:
    inner = Adapter()
    tracked = TrackedProvider("a", inner)
    ex = execution(("a", tracked))
    await ex.start()
    retiring = asyncio.create_task(tracked.retire(deadline_s=30))
    await asyncio.sleep(0)
    assert not retiring.done() and not tracked.closed
    assert [e async for e in ex.events()][-1] == Usage(3, 3)
    assert await retiring == 0 and tracked.closed


async def test_a_retired_or_failing_backend_holds_nothing_and_the_next_one_serves() -> None:
    retired = TrackedProvider("a", Adapter())
    await retired.retire(deadline_s=0)
    refused = TrackedProvider("b", Adapter(tokens=0, fail=BackendError(FailureClass.CONNECT, "x")))
    serving = TrackedProvider("c", Adapter())
    ex = execution(("a", retired), ("b", refused), ("c", serving))
    assert await answer(ex) == "t0 t1 t2 "
    assert [a.outcome for a in ex.attempts] == ["connect", "connect", "ok"]
    assert (retired.in_flight, refused.in_flight, serving.in_flight) == (0, 0, 0)


async def test_a_stream_broken_mid_way_is_released_when_the_resumption_opens() -> None:
    broken = Adapter(tokens=2, fail=BackendError(FailureClass.STREAM_BROKEN, "reset"))
    first, second = TrackedProvider("a", broken), TrackedProvider("b", Adapter())
    ex = execution(("a", first), ("b", second), resume=True)
    await ex.start()
    events = ex.events()
    assert await anext(events) == TokenDelta("t1 ")
    text = await anext(events)  # the continuation's first token
    assert isinstance(text, TokenDelta) and text.text == "t0 "
    assert (first.in_flight, second.in_flight, broken.closed) == (0, 1, 1)
    assert Finish("stop") in [e async for e in events]
    await ex.aclose()
    assert (first.in_flight, second.in_flight) == (0, 0)
