"""The stream after the first token: one answer, spliced across resumptions.

When the backend fails after the first token, the stream *resumes* on another
backend of the same model version: the request is re-sent with the text
already streamed as an assistant prefix, and the continuation is spliced in.
Usage then adds up all attempts. If resumption is off or nothing can continue,
the stream ends with a :class:`StreamError` event — never a silent end.

Once a finish reason has arrived the answer is complete: a failure after it
(a reset or a stall before the usage chunk) is recorded against the backend
but ends the stream cleanly, never resumes, and text or a second finish
reason after it is dropped. So every client gets exactly one answer and one
finish reason, and usage is never counted twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass, field, replace

from failover.attempt import Attempts, Opened, adapter_fault, close_opened
from failover.usage import any_reported, take_usage, total_usage
from failover.watchdog import Watchdog
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, StreamError, TokenDelta, Usage
from routing.plan import Plan

log = logging.getLogger("meridian.failover")


@dataclass(slots=True)
class Transcript:
    """What the client has been sent: the text deltas, whether a finish reason went
    out (the answer is complete), and the attempt now serving."""

    current: Opened | None = None
    texts: list[str] = field(default_factory=list)
    finished: bool = False
    resumptions: int = 0

    def opened(self, opened: Opened) -> None:
        """The first attempt to reach a first token serves; its head goes to the client."""
        self.current = opened
        self.texts.extend(e.text for e in opened.head if isinstance(e, TokenDelta))
        self.finished = any(isinstance(e, Finish) for e in opened.head)
        take_usage(opened.attempt, opened.head)


async def stream(
    attempts: Attempts,
    plan: Plan,
    transcript: Transcript,
    close: Callable[[], Awaitable[None]],
) -> AsyncGenerator[Event, None]:
    """The events after the head; the last one is a StreamError on failure.
    ``close`` ends the execution when the caller leaves during a continuation's head."""
    assert transcript.current is not None, "start() must succeed first"
    policy, texts, clock = attempts.policy, transcript.texts, attempts.clock
    idle = policy.timeouts.idle
    loop = asyncio.get_running_loop()
    while True:
        current = transcript.current
        strip = transcript.resumptions > 0
        attempt = current.attempt
        watchdog = Watchdog(
            first_token=0.0,
            idle=idle,
            total_deadline=attempts.deadline,
            loop=loop,
            clock=clock,
        )
        watchdog.first_token()
        failure: BackendError | None = None
        # When text last arrived, less the time spent writing other events to
        # the client: content-free chunks keep the watchdog fed, but a stream of
        # nothing else is idle all the same.
        texted = clock()
        try:
            with watchdog:
                async for event in current.stream:
                    # The usual event first, and its whole path: a text delta.
                    if type(event) is TokenDelta and (text := event.text):
                        if transcript.finished:
                            continue  # text after the finish reason is not the answer
                        if strip:
                            event.raw = None
                        # A content-free chunk is no token: a resumption's
                        # max_tokens is computed from these counts.
                        texts.append(text)
                        attempt.tokens += 1
                        # The watchdog's pause and resume, inline; the clock read
                        # after the write feeds the watchdog and the idle check.
                        watchdog.paused = True
                        yield event
                        watchdog.last = texted = clock()
                        watchdog.paused = False
                        if watchdog.rearm:  # it fired while the client was written to
                            watchdog.resume(texted)
                        continue
                    if isinstance(event, TokenDelta):
                        if transcript.finished:
                            continue  # text after the finish reason is not the answer
                        if strip:
                            if not event.text:
                                continue
                            event.raw = None
                        if event.text:  # a subclass's: the same as above
                            texts.append(event.text)
                            attempt.tokens += 1
                        elif not event.progress and clock() - texted > idle:
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
                        if transcript.finished:
                            continue
                        transcript.finished = True
                        if strip:
                            event.raw = None
                    else:
                        continue  # adapters never yield StreamError: only this loop does
                    # Other events also read the clock before the write: their
                    # write's time is not the stream's idle time.
                    fed = type(event) is TokenDelta and (event.text != "" or event.progress)
                    before = 0.0 if fed else clock()
                    watchdog.paused = True
                    yield event
                    watchdog.last = now = clock()
                    watchdog.paused = False
                    if watchdog.rearm:  # it fired while the client was written to
                        watchdog.resume(now)
                    if fed:
                        texted = now
                    else:
                        texted += now - before
        except BackendError as exc:
            failure = exc
        except Exception as exc:
            failure = adapter_fault(attempt.backend, exc)
        except BaseException:  # the client went away (cancelled, generator closed)
            await attempts.abandon(current)
            raise
        attempts.finish(attempt, failure)
        await close_opened(current)
        if failure is None or transcript.finished:
            break  # after a finish reason a failure costs the backend, not the answer
        resumed = await _resume(attempts, plan, transcript, failure)
        if resumed is None:
            yield StreamError(_stream_failed(attempts, transcript, failure), "stream_failed")
            return
        try:
            for event in resumed:
                yield event
        except BaseException:  # closed at the continuation's first events
            await close()
            raise
    request = attempts.request
    total = total_usage(request, attempts.started)
    reported = any_reported(attempts.started)
    if (transcript.resumptions or not reported) and total is not None and request.include_usage:
        yield total


