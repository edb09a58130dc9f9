"""The canary controller: applies the analysis to every canary in progress.

Every replica runs one; only the holder of the store's lease
(``canary-controller``: ``SET NX PX`` + renewal in Redis, a row with an
expiry in SQLite) acts, so one controller runs at a time and another replica
takes over within a lease TTL when the holder dies. Each round:

1. take or renew the lease (not leader → try again in TTL/3);
2. for each PROGRESSING canary whose ``due`` time has passed, read the step
   window's counters (summed across replicas), run
   :func:`gateway.canary.analysis.analyse`, and apply the verdict
   (``Canary.decide``) — an advance of a plan with ``require_shadow`` becomes
   a hold while the shadow gate (``gateway.shadow.gate``) is closed;
3. write the new canary document and, when the weight moved, the model's
   split — in one commit, *expecting* the canary document it read, so a
   controller that lost its lease, or an operator's abort in between, makes
   the write fail instead of undoing the abort;
4. sleep until the next ``due`` (or TTL/3), or until woken by a state change.

The clock is injected (wall-clock seconds, shared by the replicas).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

from gateway.canary.analysis import analyse
from gateway.canary.codec import to_doc
from gateway.canary.plan import Canary, Decision, Phase
from gateway.canary.window import sample, skew
from gateway.shadow.gate import shadow_gate
from gateway.store import Commit, Doc, Store, StoreConflict, StoreUnavailable
from gateway.store.state import ControlState, canary_key, split_key

log = logging.getLogger("meridian.canary")

LEASE = "canary-controller"
ACTOR = "canary-controller"

Write = Callable[..., Awaitable[Commit]]


class CanaryController:
    def __init__(
        self,
        store: Store,
        state: Callable[[], ControlState],
        write: Write,
        replica: str,
        *,
        lease_ttl_s: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._state = state
        self._write = write
        self._replica = replica
        self._ttl = lease_ttl_s
        self._clock = clock
        self._wake = asyncio.Event()
        self._backoff_until = 0.0  # after a conflict: no retry before this
        self.leader = False

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        try:
            while True:
                try:
                    self.leader = await self._store.lease(LEASE, self._replica, self._ttl)
                    if self.leader:
                        await self.tick()
                except StoreUnavailable:
                    self.leader = False
                except Exception:  # a bug or bad data must not stop every canary for good
                    log.exception("canary controller round failed")
                    self.leader = False
                await self._sleep()
        finally:
            if self.leader:
                with contextlib.suppress(StoreUnavailable):
                    await self._store.release_lease(LEASE, self._replica)

    async def _sleep(self) -> None:
        wait = self._ttl / 3
        if self.leader:
            now = self._clock()
            dues = [max(c.due, self._backoff_until) - now for c in self._running().values()]
            wait = min([wait, *dues])
        self._wake.clear()
        # asyncio.wait, not asyncio.timeout: on Python 3.11 a stop() that lands
        # as the timeout expires is turned into a TimeoutError and lost.
        woken = asyncio.ensure_future(self._wake.wait())
        try:
            await asyncio.wait((woken,), timeout=max(0.005, wait))
        finally:
            woken.cancel()

    def _running(self) -> Mapping[str, Canary]:
        canaries = self._state().canaries
        return {m: c for m, c in canaries.items() if c.phase is Phase.PROGRESSING}

    async def tick(self) -> None:
        now = self._clock()
        if now < self._backoff_until:
            return
        for model, canary in self._running().items():
            if canary.due <= now:
                try:
                    await self.step(model, canary, now)
                except StoreConflict:
                    # our view is stale: wait for the follower to catch up rather
                    # than retry every few milliseconds against the store
                    log.info("canary %s changed while it was analysed; next round", model)
                    self._backoff_until = self._clock() + self._ttl / 3

    async def step(self, model: str, canary: Canary, now: float) -> Canary:
        """Analyse one canary's current window and write the outcome."""
        plan = canary.plan
        counts = await self._store.read_counts(canary.window)
        verdict = analyse(
            sample(counts, plan.stable),
            sample(counts, plan.candidate),
            plan.thresholds,
            (plan.stable, plan.candidate),
        )
        decision, reason = verdict.decision, verdict.reason
        warning = skew(counts)
        if decision is Decision.HOLD and warning is not None:
            reason = f"{reason} ({warning})"
        if plan.require_shadow and decision is Decision.ADVANCE:
            closed = await shadow_gate(
                self._store, (await self._store.load()).entries, model, plan.candidate
            )
            if closed is not None:
                decision, reason = Decision.HOLD, f"shadow gate: {closed}"
        moved = canary.decide(decision, reason, now, ACTOR)
        changes: dict[str, Doc | None] = {canary_key(model): to_doc(moved)}
        if moved.weight != canary.weight:
            changes[split_key(model)] = dict(moved.split())
        await self._write(
            changes,
            actor=ACTOR,
            action=f"canary.{decision.value}",
            note=reason,
            expect={canary_key(model): to_doc(canary)},
        )
        log.info("canary %s: %s", model, moved.last)
        return moved
