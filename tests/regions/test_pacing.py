"""regions.pacing: when reads after a first event wait, and that every wait ends."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

from gateway.app.server import Gateway
from regions.pacing import (
    ENTER_BUSY,
    ENTER_LAG_S,
    LEAVE_BUSY,
    LEAVE_LAG_S,
    PACER,
    RELEASE_SLICE,
    Pacer,
)
from tests.conftest import EmulatorFactory, gateway_config


def test_paces_only_after_the_loop_stays_late_and_stops_once_it_keeps_up() -> None:
    pacer = Pacer()
    pacer.observe(0.004)  # one late beat, smoothed: not yet
    assert not pacer.lagging
    for _ in range(10):
        pacer.observe(0.004)
    assert pacer.lagging
    # hysteresis: a lag between the two bounds keeps the state it has
    while pacer.lag_s > (ENTER_LAG_S + LEAVE_LAG_S) / 2:
        pacer.observe((ENTER_LAG_S + LEAVE_LAG_S) / 2 - 0.0001)
    assert pacer.lagging
    for _ in range(30):
        pacer.observe(0.0)
    assert not pacer.lagging


def test_a_saturated_loop_paces_without_lag_and_stops_well_below_saturation() -> None:
    """A loop busy nearly all the time is behind even while its turns are short (lag
    ~0): it paces, and stays paced until the busy share falls under LEAVE_BUSY,
    since paced reads lower it (no flapping at the entry threshold)."""
    pacer = Pacer()
    for _ in range(30):
        pacer.observe(0.0, busy=ENTER_BUSY - 0.05)  # busy, not saturated
    assert not pacer.lagging
    for _ in range(30):
        pacer.observe(0.0, busy=1.0)
    assert pacer.lagging
    for _ in range(30):
        pacer.observe(0.0, busy=(ENTER_BUSY + LEAVE_BUSY) / 2)  # paced reads cost less
    assert pacer.lagging
    for _ in range(30):
        pacer.observe(0.0, busy=LEAVE_BUSY - 0.1)
    assert not pacer.lagging
    pacer.observe(0.0, busy=7.0)  # a clock step is not more than all the time
    assert pacer.busy <= 1.0
    for _ in range(30):
        pacer.observe(0.0, busy=-4.0)  # nor less than none (a clock from another thread)
    assert pacer.busy >= 0.0


def test_a_loop_busy_as_at_200_streams_paces_and_stays_paced_at_its_paced_load() -> None:
    """The busy shares measured in the bench's latency scenario: an unpaced gateway at 200
    streams 5 ms apart settled at 0.75-0.8 of its core, and paced, at 0.65-0.75. That load is
    paced from the first ticks and stays paced; the bench's light load (0.13) is not."""
    pacer = Pacer()
    for _ in range(30):
        pacer.observe(0.0, busy=0.13)
    assert not pacer.lagging
    for _ in range(8):
        pacer.observe(0.0, busy=0.77)
    assert pacer.lagging
    for _ in range(200):
        pacer.observe(0.0, busy=0.65)
        assert pacer.lagging


async def test_the_busy_share_is_the_cpu_clock_over_the_loop_clock() -> None:
    """Ticks on a real loop, with the thread's CPU clock injected: one that advances as
    the loop's clock does (the thread never idle) paces; one that stands still never does."""
    loop = asyncio.get_running_loop()
    saturated = Pacer(period_s=0.001, idle_period_s=0.001, cpu=loop.time)
    idle = Pacer(period_s=0.001, idle_period_s=0.001, cpu=lambda: 0.0)
    assert saturated.watch(loop)
    try:
        deadline = time.monotonic() + 10.0
        while not saturated.lagging:
            assert time.monotonic() < deadline, f"never paced (busy {saturated.busy:.2f})"
            await saturated.beat()
        assert saturated.busy > ENTER_BUSY  # paced for its busy share (whatever the lag)
    finally:
        saturated.unwatch()
    assert idle.watch(loop)
    try:
        for _ in range(20):
            await idle.beat()
        assert idle.busy == 0.0
    finally:
        idle.unwatch()


async def test_without_a_watch_a_beat_is_already_there() -> None:
    assert Pacer().beat().done()


async def test_a_beat_ends_every_wait_and_a_cancelled_wait_ends_only_itself() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(period_s=0.001)
    pacer.watch(loop)
    try:
        first, second = pacer.beat(), pacer.beat()
        first.cancel()  # this read's client went away
        await asyncio.wait_for(second, 5.0)
        assert second.result() is None
        # a beat comes again and again
        await asyncio.wait_for(pacer.beat(), 5.0)
    finally:
        pacer.unwatch()


