"""One pass over a plan, in order; a hedge races the next backend when one is slow.

When the current attempt is later than its backend's p95 time to first token
(the sink's ``hedge_delay``, at least ``hedge_min_delay_s``), a *hedge* starts
on the next admissible backend, within the hedge budget: the first to produce
a token wins and the other is cancelled (its connection closed). At most one
hedge per pass. An attempt with nothing to race runs without a task or a wait
set, which is the common path.

The hedge delay is a timer of the loop (``asyncio.wait``'s timeout), like the
watchdog's, not a sleep of its own: a task per hedged request just to wait
would cost the data plane, and under looptime the loop's timers are virtual.
The budgets read the attempts' clock.
"""

from __future__ import annotations

import asyncio
import contextlib

from failover.attempt import Attempts, Opened
from failover.budget import Budgets
from failover.failure import client_error
from regions.errors import BackendError
from routing.plan import Candidate, Plan


async def run_pass(
    attempts: Attempts,
    plan: Plan,
    budgets: Budgets,
    failures: list[BackendError],
    *,
    first: bool,
) -> Opened | None:
    """The first attempt of the pass to reach a first token, or None when all failed
    retryably (their errors appended to ``failures``); a client error raises
    :class:`~failover.failure.ExecutionFailed` (400) at once."""
    queue = attempts.remaining(plan)
    pending: dict[asyncio.Task[Opened], Candidate] = {}
    request, sink, clock = attempts.request, attempts.sink, attempts.clock
    hedged = False
    started_any = not first
    try:
        while queue or pending:
            if not pending:
                if attempts.expired():
                    return None  # before the withdrawal: no retry is made
                retry = started_any  # an extra attempt: the retry budget pays for it
                if retry and not budgets.retries.withdraw(clock()):
                    sink.count("budget_exhausted")
                    return None
                admitted = attempts.next_admissible(queue)
                if admitted is None:
                    if retry:  # nothing started: the withdrawal bought nothing
                        budgets.retries.refund(clock())
                    return None
                cand, permit = admitted
                kind = "retry" if retry else "primary"
                started_any = True
                delay = _hedge_delay(attempts, cand, queue) if not hedged else None
                if delay is None:
                    # Nothing to race: no task, no wait set (the common, fast path).
                    try:
                        return await attempts.open(cand, permit, request, kind)
                    except BackendError as exc:
                        _note_failure(attempts, cand, exc, failures)
                        continue
                opening = attempts.open(cand, permit, request, kind)
                pending[asyncio.ensure_future(opening)] = cand
            else:
                delay = None
            done, _ = await asyncio.wait(
                pending, timeout=delay, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                hedged = True
                if budgets.hedges.withdraw(clock()):
                    admitted = attempts.next_admissible(queue)
                    if admitted is None:
                        budgets.hedges.refund(clock())
                    else:
                        cand, permit = admitted
                        sink.count("hedged")
                        opening = attempts.open(cand, permit, request, "hedge")
                        pending[asyncio.ensure_future(opening)] = cand
                continue
            for task in done:
                cand = pending.pop(task)
                try:
                    return task.result()
                except BackendError as exc:
                    _note_failure(attempts, cand, exc, failures)
        return None
    finally:
        for task in pending:
            task.cancel()
        for task in pending:
            with contextlib.suppress(asyncio.CancelledError, BackendError):
                # A racer can be done with a first token nobody takes (both
                # got one in the same loop turn, or the caller is leaving):
                # it is a loser, and must be closed like one.
                await attempts.abandon(await task)


def _hedge_delay(attempts: Attempts, cand: Candidate, queue: list[Candidate]) -> float | None:
    policy = attempts.policy
    if not (policy.hedge and queue):
        return None
    hint = attempts.sink.hedge_delay(cand.backend)
    return None if hint is None else max(hint, policy.hedge_min_delay_s)


def _note_failure(
    attempts: Attempts, cand: Candidate, exc: BackendError, failures: list[BackendError]
) -> None:
    attempts.failed.add(cand.backend.name)
    failures.append(exc)
    if not exc.failure.retryable:
        raise client_error(exc) from None
