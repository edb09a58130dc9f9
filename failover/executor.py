"""Executing a plan: attempts in order until one produces a first token.

An :class:`Execution` has two phases, which is what lets the HTTP front end
hold the response headers back until a first token exists (DESIGN.md §3):

* :meth:`Execution.start` tries the plan's backends in order. Any retryable
  failure before the first token moves on to the next backend; a client
  error (4xx from the model) stops at once. It returns the events up to and
  including the first token, or raises :class:`ExecutionFailed` with the
  status a client should see.
* :meth:`Execution.events` streams the rest. A failure after the first token
  ends the stream with a :class:`StreamError` event — never a silent end.

Residency is re-checked at every attempt, so no plan can send a request
outside its constraint. Outcomes are reported to an :class:`OutcomeSink`
(metrics now; breakers, estimators and ejection beside it later).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from failover.policy import TimeoutPolicy
from failover.watchdog import Watchdog
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, StreamError, TokenDelta, Usage
from regions.inventory import BackendSpec
from regions.provider import Provider
from regions.request import GenerationRequest
from routing.plan import Plan


@dataclass(slots=True)
class Attempt:
    backend: BackendSpec
    started: float
    first_token: float | None = None
    ended: float | None = None
    failure: BackendError | None = None


class OutcomeSink(Protocol):
    def attempt_finished(self, attempt: Attempt) -> None: ...


class ExecutionFailed(Exception):
    """No attempt produced a first token; ``status`` is what the client gets."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


@dataclass(slots=True)
class Execution:
    request: GenerationRequest
    plan: Plan
    providers: Mapping[str, Provider]
    timeouts: TimeoutPolicy
    sink: OutcomeSink
    clock: Callable[[], float] = time.monotonic
    attempts: list[Attempt] = field(default_factory=list)
    usage: Usage | None = None
    _stream: AsyncIterator[Event] | None = None
    _deadline: float = 0.0

    @property
    def serving(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts and self.attempts[-1].failure is None else None

    async def start(self) -> list[Event]:
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.timeouts.total
        for candidate in self.plan.candidates:
            backend = candidate.backend
            if not self.request.residency.admits(backend.region.tags):
                continue  # defence in depth: routing already filtered these
            attempt = Attempt(backend, self.clock())
            self.attempts.append(attempt)
            stream = self.providers[backend.name].stream(self.request)
            try:
                head = await self._until_first_token(stream, loop)
            except BackendError as exc:
                await _close(stream)
                self._finish(attempt, exc)
                if not exc.failure.retryable:
                    raise ExecutionFailed(
                        400, "invalid_request_error", _client_message(exc)
                    ) from None
                if loop.time() >= self._deadline:
                    break
                continue
            except BaseException:
                await _close(stream)
                self._finish(attempt, BackendError(FailureClass.STREAM_BROKEN, "cancelled"))
                raise
            attempt.first_token = self.clock()
            self._stream = stream
            return head
        raise self._exhausted()

    async def _until_first_token(
        self, stream: AsyncIterator[Event], loop: asyncio.AbstractEventLoop
    ) -> list[Event]:
        head: list[Event] = []
        watchdog = Watchdog(
            first_token=self.timeouts.first_token,
            idle=self.timeouts.idle,
            total_deadline=self._deadline,
            loop=loop,
        )
        with watchdog:
            async for event in stream:
                head.append(event)
                if (isinstance(event, TokenDelta) and event.text) or isinstance(event, Finish):
                    return head
        raise BackendError(FailureClass.STREAM_BROKEN, "stream ended before the first token")

    async def events(self) -> AsyncGenerator[Event, None]:
        """The events after :meth:`start`'s; the last one is a StreamError on failure."""
        stream = self._stream
        assert stream is not None, "start() must succeed first"
        attempt = self.attempts[-1]
        loop = asyncio.get_running_loop()
        watchdog = Watchdog(
            first_token=0.0, idle=self.timeouts.idle, total_deadline=self._deadline, loop=loop
        )
        watchdog.first_token()
        failure: BackendError | None = None
        try:
            with watchdog:
                async for event in stream:
                    if isinstance(event, Usage):
                        self.usage = event
                    watchdog.pause()
                    yield event
                    watchdog.resume()
        except BackendError as exc:
            failure = exc
        finally:
            await _close(stream)
            self._finish(attempt, failure)
        if failure is not None:
            yield StreamError(f"the backend failed mid-stream: {failure.message}", "stream_failed")

    def record_head(self, head: list[Event]) -> None:
        for event in head:
            if isinstance(event, Usage):
                self.usage = event

    def _finish(self, attempt: Attempt, failure: BackendError | None) -> None:
        attempt.ended = self.clock()
        attempt.failure = failure
        self.sink.attempt_finished(attempt)

    def _exhausted(self) -> ExecutionFailed:
        failures = [a.failure for a in self.attempts if a.failure is not None]
        if not failures:
            return ExecutionFailed(
                503, "no_backend_available", "no backend could be tried for this request", 1.0
            )
        hints = [f.retry_after for f in failures if f.retry_after is not None]
        kinds = sorted({f.failure.value for f in failures})
        return ExecutionFailed(
            503,
            "upstream_unavailable",
            f"all {len(self.attempts)} attempts failed ({', '.join(kinds)})",
            min(hints) if hints else 1.0,
        )


def _client_message(exc: BackendError) -> str:
    return exc.message.split(": ", 1)[1] if ": " in exc.message else exc.message


async def _close(stream: AsyncIterator[Event]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
