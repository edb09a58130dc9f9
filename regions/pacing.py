"""First tokens before later chunks, and fewer wake-ups, when the event loop falls behind.

One core serves every stream. When it is saturated, each loop turn runs the
chunk work of every stream whose upstream sent something, and a new request,
which needs several turns before its first token (its head, the upstream's
head, the first event), waits a full turn at each step: time to first token
grows with the number of open streams (+40 to +70 ms at 200 streams where
nginx adds 3 to 6). And every chunk costs a wake-up of its stream's task, a
parse and a write of its own: at a few milliseconds between tokens, that is
most of the gateway's CPU per chunk.

The pacer watches the loop with a periodic timer: how late the timer runs
(the loop's *lag*: the length of the turn it waited behind) and how much of
the time between two ticks the loop's thread spent on the CPU (its *busy*
share). The loop is behind when it lags, or when it is busy most of the time
(over 60%: more work waits, and a little more load would make it lag).
While it is behind, a stream that has already sent its first event takes its
next upstream read on the pacer's next beat instead of as soon as bytes
arrive: the bytes wait in the response's buffer, and the stream's chunk work
(wake-up, parse, splice, write) runs once per beat for all that came in
meanwhile: several events per read and one write to the client. The
busy loop gets CPU back (at 5 ms between tokens, 17% fewer instructions
per streamed request than unpaced), and the turns in between are
short ones that carry the steps of new requests. A stream's first event is
never paced, and while the loop keeps up nothing is: at light load every
chunk is forwarded when it arrives. What a client sees under load is later
chunks in small bursts, at most one beat (plus the loop's own lag) apart.

Process-wide (as the loop is): ``PACER``; the gateway starts its watch on
its loop and stops it at shutdown, an adapter asks ``PACER.lagging`` before
each read after the first event. Without a watch, ``lagging`` stays False.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

PERIOD_S = 0.020  # a beat; also the most a paced read waits beyond the loop's own lag
# Long enough to merge: a 5 ms beat woke a stream 5 ms apart about once per
# event, 15% more instructions per request than no pacing at all; 20 ms merges
# several of its events into each read, 17% fewer (``bench.instructions``,
# one stream, 5 ms between tokens, pacing forced on).
# While the loop keeps up the timer only measures: a tick every 5 ms cost an idle
# gateway ~186 wake-ups and 16-19 ms of CPU a second. A timer's lateness is the
# length of the turn it waited behind, whatever its period; with these weights a
# loop that falls behind is paced within two or three idle ticks.
IDLE_PERIOD_S = 0.05
# A paced read that merged nothing (its stream sends less often than a beat) lets
# this many reads of its stream go unpaced: at a 40 ms token gap a paced read cost
# 5-8 k instructions a chunk for nothing (the pacing review's measure).
SLOW_STREAM_READS = 8
# Paced reads a beat lets go per loop turn: 200 streams' reads released at once
# made one turn of ~12 ms that a new request's step waited behind (the pacing
# review); a slice a turn leaves the I/O of new requests a poll between slices.
RELEASE_SLICE = 32
ENTER_LAG_S = 0.002  # a beat this late: the loop is behind, pace
LEAVE_LAG_S = 0.0005  # back under this: keeping up again
# The loop's thread on the CPU this share of the time: busy enough to pace. Not
# only at saturation: at 200 streams 5 ms apart an unpaced gateway settled at
# 0.75-0.8 of its core, under the 0.9 this used to be, and so was paced in 12-38%
# of its ticks; paced in all of them it spent 15-20% less CPU per request
# (interleaved bench runs, bench/README.md "Pacing from 60% busy"). At 0.6 a new
# request's step already waits behind others' work about 1.5 times as long as the
# step itself (a single-server queue at 0.6 load), and what pacing costs a client
# is later chunks in bursts at most a beat apart.
# Paced reads lower the load by up to a sixth, so the way back is below what
# pacing brings a load of 0.6 to (~0.5): no flapping. At light load (the
# latency scenario at 10 streams: 0.13 of a core) nothing is paced.
ENTER_BUSY = 0.6
LEAVE_BUSY = 0.4
_SMOOTH = 0.25  # weight of the newest lateness (and busy share) in the running figure


class Pacer:
    """The loop's lag and busy share, measured by a timer, and the beat paced reads wait for.

    The timer runs every ``period_s`` while the loop is behind (the beat), every
    ``idle_period_s`` (ten beats by default) while it keeps up. ``cpu`` is the
    loop thread's CPU clock (injected by tests); the busy share between two
    ticks is its advance over the loop clock's.
    """

    __slots__ = (
        "_cpu",
        "_cpu_at",
        "_due",
        "_handle",
        "_idle_period",
        "_loop",
        "_period",
        "_ticked",
        "_waiting",
        "_watchers",
        "busy",
        "lag_s",
        "lagging",
    )

    def __init__(
        self,
        period_s: float = PERIOD_S,
        idle_period_s: float | None = None,
        cpu: Callable[[], float] = time.thread_time,
    ) -> None:
        self._period = period_s
        self._cpu = cpu
        self._cpu_at = 0.0  # the CPU clock at the last tick
        self._ticked = 0.0  # the loop clock at the last tick
        self._idle_period = period_s * 10 if idle_period_s is None else idle_period_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._waiting: list[asyncio.Future[None]] = []
        self._due = 0.0
        self._watchers = 0
        self.busy = 0.0
        self.lag_s = 0.0
        self.lagging = False

    def watch(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Start measuring on ``loop``; False if another loop is watched already.

        Watches are counted: each one that returned True needs its unwatch. A
        second loop in the process (a test's, an embedding's) is not paced. A
        watched loop that was closed without its unwatch (a start that failed
        after the watch, a test cut short) holds nothing any more: the watch
        moves to ``loop`` rather than leave the process unpaced for good.
        """
        if self._watchers and self._loop is not None and self._loop.is_closed():
            self._drop()
        if self._watchers and loop is not self._loop:
            return False
        self._watchers += 1
        if self._watchers == 1:
            self._loop = loop
            self._ticked, self._cpu_at = loop.time(), self._cpu()
            self._schedule(self._ticked)
        return True

    def unwatch(self) -> None:
        """Stop measuring once every watch is undone; paced reads waiting go on at once.

        From a running loop other than the watched one it does nothing: that
        watch was dropped with its closed loop, and this one is not its to undo.
        """
        if self._watchers == 0:
            return
        try:
            running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is not None and running is not self._loop:
            return
        self._watchers -= 1
        if not self._watchers:
            self._drop()

    def _drop(self) -> None:
        self._watchers = 0
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._loop is not None and self._loop.is_closed():
            self._waiting = []  # futures of a closed loop: nothing can wait on them
        else:
            waiting, self._waiting = self._waiting, []
            self._wake(waiting, 0, len(waiting))  # unwatched: every wait ends now
        self._loop = None
        self.busy = 0.0
        self.lag_s = 0.0
        self.lagging = False

    def beat(self) -> asyncio.Future[None]:
        """A future done at the next beat.

        Each read gets its own: a read cancelled (its client went away) cancels
        only its future, never another stream's wait.
        """
        loop = self._loop
        if loop is None or asyncio.get_running_loop() is not loop:  # not paced here
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        beat: asyncio.Future[None] = loop.create_future()
        self._waiting.append(beat)
        return beat

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        self._due = now + (self._period if self.lagging else self._idle_period)
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        assert self._loop is not None
        now, cpu = self._loop.time(), self._cpu()
        elapsed = now - self._ticked
        busy = (cpu - self._cpu_at) / elapsed if elapsed > 0 else self.busy
        self._ticked, self._cpu_at = now, cpu
        self.observe(max(now - self._due, 0.0), busy)
        self._release()
        self._schedule(now)

    def observe(self, late_s: float, busy: float = 0.0) -> None:
        """One tick ran ``late_s`` after it was due, the loop's thread on the CPU ``busy``
        of the time since the tick before: the smoothed figures and whether to pace."""
        self.lag_s += _SMOOTH * (late_s - self.lag_s)
        self.busy += _SMOOTH * (min(max(busy, 0.0), 1.0) - self.busy)
        if self.lagging:
            self.lagging = self.lag_s > LEAVE_LAG_S or self.busy > LEAVE_BUSY
        else:
            self.lagging = self.lag_s > ENTER_LAG_S or self.busy > ENTER_BUSY

    def _release(self) -> None:
        """The beat: the reads waiting for it go on, a slice a loop turn."""
        waiting, self._waiting = self._waiting, []
        self._wake(waiting, 0, RELEASE_SLICE)

    def _wake(self, waiting: list[asyncio.Future[None]], start: int, count: int) -> None:
        end = start + count
        for beat in waiting[start:end]:
            if not beat.done():
                beat.set_result(None)
        if end < len(waiting):  # on the loop of the futures left, whatever was watched since
            waiting[end].get_loop().call_soon(self._wake, waiting, end, count)


PACER = Pacer(PERIOD_S, IDLE_PERIOD_S)


class StreamPacing:
    """One stream's paced reads and the slow-stream rule, for every provider's reader.

    While the loop is behind, each read after the first event asks :meth:`beat`
    for the beat to wait for, and a read that waited says how many events it
    found (:meth:`found`). A paced read that found fewer than two events belongs
    to a stream slower than a beat, for which waiting only added a wake-up: its
    next ``SLOW_STREAM_READS`` reads go unpaced (no beat) before the next try.
    Plain methods, no coroutine: this runs for every read of a paced stream.
    """

    __slots__ = ("_pacer", "_unpaced")

    def __init__(self, pacer: Pacer) -> None:
        self._pacer = pacer
        self._unpaced = 0

    def beat(self) -> asyncio.Future[None] | None:
        """The beat this read waits for, or None: it goes as bytes arrive."""
        if self._unpaced:
            self._unpaced -= 1
            return None
        return self._pacer.beat()

    def found(self, events: int) -> None:
        """A read that waited for its beat found ``events`` events."""
        if events < 2:
            self._unpaced = SLOW_STREAM_READS