async def test_unwatch_lets_waiting_reads_go_and_resets_the_state() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(period_s=3600.0)  # no beat during the test
    pacer.watch(loop)
    pacer.observe(1.0)
    pacer.lagging = True
    waiting = pacer.beat()
    pacer.unwatch()
    assert waiting.done()
    assert not pacer.lagging and pacer.lag_s == 0.0
    assert pacer.beat().done()


async def test_watches_are_counted_and_a_second_loop_is_not_paced() -> None:
    loop = asyncio.get_running_loop()
    pacer = Pacer(period_s=3600.0)
    pacer.watch(loop)
    pacer.watch(loop)
    pacer.unwatch()
    assert not pacer.beat().done()  # still watched by the second
    pacer.unwatch()
    assert pacer.beat().done()
    pacer.unwatch()  # one too many: nothing to undo
    assert pacer.watch(loop)
    try:
        pacer.lagging = True  # as if this loop lagged: a read on another one goes on
        assert await asyncio.to_thread(asyncio.run, _on_another_loop(pacer))
    finally:
        pacer.unwatch()


async def _on_another_loop(pacer: Pacer) -> bool:
    refused = not pacer.watch(asyncio.get_running_loop())  # a second loop is not paced
    return refused and pacer.beat().done()


async def test_a_loop_whose_turns_run_long_is_seen_lagging() -> None:
    """Real lateness: callbacks that each hold the loop 4 ms, back to back."""
    loop = asyncio.get_running_loop()
    pacer = Pacer(period_s=0.001)
    pacer.watch(loop)
    stop = False

    def hog() -> None:
        end = time.perf_counter() + 0.004
        while time.perf_counter() < end:  # work, not a wait: the loop is busy
            pass
        if not stop:
            loop.call_soon(hog)

    loop.call_soon(hog)
    try:
        deadline = time.monotonic() + 10.0
        while not pacer.lagging:
            assert time.monotonic() < deadline, f"never lagging (lag {pacer.lag_s * 1e3:.2f} ms)"
            await pacer.beat()
    finally:
        stop = True
        pacer.unwatch()


def test_the_process_pacer_is_not_watched_outside_a_gateway() -> None:
    assert not PACER.lagging


async def test_a_serving_gateway_paces_and_stops_pacing_when_it_stops(
    emulators: EmulatorFactory,
) -> None:
    emulator = await emulators()
    gateway = Gateway(gateway_config([("b1", "aws:us-east-1", "v1", emulator.url)]))
    await gateway.start()
    try:
        assert not PACER.beat().done()  # watched: a read would wait for the beat
    finally:
        await gateway.stop(grace=0.5)
    assert PACER.beat().done()


async def test_a_gateway_with_pacing_off_never_paces(emulators: EmulatorFactory) -> None:
    emulator = await emulators()
    config = gateway_config([("b1", "aws:us-east-1", "v1", emulator.url)], limits={"pacing": False})
    gateway = Gateway(config)
    await gateway.start()
    try:
        assert PACER.beat().done()
    finally:
        await gateway.stop(grace=0.5)


async def test_a_loop_that_keeps_up_is_only_measured_at_the_idle_period() -> None:
    """An idle gateway's timer: ten beats apart by default, not one beat (~186 wake-ups/s)."""
    assert Pacer(0.005).beat().done()  # (unwatched)
    pacer = Pacer(period_s=0.001, idle_period_s=3600.0)
    pacer.watch(asyncio.get_running_loop())
    try:
        waiting = pacer.beat()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(waiting), 0.05)  # fifty beats' time
        assert not waiting.done()
    finally:
        pacer.unwatch()
    assert waiting.done()


async def test_a_beat_lets_its_reads_go_a_slice_a_loop_turn() -> None:
    """Not every paced read in one turn: a new request's step (its I/O comes in the poll
    between two turns) waits behind one slice, not behind every stream's chunk work."""
    loop = asyncio.get_running_loop()
    pacer = Pacer(period_s=3600.0)  # the beat comes when the test says
    pacer.watch(loop)
    try:
        beats = [pacer.beat() for _ in range(3 * RELEASE_SLICE + 1)]
        pacer._release()
        done = [sum(b.done() for b in beats)]
        while done[-1] < len(beats):
            await asyncio.sleep(0)  # one loop turn
            done.append(sum(b.done() for b in beats))
        assert done[0] == RELEASE_SLICE
        assert all(b - a <= RELEASE_SLICE for a, b in itertools.pairwise(done))
        assert len(done) == 4
        # unwatch ends every wait at once: nothing to protect any more
        rest = [pacer.beat() for _ in range(3 * RELEASE_SLICE)]
    finally:
        pacer.unwatch()
    assert all(b.done() for b in rest)
