"""Executing a plan: attempts until a first token, then a stream that survives failures.

An :class:`Execution` has two phases, which is what lets the HTTP front end
hold the response headers back until a first token exists (docs/design.md §3):

* :meth:`Execution.start` runs the attempt loop (:mod:`failover.rounds`):
  passes over the plan's backends in order, a hedge racing a slow attempt
  (:mod:`failover.hedging`), rounds after a backoff. Any retryable failure
  before the first token moves on, as long as the retry budget allows; a
  client error (4xx from the model) stops at once. It returns the events up to
  and including the first token, or raises :class:`ExecutionFailed` with the
  status a client should see.
* :meth:`Execution.events` streams the rest (:mod:`failover.splice`), resuming
  on another backend of the same version when one fails mid-stream.

Each attempt is started and reported by :mod:`failover.attempt`; what the
request cost is :mod:`failover.usage`. An optional :class:`Admission`
(:mod:`failover.admission`, the tenant limits) is asked before the first
attempt and told, once, when the request ends.

Time is injected: ``clock`` stamps every attempt and bounds every deadline,
backoff and idle check, ``sleep`` waits out the backoff between rounds. The
defaults are the loop's: ``time.monotonic`` is asyncio's ``loop.time`` (and
uvloop's, at finer resolution), ``asyncio.sleep`` its sleep. On virtual time
(looptime) pass ``clock=loop.time``.

The names other packages use are importable from here.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from failover.admission import Admission
from failover.attempt import Attempt, Attempts, OutcomeSink
from failover.budget import Budgets
from failover.failure import ExecutionFailed
from failover.policy import FailoverPolicy
from failover.rounds import first_token
from failover.splice import Transcript, stream
from failover.usage import total_usage
from regions.events import Event, Usage
from regions.provider import Provider
from regions.request import GenerationRequest
from routing.plan import Plan

# One generator for every request's backoff jitter: ``random.Random()`` per request
# seeds itself from os.urandom (a syscall on the data plane's hot path). Reseeded
# in a forked child, as the ``random`` module's own, so workers do not draw alike.
JITTER = random.Random()
os.register_at_fork(after_in_child=JITTER.seed)

__all__ = [
    "Admission",
    "Attempt",
    "Budgets",
    "Execution",
    "ExecutionFailed",
    "OutcomeSink",
]


@dataclass(slots=True)
class Execution:
    request: GenerationRequest
    plan: Plan
    providers: Mapping[str, Provider]
    policy: FailoverPolicy
    sink: OutcomeSink
    budgets: Budgets
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    rng: random.Random = JITTER  # tests inject their own
    admission: Admission | None = None
    _attempts: Attempts = field(init=False)
    _transcript: Transcript = field(init=False, default_factory=Transcript)
    _admitted: bool = False  # admission.admit returned: release is owed

    def __post_init__(self) -> None:
        self._attempts = Attempts(self.request, self.providers, self.policy, self.sink, self.clock)

    @property
    def attempts(self) -> list[Attempt]:
        """Every attempt so far, in the order they started."""
        return self._attempts.started

    @property
    def resumptions(self) -> int:
        return self._transcript.resumptions

    @property
    def serving(self) -> Attempt | None:
        current = self._transcript.current
        return current.attempt if current else None

    @property
    def text(self) -> str:
        """The text sent so far, resumptions spliced in (what the client saw)."""
        return "".join(self._transcript.texts)

    @property
    def deltas(self) -> int:
        """How many text deltas were sent so far."""
        return len(self._transcript.texts)

    @property
    def usage(self) -> Usage | None:
        """Tokens across every attempt that streamed text (:func:`failover.usage.total_usage`)."""
        return total_usage(self.request, self._attempts.started)

    async def start(self) -> list[Event]:
        """Admit, then attempt until a first token: the events up to it."""
        if self.admission is not None:
            self.admission.admit()
            self._admitted = True
        now = self.clock()
        self._attempts.deadline = now + self.policy.timeouts.total
        self.budgets.retries.deposit(now)
        self.budgets.hedges.deposit(now)
        opened = await first_token(self._attempts, self.plan, self.budgets, self.rng, self.sleep)
        self._transcript.opened(opened)
        return opened.head

    def events(self) -> AsyncGenerator[Event, None]:
        """The events after :meth:`start`'s; the last one is a StreamError on failure."""
        return stream(self._attempts, self.plan, self._transcript, self.aclose)

    async def aclose(self) -> None:
        """End the serving attempt if :meth:`events` did not run it to its end: the
        caller left between :meth:`start` and the stream, or stopped reading.
        Idempotent; front ends call it when a request ends, however it ends.
        Then the admission, if any, is released."""
        try:
            if self._transcript.current is not None:
                await self._attempts.abandon(self._transcript.current)
        finally:
            if self._admitted and self.admission is not None:
                self._admitted = False
                self.admission.release(self.usage)
