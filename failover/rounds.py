"""The attempt loop: passes over the plan until a first token, with backoff between.

If a whole pass fails retryably, another follows after a jittered backoff that
honours ``Retry-After`` (:mod:`failover.backoff`), up to ``policy.rounds``
passes, while the request's total deadline allows and no backend asks for a
longer wait than a client should be held for.
"""

from __future__ import annotations

import asyncio
import random

from failover.attempt import Attempts, Opened
from failover.backoff import backoff_delay
from failover.budget import Budgets
from failover.failure import exhausted
from failover.hedging import run_pass
from regions.errors import BackendError
from routing.plan import Plan


async def first_token(
    attempts: Attempts, plan: Plan, budgets: Budgets, rng: random.Random
) -> Opened:
    """The attempt that produced a first token, or :class:`~failover.failure.ExecutionFailed`
    with the status a client should see."""
    policy = attempts.policy
    loop = asyncio.get_running_loop()
    failures: list[BackendError] = []
    for round_no in range(policy.rounds):
        opened = await run_pass(attempts, plan, budgets, failures, first=round_no == 0)
        if opened is not None:
            return opened
        if not _may_retry(attempts, failures, loop):
            break
        hint = min((f.retry_after for f in failures if f.retry_after), default=None)
        await asyncio.sleep(
            backoff_delay(
                round_no + 1,
                hint,
                rng=rng,
                max_retry_after=policy.max_retry_after_s,
            )
        )
        attempts.failed.clear()
    raise exhausted(failures, len(attempts.started))


def _may_retry(
    attempts: Attempts, failures: list[BackendError], loop: asyncio.AbstractEventLoop
) -> bool:
    if not failures or loop.time() >= attempts.deadline:
        return False
    hints = [f.retry_after for f in failures if f.retry_after is not None]
    # When the backends ask for longer than a client should wait, answer now.
    return not (hints and min(hints) > attempts.policy.max_retry_after_s)
