"""Each replica's share of a canary's metrics: count locally, publish the sums.

A request tap (``Runtime.taps``) sees every request once when it ends. For a
model with a canary in progress, each attempt on the stable or candidate
version adds to the step window's counters (``gateway.canary.window``) in
memory; a background task adds the sums to the store every ``flush_s`` (one
HINCRBY per counter, from every replica, so the controller reads the fleet's
totals). An attempt fails when the backend did (connect, timeout, 5xx,
broken stream), not when the client erred or the backend was merely busy
(429). A request with no attempt that still ended in a 5xx (every backend
of the version refused by breakers) counts as one failure.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from failover.executor import Execution
from gateway.canary.plan import Canary, Phase
from gateway.canary.window import affinity_field, fields
from gateway.control.counts import PendingCounts
from gateway.store import Store
from regions.errors import FailureClass

log = logging.getLogger("meridian.canary")

_NOT_THE_BACKENDS_FAULT = (FailureClass.CLIENT, FailureClass.OVERLOADED)


class CanaryTap:
    def __init__(self, store: Store, flush_s: float = 1.0) -> None:
        self._counts = PendingCounts(store, "canary", flush_s=flush_s)
        self._windows: dict[str, tuple[str, frozenset[str]]] = {}

    def watch(self, canaries: Mapping[str, Canary]) -> None:
        """Called with every applied state: which models count into which window."""
        self._windows = {
            model: (c.window, frozenset((c.plan.stable, c.plan.candidate)))
            for model, c in canaries.items()
            if c.phase is Phase.PROGRESSING
        }

    def __call__(self, execution: Execution, status: int) -> None:
        watched = self._windows.get(execution.request.model)
        if watched is None:
            return
        window, versions = watched
        version = execution.plan.version
        if version not in versions:
            return
        counts = self._counts.window(window)
        counts.update([affinity_field(execution.request.affinity_key)])  # once per request
        if not execution.attempts and status >= 500:
            counts.update(fields(version, True, None))
        for attempt in execution.attempts:
            if attempt.cancelled:
                continue
            failure = attempt.failure.failure if attempt.failure else None
            failed = failure is not None and failure not in _NOT_THE_BACKENDS_FAULT
            ttft = None if attempt.first_token is None else attempt.first_token - attempt.started
            counts.update(fields(version, failed, ttft))

    async def flush(self) -> None:
        await self._counts.flush()

    async def run(self) -> None:
        await self._counts.run()
