"""The attempt loop: passes over the plan until a first token, with backoff between.

If a whole pass fails retryably, another follows after a jittered backoff that
honours ``Retry-After`` (:mod:`failover.backoff`), up to ``policy.rounds``
passes, while the request's total deadline allows and no backend asks for a
longer wait than a client should be held for. A backoff that would end past
the deadline is not slept, nor one after the last round or after a pass that
could try nothing (the retry budget spent, every breaker open): nothing would
start after it, so the client is answered at once. No attempt starts once the
deadline has passed (:meth:`~failover.attempt.Attempts.next_admissible`).

The hint a backoff honours is the pass's own: a Retry-After of an earlier pass
was waited out already, and the latest pass says how the backends are now.
Time is the attempts' clock and the injected ``sleep``.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable

from failover.attempt import Attempts, Opened
from failover.backoff import backoff_delay, exceeds_retry_after, soonest_retry_after
from failover.budget import Budgets
from failover.failure import exhausted
from failover.hedging import run_pass
from regions.errors import BackendError
from routing.plan import Plan


async def first_token(
    attempts: Attempts,
    plan: Plan,
    budgets: Budgets,
    rng: random.Random,
    sleep: Callable[[float], Awaitable[None]],
) -> Opened:
    """The attempt that produced a first token, or :class:`~failover.failure.ExecutionFailed`
    with the status a client should see."""
    policy, clock = attempts.policy, attempts.clock
    failures: list[BackendError] = []
    hint: float | None = None
    for round_no in range(policy.rounds):
        before = len(failures)
        opened = await run_pass(attempts, plan, budgets, failures, first=round_no == 0)
        if opened is not None:
            return opened
        if len(failures) == before:
            break  # the pass could try nothing: nor could another
        hint = soonest_retry_after(f.retry_after for f in failures[before:])
        if round_no + 1 == policy.rounds:
            break  # no backoff after the last round: nothing follows it
        # When the backends ask for longer than a client should wait, answer now.
        if exceeds_retry_after(hint, max_retry_after=policy.max_retry_after_s):
            break
        delay = backoff_delay(round_no + 1, hint, rng=rng, max_retry_after=policy.max_retry_after_s)
        if clock() + delay >= attempts.deadline:
            break
        await sleep(delay)
        attempts.failed.clear()
    raise exhausted(failures, len(attempts.started), hint)