def _stream_failed(attempts: Attempts, transcript: Transcript, failure: BackendError) -> str:
    """What the client is told of a stream that broke and was not continued: the
    failure class and the request id, in the gateway's words (the backend's own
    message, an exception's text, stays in the log)."""
    request = attempts.request
    why = f"; not resumed: {request.unresumable}" if request.unresumable else ""
    log.info(
        "request %s: stream failed on %s: %s",
        request.request_id,
        transcript.current.attempt.backend.name if transcript.current else "?",
        failure.message,
    )
    return (
        f"the backend failed mid-stream ({failure.failure.value}){why} "
        f"(request id {request.request_id})"
    )


async def _resume(
    attempts: Attempts, plan: Plan, transcript: Transcript, failure: BackendError
) -> list[Event] | None:
    """Continue on another backend of the same version; the new head, or None.
    A request whose stream cannot be continued exactly (``unresumable``) is not."""
    policy, original = attempts.policy, attempts.request
    if not (policy.resume and failure.failure.retryable) or original.unresumable:
        return None
    if transcript.resumptions >= policy.max_resumptions:
        return None
    assert transcript.current is not None
    attempts.failed.add(transcript.current.attempt.backend.name)
    produced = "".join(transcript.texts)
    produced_tokens = sum(a.tokens for a in attempts.started)
    request = original.resumed(produced)
    limit = original.sampling.max_tokens
    if limit is not None:
        left = limit - produced_tokens
        if left <= 0:
            transcript.resumptions += 1
            transcript.finished = True
            return [Finish("length")]
        request = replace(request, sampling=replace(request.sampling, max_tokens=left))
    queue = attempts.remaining(plan)
    while queue:
        admitted = attempts.next_admissible(queue)
        if admitted is None:
            break
        cand, permit = admitted
        try:
            opened = await attempts.open(cand, permit, request, "resume", produced_tokens)
        except BackendError as exc:
            attempts.failed.add(cand.backend.name)
            if not exc.failure.retryable:
                break
            continue
        transcript.resumptions += 1
        attempts.sink.count("resumed")
        transcript.current = opened
        head: list[Event] = []
        for event in opened.head:
            if isinstance(event, Usage):
                opened.attempt.usage = event
                continue
            if isinstance(event, TokenDelta):
                if not event.text:
                    continue
                transcript.texts.append(event.text)
            if isinstance(event, Finish):
                transcript.finished = True
            if isinstance(event, TokenDelta | Finish):
                event.raw = None  # the client's stream keeps one id: re-serialise
            head.append(event)
        return head
    return None
