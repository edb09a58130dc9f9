"""The watchdog's deadlines, on virtual time (looptime): exact, and never racing real sleeps."""

from __future__ import annotations

import asyncio

import pytest

from failover.watchdog import Watchdog
from regions.errors import BackendError, FailureClass

pytestmark = pytest.mark.looptime


def dog(first: float = 10.0, idle: float = 10.0, total: float = 100.0) -> Watchdog:
    loop = asyncio.get_running_loop()
    return Watchdog(first_token=first, idle=idle, total_deadline=loop.time() + total, loop=loop)


def handed_on(w: Watchdog) -> None:
    """An event went to the consumer, as the executor reports it: pause, then resume."""
    w.pause()
    w.resume()


async def test_first_token_timeout_raises_timeout_failure() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendError) as info, dog(first=0.05):
        await asyncio.Event().wait()
    assert info.value.failure is FailureClass.TIMEOUT
    assert "first-token" in info.value.message
    assert loop.time() - started == pytest.approx(0.05)


async def test_idle_gap_after_first_token() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(BackendError, match="idle"), dog(first=0.01, idle=0.05) as w:
        w.first_token()
        for _ in range(5):  # an event every 40 ms keeps it alive past several idle periods
            await asyncio.sleep(0.04)
            handed_on(w)
        last = loop.time()
        await asyncio.Event().wait()
    assert loop.time() - last == pytest.approx(0.05)  # cut one idle period after the last event


async def test_total_deadline_cuts_a_stream_that_keeps_progressing() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendError, match="total"), dog(first=1, idle=1, total=2.5) as w:
        w.first_token()
        while True:
            await asyncio.sleep(0.5)
            handed_on(w)
    assert loop.time() - started == pytest.approx(2.5)


async def test_paused_consumer_is_not_cut() -> None:
    loop = asyncio.get_running_loop()
    with dog(first=0.01, idle=0.03) as w:
        w.first_token()
        w.pause()
        paused = loop.time()
        await asyncio.sleep(0.1)  # a slow client: three idle periods
        w.resume()
        assert loop.time() - paused == pytest.approx(0.1)
        await asyncio.sleep(0.02)  # within one idle period of the resume: still alive
    # and once resumed, the idle timeout applies again from the resume
    with pytest.raises(BackendError, match="idle"), dog(first=0.01, idle=0.03) as w:
        w.first_token()
        w.pause()
        await asyncio.sleep(0.1)
        w.resume()
        await asyncio.Event().wait()


async def test_outer_cancellation_is_not_swallowed() -> None:
    async def guarded() -> None:
        with dog():
            await asyncio.Event().wait()

    task = asyncio.create_task(guarded())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_deadlines_are_read_on_the_injected_clock() -> None:
    """A clock that stands still holds every deadline, however long the loop runs;
    once it reaches one, the watchdog fires within one period."""
    loop = asyncio.get_running_loop()
    now = [0.0]
    w = Watchdog(first_token=1.0, idle=1.0, total_deadline=5.0, loop=loop, clock=lambda: now[0])
    with pytest.raises(BackendError, match="first-token"), w:
        await asyncio.sleep(10.0)  # ten seconds of the loop's time, none of the clock's
        now[0] = 1.0
        fired = loop.time()
        await asyncio.Event().wait()
    assert loop.time() - fired <= 1.0


async def test_the_total_deadline_holds_right_after_a_pause_that_spanned_it() -> None:
    # The consumer was away (a slow client) when the total deadline passed; the
    # upstream keeps chunks coming well within the idle timeout. The stream is cut
    # as soon as the consumer is back, not an idle period later.
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BackendError, match="total"), dog(first=1.0, idle=10.0, total=1.0) as w:
        w.first_token()
        w.pause()
        await asyncio.sleep(1.5)
        w.resume()
        for _ in range(20):
            await asyncio.sleep(0.5)
            handed_on(w)
    assert loop.time() - started == pytest.approx(1.5)
