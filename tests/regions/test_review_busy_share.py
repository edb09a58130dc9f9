"""Review of the pacer's busy share (72d5103) and the SSE end of body (7d5184c).

The busy share is the loop thread's CPU clock over the loop clock between two
ticks: measured from the watch (not from the process start), fresh after a
re-watch or after a watched loop was closed without its unwatch, and on the
loop's own thread (another thread's CPU is not the loop's load).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections.abc import Sequence

from hypothesis import given
from hypothesis import strategies as st

from regions.events import Finish, TokenDelta
from regions.openai_chunks import StreamParser
from regions.pacing import ENTER_BUSY, ENTER_LAG_S, LEAVE_BUSY, LEAVE_LAG_S, Pacer
from regions.sse import MAX_EVENT_BYTES
from tests.hostile_backend import chunk, sse

DEADLINE_S = 10.0


async def _ticks(pacer: Pacer, n: int) -> None:
    for _ in range(n):
        await pacer.beat()


async def _idle_for_three_ticks(pacer: Pacer, loop: asyncio.AbstractEventLoop) -> None:
    """Watched for three ticks: no share measured, nothing paced."""
    assert pacer.watch(loop)
    try:
        await _ticks(pacer, 3)
        assert pacer.busy == 0.0
        assert not pacer.lagging
    finally:
        pacer.unwatch()


async def test_the_first_tick_measures_from_the_watch_not_from_the_process_start() -> None:
    """A CPU clock that already reads 1000 s at the watch and then stands still: the
    first share is 0, not 1000 s over 50 ms."""
    loop = asyncio.get_running_loop()
    pacer = Pacer(period_s=0.001, idle_period_s=0.001, cpu=lambda: 1000.0)
    await _idle_for_three_ticks(pacer, loop)


async def test_a_rewatch_starts_from_nothing() -> None:
    """Saturated, unwatched, watched again with the thread now idle: the old share is
    gone (no pacing carried over) and the first new sample is over the new window."""
    loop = asyncio.get_running_loop()
    clock = {"saturated": True, "cpu": 0.0}

    def cpu() -> float:
        if clock["saturated"]:
            clock["cpu"] = loop.time()
        return clock["cpu"]

    pacer = Pacer(period_s=0.001, idle_period_s=0.001, cpu=cpu)
    assert pacer.watch(loop)
    deadline = time.monotonic() + DEADLINE_S
    while not pacer.lagging:
        assert time.monotonic() < deadline, f"never paced (busy {pacer.busy:.2f})"
        await pacer.beat()
    pacer.unwatch()
    assert (pacer.busy, pacer.lag_s, pacer.lagging) == (0.0, 0.0, False)
    clock["saturated"] = False
    clock["cpu"] += 1.0  # CPU spent while unwatched: a stale baseline would count it
    await _idle_for_three_ticks(pacer, loop)


def test_a_loop_closed_while_saturated_leaves_no_pacing_to_the_next() -> None:
    """The watched loop closed without its unwatch while paced: the next loop's watch
    takes over with nothing of the old figures."""
    pacer = Pacer(period_s=0.001, idle_period_s=0.001, cpu=time.monotonic)

    async def saturate() -> None:
        assert pacer.watch(asyncio.get_running_loop())
        deadline = time.monotonic() + DEADLINE_S
        while not pacer.lagging:
            assert time.monotonic() < deadline
            await pacer.beat()

    asyncio.run(saturate())  # no unwatch
    assert pacer.lagging  # stale until someone watches again

    async def idle() -> None:
        assert pacer.watch(asyncio.get_running_loop())
        try:
            assert (pacer.busy, pacer.lagging) == (0.0, False)
            pacer._cpu = lambda: 0.0  # the new loop's thread idles
            await _ticks(pacer, 3)
            assert not pacer.lagging
        finally:
            pacer.unwatch()

    asyncio.run(idle())


def _burn_off_loop(stop: threading.Event) -> None:
    data = b"x" * (8 << 20)
    while not stop.is_set():
        hashlib.sha256(data).digest()  # releases the GIL: CPU of this thread only


async def test_the_share_is_the_loop_threads_cpu_not_the_processs() -> None:
    """Real time.thread_time: another thread on the CPU all the time does not make an
    idle loop busy; the loop's own thread spinning does, with short turns (no lag)."""
    loop = asyncio.get_running_loop()
    pacer = Pacer(period_s=0.005, idle_period_s=0.005)
    stop = threading.Event()
    burner = threading.Thread(target=_burn_off_loop, args=(stop,), daemon=True)
    burner.start()
    assert pacer.watch(loop)
    try:
        await _ticks(pacer, 60)  # sixty ticks with the loop idle
        assert pacer.busy < LEAVE_BUSY, pacer.busy
    finally:
        stop.set()
        burner.join()
        pacer.unwatch()

    spinning = True

    def spin() -> None:  # turns of ~0.3 ms, back to back
        end = time.perf_counter() + 0.0003
        while time.perf_counter() < end:
            pass
        if spinning:
            loop.call_soon(spin)

    assert pacer.watch(loop)
    try:
        loop.call_soon(spin)
        deadline = time.monotonic() + DEADLINE_S
        while pacer.busy <= ENTER_BUSY:
            assert time.monotonic() < deadline, f"never saturated (busy {pacer.busy:.2f})"
            await pacer.beat()  # the share changes at a tick
        assert pacer.lagging  # turns of 0.3 ms: paced for the share, whatever the lag
    finally:
        spinning = False
        pacer.unwatch()


