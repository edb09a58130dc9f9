"""One request's attempts: the record of each, where they report, and starting one.

An attempt is opened up to its first token (or finish reason) under a
:class:`~failover.watchdog.Watchdog`; a failure before that closes it and
raises. Residency and the sink's gate (breaker, ejection) are checked for every
attempt, whatever its kind, so no plan can send a request outside its
constraint or to a backend the breaker holds open. Every attempt is reported
to the :class:`OutcomeSink` exactly once, however it ends.

Every stream an attempt opens is closed by it (:func:`close_opened`, or on a
failure before the first token), which is what lets a discovered backend's
in-flight count (:class:`~regions.discovery.TrackedProvider`) be taken here
as a lease, released at that close, rather than by one more generator that
every event would pass through.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from failover.policy import FailoverPolicy
from failover.watchdog import Watchdog
from regions.discovery.tracked import TrackedProvider
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage
from regions.inventory import BackendSpec
from regions.provider import Provider
from regions.request import GenerationRequest
from routing.plan import Candidate, Plan

log = logging.getLogger("meridian.failover")


@dataclass(slots=True)
class Attempt:
    backend: BackendSpec
    started: float
    kind: str = "primary"  # primary | retry | hedge | resume
    first_token: float | None = None
    ended: float | None = None
    failure: BackendError | None = None
    cancelled: bool = False
    tokens: int = 0
    prefix_tokens: int = 0  # tokens already streamed when this attempt started
    usage: Usage | None = None  # as the backend reported it, if it did
    permit: int = 0  # the admission token the OutcomeSink gave (a breaker epoch)

    @property
    def outcome(self) -> str:
        if self.cancelled:
            return "cancelled"
        return "ok" if self.failure is None else self.failure.failure.value


class OutcomeSink(Protocol):
    """Where attempts report: breakers, estimators, metrics."""

    def admit(self, backend: BackendSpec, now: float) -> int | None:
        """May an attempt start on this backend now (breaker, ejection)? None = no;
        otherwise a token the attempt carries back in ``Attempt.permit``."""
        ...

    def attempt_finished(self, attempt: Attempt) -> None: ...

    def hedge_delay(self, backend: BackendSpec) -> float | None:
        """Seconds after which to hedge an attempt on ``backend``; None = don't."""
        ...

    def count(self, event: str) -> None:
        """Counters: hedged, resumed, budget_exhausted."""
        ...


@dataclass(slots=True)
class Opened:
    """An attempt that produced its first token: the events so far and the rest."""

    attempt: Attempt
    stream: AsyncIterator[Event]
    head: list[Event]
    release: Callable[[], None] | None = None  # the provider's lease: owed once closed


@dataclass(slots=True)
class Attempts:
    """The attempts of one request, in the order they started.

    ``failed`` names the backends not to try again in the current pass (or
    resumption); ``deadline`` is the request's total deadline on ``clock``, the
    one clock of every timestamp, deadline and idle check of the request.
    """

    request: GenerationRequest
    providers: Mapping[str, Provider]
    policy: FailoverPolicy
    sink: OutcomeSink
    clock: Callable[[], float]
    started: list[Attempt] = field(default_factory=list)
    failed: set[str] = field(default_factory=set)
    deadline: float = 0.0

    def remaining(self, plan: Plan) -> list[Candidate]:
        """The plan's candidates not failed yet, in order."""
        return [c for c in plan.candidates if c.backend.name not in self.failed]

    def expired(self) -> bool:
        """The request's total deadline has passed: no attempt may start any more."""
        return self.clock() >= self.deadline

    def next_admissible(self, queue: list[Candidate]) -> tuple[Candidate, int] | None:
        """Pop candidates until one may start now; it and its permit, or None (also
        once the total deadline has passed: an attempt started then is cut at once,
        a timeout charged to a backend that did nothing wrong)."""
        now = self.clock()
        if now >= self.deadline:
            return None
        while queue:
            cand = queue.pop(0)
            if not self.request.residency.admits(cand.backend.region.tags):
                continue  # defence in depth: routing already filtered these
            permit = self.sink.admit(cand.backend, now)
            if permit is not None:
                return cand, permit
        return None

    async def open(
        self,
        cand: Candidate,
        permit: int,
        request: GenerationRequest,
        kind: str,
        prefix_tokens: int = 0,
    ) -> Opened:
        """Start an attempt and read it up to its first token; closes it on any failure."""
        backend = cand.backend
        attempt = Attempt(backend, self.clock(), kind, prefix_tokens=prefix_tokens, permit=permit)
        self.started.append(attempt)
        loop = asyncio.get_running_loop()
        head: list[Event] = []
        stream: AsyncIterator[Event] | None = None
        release: Callable[[], None] | None = None
        try:
            provider = self.providers[backend.name]
            if isinstance(provider, TrackedProvider):
                stream, release = provider.lease(request)
            else:
                stream = provider.stream(request)
            with Watchdog(
                first_token=self.policy.timeouts.first_token,
                idle=self.policy.timeouts.idle,
                total_deadline=self.deadline,
                loop=loop,
                clock=self.clock,
            ):
                async for event in stream:
                    head.append(event)
                    if (isinstance(event, TokenDelta) and event.text) or isinstance(event, Finish):
                        attempt.first_token = self.clock()
                        attempt.tokens = 1 if isinstance(event, TokenDelta) else 0
                        return Opened(attempt, stream, head, release)
            raise BackendError(FailureClass.STREAM_BROKEN, "stream ended before the first token")
        # Report first, then close: closing awaits, and a second cancellation
        # there must not skip the report (the admission would leak).
        except BackendError as exc:
            self.finish(attempt, exc)
            await _close(stream, release)
            raise
        except Exception as exc:
            fault = adapter_fault(backend, exc)
            self.finish(attempt, fault)
            await _close(stream, release)
            raise fault from None
        except BaseException:
            attempt.cancelled = True
            self.finish(attempt, None)
            await _close(stream, release)
            raise

    def finish(self, attempt: Attempt, failure: BackendError | None) -> None:
        """Report an attempt's end to the sink, once."""
        if attempt.ended is not None:
            return
        attempt.ended = self.clock()
        attempt.failure = failure
        self.sink.attempt_finished(attempt)

    async def abandon(self, opened: Opened) -> None:
        """Report an opened attempt cancelled (unless it already ended) and close it."""
        if opened.attempt.ended is None:
            opened.attempt.cancelled = True
            self.finish(opened.attempt, None)
        await close_opened(opened)


def adapter_fault(backend: BackendSpec, exc: Exception) -> BackendError:
    """An adapter that raised something other than BackendError met input it did not
    expect from its backend: a broken stream of that backend (failover, resume,
    breaker), never a crashed request. Logged with its traceback, for the adapter's fix."""
    log.warning("backend %s: adapter raised on its stream", backend.name, exc_info=exc)
    return BackendError(FailureClass.STREAM_BROKEN, f"unreadable stream ({type(exc).__name__})")


async def close_stream(stream: AsyncIterator[Event] | None) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


async def close_opened(opened: Opened) -> None:
    """Close an opened attempt's stream, then release its lease, once (a second
    close, as :meth:`Attempts.abandon` after the stream's end, releases nothing)."""
    release, opened.release = opened.release, None
    await _close(opened.stream, release)


async def _close(stream: AsyncIterator[Event] | None, release: Callable[[], None] | None) -> None:
    try:
        await close_stream(stream)
    finally:  # even when the close raised or was cancelled: else retire waits it out
        if release is not None:
            release()
