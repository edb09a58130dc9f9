"""Executing a plan: attempts until a first token, then a stream that survives failures.

An :class:`Execution` has two phases, which is what lets the HTTP front end
hold the response headers back until a first token exists (docs/design.md §3):

* :meth:`Execution.start` tries the plan's backends in order. Any retryable
  failure before the first token moves on to the next backend, as long as the
  retry budget allows; a client error (4xx from the model) stops at once.
  When the current attempt is later than its backend's p95 time to first
  token, a *hedge* races the next backend: the first to produce a token wins
  and the other is cancelled (its connection closed). If a whole pass fails
  retryably, one more pass follows after a jittered backoff that honours
  ``Retry-After``. It returns the events up to and including the first token,
  or raises :class:`ExecutionFailed` with the status a client should see.
* :meth:`Execution.events` streams the rest. When the backend fails after the
  first token, the stream *resumes* on another backend of the same model
  version: the request is re-sent with the text already streamed as an
  assistant prefix, and the continuation is spliced in. Usage then adds up all
  attempts. If resumption is off or nothing can continue, the stream ends with
  a :class:`StreamError` event — never a silent end.

Once a finish reason has arrived the answer is complete: a failure after it
(a reset or a stall before the usage chunk) is recorded against the backend
but ends the stream cleanly, never resumes, and text or a second finish
reason after it is dropped. So every client gets exactly one answer and one
finish reason, and usage is never counted twice.

Residency and the breaker gate are re-checked at every attempt (hedges and
resumptions included), so no plan can send a request outside its constraint
or to a backend the breaker holds open. Outcomes go to an :class:`OutcomeSink`.

An optional :class:`Admission` (the tenant limits) is asked before the first
attempt and told, once, when the request ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from failover.backoff import backoff_delay
from failover.budget import RetryBudget
from failover.policy import FailoverPolicy
from failover.watchdog import Watchdog
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, StreamError, TokenDelta, Usage
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


class Admission(Protocol):
    """One request's admission: asked before its first attempt, told when it ends.

    ``admit`` is not a coroutine on purpose: admission decides from local state,
    so nothing on the request path waits on it (docs/design.md §3 step 1)."""

    def admit(self) -> None:
        """Raise :class:`ExecutionFailed` (a 429 with ``retry_after``) to refuse."""
        ...

    def release(self, usage: Usage | None) -> None:
        """The admitted request ended (called once): give back what it held;
        ``usage`` is what it cost across all attempts."""
        ...


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
class _Opened:
    attempt: Attempt
    stream: AsyncIterator[Event]
    head: list[Event]


@dataclass(slots=True)
class Budgets:
    """Shared across requests: retries ≈ 20% of requests, hedges ≈ 5%."""

    retries: RetryBudget = field(default_factory=RetryBudget)
    hedges: RetryBudget = field(default_factory=lambda: RetryBudget(ratio=0.05, min_per_s=1.0))


@dataclass(slots=True)
class Execution:
    request: GenerationRequest
    plan: Plan
    providers: Mapping[str, Provider]
    policy: FailoverPolicy
    sink: OutcomeSink
    budgets: Budgets
    clock: Callable[[], float] = time.monotonic
    rng: random.Random = field(default_factory=random.Random)
    admission: Admission | None = None
    attempts: list[Attempt] = field(default_factory=list)
    resumptions: int = 0
    _current: _Opened | None = None
    _deadline: float = 0.0
    _failed: set[str] = field(default_factory=set)
    _texts: list[str] = field(default_factory=list)
    _finished: bool = False  # a finish reason went to the client: the answer is complete
    _admitted: bool = False  # admission.admit returned: release is owed

    @property
    def serving(self) -> Attempt | None:
        return self._current.attempt if self._current else None

    @property
    def text(self) -> str:
        """The text sent so far, resumptions spliced in (what the client saw)."""
        return "".join(self._texts)

    @property
    def deltas(self) -> int:
        """How many text deltas were sent so far."""
        return len(self._texts)

    @property
    def usage(self) -> Usage | None:
        """Tokens across every attempt that streamed text.

        An attempt cut mid-stream never got to report usage: its completion
        tokens are the ones it streamed, and its prompt is the original prompt
        (the first report minus the prefix that report's attempt was given)
        plus the prefix it was itself given.

        When no attempt reported usage (the stream was cut before its usage
        chunk), the completion is the tokens streamed and the prompt an
        estimate from its length: what is known, rather than nothing charged.
        """
        streamed = [a for a in self.attempts if a.first_token is not None]
        reported = [a for a in streamed if a.usage is not None]
        if not reported:
            if not streamed:
                return None
            return Usage(_prompt_estimate(self.request), sum(a.tokens for a in streamed))
        if len(streamed) == 1:
            return reported[0].usage
        base = reported[0].usage.prompt_tokens - reported[0].prefix_tokens  # type: ignore[union-attr]
        prompt = completion = 0
        for a in streamed:
            if a.usage is not None:
                prompt += a.usage.prompt_tokens
                completion += a.usage.completion_tokens
            else:
                prompt += base + a.prefix_tokens
                completion += a.tokens
        return Usage(prompt, completion)

    # -- phase 1: until the first token ------------------------------------

    async def start(self) -> list[Event]:
        if self.admission is not None:
            self.admission.admit()
            self._admitted = True
        loop = asyncio.get_running_loop()
        self._deadline = loop.time() + self.policy.timeouts.total
        self.budgets.retries.deposit(self.clock())
        self.budgets.hedges.deposit(self.clock())
        failures: list[BackendError] = []
        for round_no in range(self.policy.rounds):
            opened = await self._pass(failures, first=round_no == 0)
            if opened is not None:
                self._current = opened
                self._texts.extend(e.text for e in opened.head if isinstance(e, TokenDelta))
                self._finished = any(isinstance(e, Finish) for e in opened.head)
                self._take_usage(opened.attempt, opened.head)
                return opened.head
            if not self._may_retry(failures, loop):
                break
            hint = min((f.retry_after for f in failures if f.retry_after), default=None)
            await asyncio.sleep(
                backoff_delay(
                    round_no + 1,
                    hint,
                    rng=self.rng,
                    max_retry_after=self.policy.max_retry_after_s,
                )
            )
            self._failed.clear()
        raise self._exhausted(failures)

    def _may_retry(self, failures: list[BackendError], loop: asyncio.AbstractEventLoop) -> bool:
        if not failures or loop.time() >= self._deadline:
            return False
        hints = [f.retry_after for f in failures if f.retry_after is not None]
        # When the backends ask for longer than a client should wait, answer now.
        return not (hints and min(hints) > self.policy.max_retry_after_s)

    async def _pass(self, failures: list[BackendError], *, first: bool) -> _Opened | None:
        """One pass over the plan; hedges race the next candidate when one is slow."""
        queue = [c for c in self.plan.candidates if c.backend.name not in self._failed]
        pending: dict[asyncio.Task[_Opened], Candidate] = {}
        hedged = False
        started_any = not first
        try:
            while queue or pending:
                if not pending:
                    if started_any and not self.budgets.retries.withdraw(self.clock()):
                        self.sink.count("budget_exhausted")
                        return None
                    admitted = self._next_admissible(queue)
                    if admitted is None:
                        return None
                    cand, permit = admitted
                    kind = "retry" if started_any else "primary"
                    started_any = True
                    delay = self._hedge_delay(cand, queue) if not hedged else None
                    if delay is None:
                        # Nothing to race: no task, no wait set (the common, fast path).
                        try:
                            return await self._open(cand, permit, self.request, kind)
                        except BackendError as exc:
                            self._note_failure(cand, exc, failures)
                            continue
                    opening = self._open(cand, permit, self.request, kind)
                    pending[asyncio.ensure_future(opening)] = cand
                else:
                    delay = None
                done, _ = await asyncio.wait(
                    pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED
                )
                if not done:
                    hedged = True
                    if self.budgets.hedges.withdraw(self.clock()):
                        admitted = self._next_admissible(queue)
                        if admitted is not None:
                            cand, permit = admitted
                            self.sink.count("hedged")
                            opening = self._open(cand, permit, self.request, "hedge")
                            pending[asyncio.ensure_future(opening)] = cand
                    continue
                for task in done:
                    cand = pending.pop(task)
                    try:
                        return task.result()
                    except BackendError as exc:
                        self._note_failure(cand, exc, failures)
            return None
        finally:
            for task in pending:
                task.cancel()
            for task in pending:
                with contextlib.suppress(asyncio.CancelledError, BackendError):
                    # A racer can be done with a first token nobody takes (both
                    # got one in the same loop turn, or the caller is leaving):
                    # it is a loser, and must be closed like one.
                    await self._abandon(await task)

    def _hedge_delay(self, cand: Candidate, queue: list[Candidate]) -> float | None:
        if not (self.policy.hedge and queue):
            return None
        hint = self.sink.hedge_delay(cand.backend)
        return None if hint is None else max(hint, self.policy.hedge_min_delay_s)

    def _note_failure(
        self, cand: Candidate, exc: BackendError, failures: list[BackendError]
    ) -> None:
        self._failed.add(cand.backend.name)
        failures.append(exc)
        if not exc.failure.retryable:
            raise ExecutionFailed(400, "invalid_request_error", _client_message(exc)) from None

    def _next_admissible(self, queue: list[Candidate]) -> tuple[Candidate, int] | None:
        now = self.clock()
        while queue:
            cand = queue.pop(0)
            if not self.request.residency.admits(cand.backend.region.tags):
                continue  # defence in depth: routing already filtered these
            permit = self.sink.admit(cand.backend, now)
            if permit is not None:
                return cand, permit
        return None

    async def _open(
        self,
        cand: Candidate,
        permit: int,
        request: GenerationRequest,
        kind: str,
        prefix_tokens: int = 0,
    ) -> _Opened:
        """Start an attempt and read it up to its first token; closes it on any failure."""
        backend = cand.backend
        attempt = Attempt(backend, self.clock(), kind, prefix_tokens=prefix_tokens, permit=permit)
        self.attempts.append(attempt)
        loop = asyncio.get_running_loop()
        head: list[Event] = []
        stream: AsyncIterator[Event] | None = None
        try:
            stream = self.providers[backend.name].stream(request)
            with Watchdog(
                first_token=self.policy.timeouts.first_token,
                idle=self.policy.timeouts.idle,
                total_deadline=self._deadline,
                loop=loop,
            ):
                async for event in stream:
                    head.append(event)
                    if (isinstance(event, TokenDelta) and event.text) or isinstance(event, Finish):
                        attempt.first_token = self.clock()
                        attempt.tokens = 1 if isinstance(event, TokenDelta) else 0
                        return _Opened(attempt, stream, head)
            raise BackendError(FailureClass.STREAM_BROKEN, "stream ended before the first token")
        # Report first, then close: closing awaits, and a second cancellation
        # there must not skip the report (the admission would leak).
        except BackendError as exc:
            self._finish(attempt, exc)
            await _close(stream)
            raise
        except Exception as exc:
            fault = _adapter_fault(backend, exc)
            self._finish(attempt, fault)
            await _close(stream)
            raise fault from None
        except BaseException:
            attempt.cancelled = True
            self._finish(attempt, None)
            await _close(stream)
            raise

    # -- phase 2: the rest of the stream -----------------------------------

    async def events(self) -> AsyncGenerator[Event, None]:
        """The events after :meth:`start`'s; the last one is a StreamError on failure."""
        assert self._current is not None, "start() must succeed first"
        loop = asyncio.get_running_loop()
        while True:
            current = self._current
            strip = self.resumptions > 0
            attempt = current.attempt
            watchdog = Watchdog(
                first_token=0.0,
                idle=self.policy.timeouts.idle,
                total_deadline=self._deadline,
                loop=loop,
            )
            watchdog.first_token()
            failure: BackendError | None = None
            # When text last arrived, less the time spent writing other events to
            # the client: content-free chunks keep the watchdog fed, but a stream of
            # nothing else is idle all the same.
            texted = loop.time()
            try:
                with watchdog:
                    async for event in current.stream:
                        if isinstance(event, TokenDelta):
                            if self._finished:
                                continue  # text after the finish reason is not the answer
                            if strip:
                                if not event.text:
                                    continue
                                event.raw = None
                            if event.text:
                                # A content-free chunk is no token: a resumption's
                                # max_tokens is computed from these counts.
                                self._texts.append(event.text)
                                attempt.tokens += 1
                            elif (
                                not event.progress
                                and loop.time() - texted > self.policy.timeouts.idle
                            ):
                                raise BackendError(
                                    FailureClass.TIMEOUT, "no text within the idle timeout"
                                )
                        elif isinstance(event, Usage):
                            if attempt.usage is not None:
                                continue  # one usage per attempt
                            attempt.usage = event
                            if strip:
                                continue
                        elif isinstance(event, Finish):
                            if self._finished:
                                continue
                            self._finished = True
                            if strip:
                                event.raw = None
                        else:
                            continue  # adapters never yield StreamError: only this loop does
                        watchdog.pause()
                        before = loop.time()
                        yield event
                        watchdog.resume()
                        if type(event) is TokenDelta and (event.text or event.progress):
                            texted = loop.time()
                        else:
                            texted += loop.time() - before
            except BackendError as exc:
                failure = exc
            except Exception as exc:
                failure = _adapter_fault(attempt.backend, exc)
            except BaseException:  # the client went away (cancelled, generator closed)
                await self._abandon(current)
                raise
            self._finish(attempt, failure)
            await _close(current.stream)
            if failure is None or self._finished:
                break  # after a finish reason a failure costs the backend, not the answer
            resumed = await self._resume(failure)
            if resumed is None:
                yield StreamError(self._stream_failed(failure), "stream_failed")
                return
            try:
                for event in resumed:
                    yield event
            except BaseException:  # closed at the continuation's first events
                await self.aclose()
                raise
        total = self.usage
        reported = any(a.usage is not None for a in self.attempts if a.first_token is not None)
        if (self.resumptions or not reported) and total is not None and self.request.include_usage:
            yield total

    def _stream_failed(self, failure: BackendError) -> str:
        """What the client is told of a stream that broke and was not continued: the
        failure class and the request id, in the gateway's words (the backend's own
        message, an exception's text, stays in the log)."""
        why = f"; not resumed: {self.request.unresumable}" if self.request.unresumable else ""
        log.info(
            "request %s: stream failed on %s: %s",
            self.request.request_id,
            self._current.attempt.backend.name if self._current else "?",
            failure.message,
        )
        return (
            f"the backend failed mid-stream ({failure.failure.value}){why} "
            f"(request id {self.request.request_id})"
        )

    async def _resume(self, failure: BackendError) -> list[Event] | None:
        """Continue on another backend of the same version; the new head, or None.
        A request whose stream cannot be continued exactly (``unresumable``) is not."""
        if not (self.policy.resume and failure.failure.retryable) or self.request.unresumable:
            return None
        if self.resumptions >= self.policy.max_resumptions:
            return None
        assert self._current is not None
        self._failed.add(self._current.attempt.backend.name)
        produced = "".join(self._texts)
        request = self.request.resumed(produced)
        limit = self.request.sampling.max_tokens
        if limit is not None:
            left = limit - sum(a.tokens for a in self.attempts)
            if left <= 0:
                self.resumptions += 1
                self._finished = True
                return [Finish("length")]
            request = replace(request, sampling=replace(request.sampling, max_tokens=left))
        queue = [c for c in self.plan.candidates if c.backend.name not in self._failed]
        produced_tokens = sum(a.tokens for a in self.attempts)
        while queue:
            admitted = self._next_admissible(queue)
            if admitted is None:
                break
            cand, permit = admitted
            try:
                opened = await self._open(cand, permit, request, "resume", produced_tokens)
            except BackendError as exc:
                self._failed.add(cand.backend.name)
                if not exc.failure.retryable:
                    break
                continue
            self.resumptions += 1
            self.sink.count("resumed")
            self._current = opened
            head: list[Event] = []
            for event in opened.head:
                if isinstance(event, Usage):
                    opened.attempt.usage = event
                    continue
                if isinstance(event, TokenDelta):
                    if not event.text:
                        continue
                    self._texts.append(event.text)
                if isinstance(event, Finish):
                    self._finished = True
                if isinstance(event, TokenDelta | Finish):
                    event.raw = None  # the client's stream keeps one id: re-serialise
                head.append(event)
            return head
        return None

    async def aclose(self) -> None:
        """End the serving attempt if :meth:`events` did not run it to its end: the
        caller left between :meth:`start` and the stream, or stopped reading.
        Idempotent; front ends call it when a request ends, however it ends.
        Then the admission, if any, is released."""
        try:
            if self._current is not None:
                await self._abandon(self._current)
        finally:
            if self._admitted and self.admission is not None:
                self._admitted = False
                self.admission.release(self.usage)

    # -- bookkeeping --------------------------------------------------------

    async def _abandon(self, opened: _Opened) -> None:
        """Report an opened attempt cancelled (unless it already ended) and close it."""
        if opened.attempt.ended is None:
            opened.attempt.cancelled = True
            self._finish(opened.attempt, None)
        await _close(opened.stream)

    @staticmethod
    def _take_usage(attempt: Attempt, events: list[Event]) -> None:
        for event in events:
            if isinstance(event, Usage):
                attempt.usage = event

    def _finish(self, attempt: Attempt, failure: BackendError | None) -> None:
        if attempt.ended is not None:
            return
        attempt.ended = self.clock()
        attempt.failure = failure
        self.sink.attempt_finished(attempt)

    def _exhausted(self, failures: list[BackendError]) -> ExecutionFailed:
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


def _adapter_fault(backend: BackendSpec, exc: Exception) -> BackendError:
    """An adapter that raised something other than BackendError met input it did not
    expect from its backend: a broken stream of that backend (failover, resume,
    breaker), never a crashed request. Logged with its traceback, for the adapter's fix."""
    log.warning("backend %s: adapter raised on its stream", backend.name, exc_info=exc)
    return BackendError(FailureClass.STREAM_BROKEN, f"unreadable stream ({type(exc).__name__})")


def _prompt_estimate(request: GenerationRequest) -> int:
    """About four characters per token: the usual rule of thumb for BPE vocabularies."""
    chars = len(request.prompt) + sum(len(m.content) + 4 for m in request.messages)
    return max(1, -(-chars // 4))


def _client_message(exc: BackendError) -> str:
    return exc.message.split(": ", 1)[1] if ": " in exc.message else exc.message


async def _close(stream: AsyncIterator[Event] | None) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()