samples = st.lists(st.tuples(st.floats(0.0, 0.05), st.floats(0.0, 5.0)), min_size=1, max_size=60)


@given(samples)
def test_observe_keeps_the_hysteresis(seq: list[tuple[float, float]]) -> None:
    """Whatever the samples: the share stays within [0, 1]; over either entry threshold
    paces; under both exit thresholds does not; in between, the state is kept."""
    pacer = Pacer()
    for late, busy in seq:
        before = pacer.lagging
        pacer.observe(late, busy)
        assert 0.0 <= pacer.busy <= 1.0
        if pacer.lag_s > ENTER_LAG_S or pacer.busy > ENTER_BUSY:
            assert pacer.lagging
        elif pacer.lag_s <= LEAVE_LAG_S and pacer.busy <= LEAVE_BUSY:
            assert not pacer.lagging
        else:
            assert pacer.lagging == before


def _finished_body(line_end: bytes) -> bytes:
    return (sse(chunk(" a", role=True)) + sse(chunk(" b", "stop"))).replace(b"\n", line_end)


def _kinds(events: Sequence[object]) -> list[tuple[type, object]]:
    return [(type(e), getattr(e, "text", None)) for e in events]


FINISHED = [(TokenDelta, " a"), (TokenDelta, " b"), (Finish, None)]


@given(cut=st.integers(0, 400), line_end=st.sampled_from([b"\n", b"\r\n", b"\r"]))
def test_a_done_right_before_the_end_of_body_ends_the_answer(cut: int, line_end: bytes) -> None:
    """[DONE] as the body's last event, any line ends, any read boundary: the answer and
    no failure; a [DONE] cut after one line end (no blank line) is no event (SSE)."""
    for tail, done in ((b"data: [DONE]\n\n", True), (b"data: [DONE]\n", False)):
        body = _finished_body(line_end) + tail.replace(b"\n", line_end)
        at = min(cut, len(body))
        parser = StreamParser(True, 1, MAX_EVENT_BYTES)
        events = parser.feed(body[:at])
        if not parser.done:
            events += parser.feed(body[at:])
        if not parser.done:
            parser.end()
        assert parser.failure is None
        assert _kinds(events) == FINISHED
        assert parser.done is done
