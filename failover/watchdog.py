"""Deadlines for a streaming attempt, enforced by one lazily re-armed timer.

Per-chunk ``asyncio.wait_for`` would create a task per token; rescheduling an
``asyncio.timeout`` per chunk pushes a heap entry per token. Instead the hot
path only stores a timestamp (:meth:`resume`, after each event is handed on),
and a single timer wakes at the earliest possible deadline, checks, and either
re-arms for the next one or cancels the consuming task — the same mechanism
``asyncio.timeout`` uses, so the expiry surfaces as
:class:`regions.errors.BackendError` (``TIMEOUT``) at the ``with`` block, with
the reason.

Deadlines: first token (from start until :meth:`first_token`), idle gap
(since the last :meth:`resume` after the first token, time paused excluded),
and an absolute ``total`` deadline. All are read on the injected ``clock``
(default the loop's); the timer is armed with the delay left on that clock
(``call_later``), so any clock works, and on virtual time (looptime, the
loop's clock) nothing waits for real.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType

from regions.errors import BackendError, FailureClass


class Watchdog:
    """``paused``, ``last`` and ``rearm`` are what :meth:`pause` and :meth:`resume`
    set; a consumer's per-event path (:func:`failover.splice.stream`) may set the
    first two itself, two calls fewer per event, and must then call :meth:`resume`
    when ``rearm`` is set."""

    __slots__ = (
        "_clock",
        "_expired",
        "_first_token_at",
        "_handle",
        "_idle",
        "_loop",
        "_task",
        "_total_at",
        "_waiting_first",
        "last",
        "paused",
        "rearm",
    )

    def __init__(
        self,
        *,
        first_token: float,
        idle: float,
        total_deadline: float,
        loop: asyncio.AbstractEventLoop,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._loop = loop
        self._clock = clock = loop.time if clock is None else clock
        now = clock()
        self._first_token_at = now + first_token
        self._idle = idle
        self._total_at = total_deadline
        self.last = now
        self._waiting_first = True
        self.paused = False
        self.rearm = False  # the timer fired while paused: arm it again on resume
        self._expired: str | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[object] | None = None

    def first_token(self) -> None:
        self._waiting_first = False
        self.last = self._clock()

    def pause(self) -> None:
        """The consumer is busy elsewhere (writing to a slow client): not the upstream's gap."""
        self.paused = True

    def resume(self, now: float | None = None) -> None:
        """The consumer is back: the idle gap runs from now (``now``: the caller's
        reading of the same clock, saving a read per event)."""
        self.paused = False
        self.last = self._clock() if now is None else now
        if self.rearm:
            self.rearm = False
            self._arm()

    def _next_deadline(self) -> tuple[float, str]:
        if self._waiting_first:
            soon = (self._first_token_at, "no first token within the time-to-first-token timeout")
        else:
            soon = (self.last + self._idle, "no data within the idle timeout")
        return min(soon, (self._total_at, "total request timeout"))

    def _fire(self) -> None:
        deadline, reason = self._next_deadline()
        now = self._clock()
        if self.paused:
            # Never cancel while the consumer is suspended outside the guarded
            # block: the CancelledError would surface in the wrong place. The
            # resume re-arms, so a total deadline passed meanwhile cuts at once.
            self._handle = None
            self.rearm = True
        elif now >= deadline:
            self._expired = reason
            self._handle = None
            if self._task is not None:
                self._task.cancel()
        else:
            self._handle = self._loop.call_later(deadline - now, self._fire)

    def _arm(self) -> None:
        delay = self._next_deadline()[0] - self._clock()
        self._handle = self._loop.call_later(max(0.0, delay), self._fire)

    def __enter__(self) -> Watchdog:
        self._task = asyncio.current_task()
        self._arm()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        if self._expired is not None and exc_type is asyncio.CancelledError:
            assert self._task is not None
            if self._task.uncancel() == 0:
                raise BackendError(FailureClass.TIMEOUT, self._expired) from None
