"""TrackedProvider: retiring an adapter without cutting its streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from regions.discovery import TrackedProvider
from regions.errors import BackendError, FailureClass
from regions.events import Event, TokenDelta
from regions.provider import Probe
from regions.request import GenerationRequest, Kind
from tests.conftest import wait_for

REQUEST = GenerationRequest(kind=Kind.CHAT, model="m", request_id="r1")


class Gated:
    """An adapter whose streams yield one token, then wait for the test."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.closed = 0
        self.finalized = 0

    async def _stream(self) -> AsyncIterator[Event]:
        try:
            yield TokenDelta("a")
            await self.release.wait()
            yield TokenDelta("b")
        finally:
            self.finalized += 1

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        return self._stream()

    def passthrough(self, kind: Kind) -> bool:
        return True

    async def probe(self) -> Probe:
        return Probe(healthy=True, queue_depth=3)

    async def close(self) -> None:
        self.closed += 1


async def drain(stream: AsyncIterator[Event]) -> list[Event]:
    return [event async for event in stream]


async def test_retire_waits_for_streams_then_closes_once() -> None:
    inner, released = Gated(), []

    async def on_closed() -> None:
        released.append(True)

    tracked = TrackedProvider("gce/z/a", inner, on_closed)
    assert tracked.passthrough(Kind.CHAT) and tracked.probeable
    assert (await tracked.probe()).queue_depth == 3
    running = asyncio.create_task(drain(tracked.stream(REQUEST)))
    await wait_for(lambda: tracked.in_flight == 1)
    retiring = asyncio.create_task(tracked.retire(deadline_s=30))
    await wait_for(lambda: tracked.retired)
    with pytest.raises(BackendError) as err:  # no new streams once retiring
        await drain(tracked.stream(REQUEST))
    assert err.value.failure is FailureClass.CONNECT
    assert not retiring.done() and inner.closed == 0  # the running stream holds it open
    inner.release.set()
    assert len(await running) == 2  # the stream finished whole
    assert await retiring == 0
    assert (inner.closed, released, tracked.closed, tracked.in_flight) == (1, [True], True, 0)
    await tracked.close()
    assert inner.closed == 1  # idempotent


async def test_an_abandoned_stream_closes_the_inner_one_at_once() -> None:
    inner = Gated()
    tracked = TrackedProvider("gce/z/a", inner)
    stream = tracked.stream(REQUEST)
    assert isinstance(stream, AsyncGenerator)
    assert await anext(stream) == TokenDelta("a")
    await stream.aclose()  # hedge lost, client gone
    assert inner.finalized == 1 and tracked.in_flight == 0


async def test_the_deadline_closes_with_streams_still_running() -> None:
    inner = Gated()
    tracked = TrackedProvider("gce/z/a", inner)
    stream = tracked.stream(REQUEST)
    assert isinstance(stream, AsyncGenerator)
    await anext(stream)
    assert await tracked.retire(deadline_s=0.01) == 1
    assert inner.closed == 1
    await stream.aclose()


class Broken(Gated):
    """An adapter whose ``stream`` raises when called, or whose streams raise when closed."""

    def __init__(self, *, on_call: bool) -> None:
        super().__init__()
        self.on_call = on_call

    async def _failing_close(self) -> AsyncIterator[Event]:
        try:
            yield TokenDelta("a")
            await self.release.wait()
        finally:
            raise RuntimeError("connection reset while closing")

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        if self.on_call:
            raise BackendError(FailureClass.CONNECT, "no connection")
        return self._failing_close()


async def test_a_stream_that_fails_to_start_or_close_is_not_counted_in_flight() -> None:
    starting = TrackedProvider("gce/z/a", Broken(on_call=True))
    with pytest.raises(BackendError):
        await drain(starting.stream(REQUEST))
    assert starting.in_flight == 0
    closing = TrackedProvider("gce/z/b", Broken(on_call=False))
    stream = closing.stream(REQUEST)
    assert isinstance(stream, AsyncGenerator)
    assert await anext(stream) == TokenDelta("a")
    with pytest.raises(RuntimeError, match="while closing"):
        await stream.aclose()  # client gone; the inner stream's close fails
    assert closing.in_flight == 0
    # nothing left in flight: retiring closes at once instead of waiting out the deadline
    assert await starting.retire(deadline_s=0.01) == 0
    assert await closing.retire(deadline_s=0.01) == 0


async def test_a_lease_counts_the_inner_stream_until_released() -> None:
    inner = Gated()
    tracked = TrackedProvider("gce/z/a", inner)
    events, release = tracked.lease(REQUEST)
    assert await anext(events) == TokenDelta("a")  # the adapter's own stream, unwrapped
    assert tracked.in_flight == 1
    retiring = asyncio.create_task(tracked.retire(deadline_s=30))
    await wait_for(lambda: tracked.retired)
    with pytest.raises(BackendError) as err:  # no new leases once retiring
        tracked.lease(REQUEST)
    assert err.value.failure is FailureClass.CONNECT
    assert not retiring.done()
    release()  # its holder closed the stream
    assert await retiring == 0 and inner.closed == 1
    assert tracked.in_flight == 0
    with pytest.raises(BackendError):  # an adapter that fails to start: nothing taken
        TrackedProvider("gce/z/b", Broken(on_call=True)).lease(REQUEST)
