"""The control plane in one replica: the store's state, applied to the runtime.

:class:`ControlPlane` follows the store and feeds each state it applies to
the snapshot composer (``gateway.control.snapshots``), which publishes
``ControlState.overlay(config + discovered backends)`` — a whole new immutable
snapshot, so no request sees half a change, and nothing a request does waits
for it.

States (``status``)::

    starting ──first load──▶ ok ◀──────── resync (full load) ──┐
                               │                               │
                               └── store unreachable ──▶ degraded ── retry, backoff 50 ms → 2 s

* **ok**: subscribed; a notice (Redis pub/sub, or in-process) triggers a full
  load of ``(revision, documents)``; with no notice for ``store.resync_s`` a
  one-key revision check catches anything a notice missed.
* **probe**: every ``store.probe_s`` a PING must answer within
  ``store.probe_timeout_s``. One that does not marks the control plane
  degraded at once and makes the follower reconnect; a store that accepts
  connections but answers nothing (a frozen Redis) is noticed so, not only
  when a call happens to time out. The first PING answered again wakes the
  follower, whose resync (resubscribe, full load) clears the state.
* **degraded** (fail-static): the last snapshot keeps serving;
  ``meridian_control_plane_degraded`` is 1 and ``/readyz`` says
  ``"control_plane": "degraded"`` while staying 200; writes fail (the admin
  API answers 503); the loop reconnects with jittered backoff and, once back,
  resubscribes *then* reloads everything, so no change made meanwhile is
  lost.

Shared health: the runtime's health events are wrapped so that a local
breaker opening or an ejection is published as a :class:`HealthHold`
("unavailable until T", wall clock); peers hold that backend
(``BackendHealth.hold``) until T, within one pub/sub hop.

``attach`` wires the store, this class, the canary tap and controller and
the tenant limiter into a runtime (``Gateway.start`` calls it); it lives in
``gateway.app.wiring``, so this module never sees the whole runtime.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import secrets
import socket
import time
from collections.abc import Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any

from failover.breaker import BreakerState
from failover.executor import Attempt
from failover.health import BackendHealth, HealthEvents
from gateway.observe.metrics import Metrics
from gateway.store import (
    Changed,
    Commit,
    Doc,
    HealthHold,
    Loaded,
    Store,
    StoreUnavailable,
    Subscription,
)
from gateway.store import cache as state_cache
from gateway.store.state import ControlState
from regions.inventory import BackendSpec
from regions.tasks import BackgroundTasks, stop_tasks

if TYPE_CHECKING:
    from gateway.canary.controller import CanaryController
    from gateway.canary.tap import CanaryTap
    from gateway.control.limits import TenantLimiter

log = logging.getLogger("meridian.control")

_BACKOFF_MIN_S = 0.05
_BACKOFF_MAX_S = 2.0
_MAX_HOLD_S = 300.0  # a peer's hold never lasts longer, whatever its clock says


class SharedHealthEvents:
    """The runtime's health events, plus publication of breaker openings and ejections."""

    def __init__(self, inner: HealthEvents, control: ControlPlane, open_s: float) -> None:
        self._inner = inner
        self._control = control
        self._open_s = open_s

    def attempt_finished(self, attempt: Attempt) -> None:
        self._inner.attempt_finished(attempt)

    def breaker_changed(self, backend: BackendSpec, state: BreakerState) -> None:
        self._inner.breaker_changed(backend, state)
        if state is BreakerState.OPEN:
            self._control.share(backend.name, self._open_s, "breaker open")

    def ejected(self, backend: BackendSpec, until: float) -> None:
        self._inner.ejected(backend, until)
        self._control.share(backend.name, until - self._control.clock(), "ejected")

    def count(self, event: str) -> None:
        self._inner.count(event)


class ControlPlane:
    def __init__(
        self,
        store: Store,
        *,
        publish: Callable[[ControlState], object],
        health: BackendHealth,
        metrics: Metrics,
        revision: int = 1,
        replica: str | None = None,
        resync_s: float = 5.0,
        cache: str | None = None,
        probe_s: float = 1.0,
        probe_timeout_s: float = 0.5,
    ) -> None:
        self._publish_state = publish  # the snapshot composer's overlay feed
        self._health, self._metrics = health, metrics
        self.clock = health.clock  # local holds and ejections are on the health's clock
        self.store = store
        self.cache = cache  # store.snapshot_path (gateway.store.cache)
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.resync_s = resync_s
        self.probe_s = probe_s
        self.probe_timeout_s = probe_timeout_s
        # set by the probe: the store stopped answering (the follower reconnects),
        # and it answers again (the follower retries now, not after its backoff)
        self._lost = asyncio.Event()
        self._answered = asyncio.Event()
        self.state = ControlState(revision=revision)
        self._syncs_started = self._sync_applied = 0
        self.status = "starting"
        self.last_error = ""
        self.listeners: list[Callable[[ControlState], None]] = []
        self._tasks = BackgroundTasks()
        self._loop_task: asyncio.Task[None] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self.controller: CanaryController | None = None
        self.tap: CanaryTap | None = None
        self.entries: Mapping[str, Doc] = {}
        self.limiter: TenantLimiter | None = None

    @property
    def degraded(self) -> bool:
        return self.status == "degraded"

    def describe(self) -> dict[str, Any]:
        return {
            "store": self.store.kind,
            "where": self.store.where,
            "status": self.status,
            "revision": self.state.revision,
            "replica": self.replica,
            "canary_leader": bool(self.controller and self.controller.leader),
            "error": self.last_error or None,
        }

    # -- lifetime -------------------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run a long-lived worker (canary controller, counter flush) until stop()."""
        self._workers.append(asyncio.ensure_future(coro))

    async def start(self) -> None:
        """Loads the store's state if it can; a replica that cannot starts degraded
        on its cached state (``store.snapshot_path``), else on the config's
        defaults, and catches up when the store answers."""
        sub: Subscription | None = None
        try:
            await self.store.open()
            sub = await self._resync()
        except StoreUnavailable as exc:
            self._degrade(exc)
            cached = (
                None
                if self.cache is None
                else await asyncio.to_thread(state_cache.load, self.cache)
            )
            if cached is not None:
                log.warning("serving cached revision %d until the store answers", cached.revision)
                self._install(cached)
        self._loop_task = asyncio.ensure_future(self._follow_forever(sub))
        self.spawn(self._probe_forever())

    async def stop(self) -> None:
        await stop_tasks(t for t in (self._loop_task, *self._workers) if t is not None)
        if self.tap is not None and not self.degraded:
            with contextlib.suppress(StoreUnavailable):
                await self.tap.flush()
        if self.limiter is not None:
            await self.limiter.close()
        await self._tasks.wait()
        await self.store.close()

    # -- following the store --------------------------------------------------

    async def sync(self) -> ControlState:
        """Load everything and apply it (a full resync).

        Loads can overlap (a write's read-your-writes sync and the follower's);
        one that started before the last applied one is older and dropped, so
        the applied state never steps back. (Not by revision: a Redis that
        restarted empty legitimately goes back to revision 0.)"""
        self._syncs_started += 1
        ticket = self._syncs_started
        loaded = await self.store.load()
        if ticket < self._sync_applied:
            return self.state
        self._sync_applied = ticket
        changed = loaded.revision != self.state.revision or not self.entries
        self._install(loaded)
        if self.cache is not None and changed:
            try:
                await asyncio.to_thread(state_cache.save, self.cache, loaded)
            except OSError as exc:
                log.warning("state cache %s not written: %s", self.cache, exc)
        return self.state

    def _install(self, loaded: Loaded) -> None:
        self.entries = loaded.entries  # raw documents, for readers of their own keys (shadow/)
        self.apply(ControlState.parse(loaded))

    def apply(self, state: ControlState) -> None:
        self._publish_state(state)
        self.state = state
        self._metrics.control_revision.set(state.revision)
        for listener in self.listeners:
            listener(state)

    async def _resync(self) -> Subscription:
        self._lost.clear()  # a probe that fails from here on sends this attempt back
        sub = await self.store.subscribe()  # first, so the load below misses nothing
        try:
            await self.sync()
            if self._lost.is_set():
                raise StoreUnavailable(self.last_error or f"{self.store.where} stopped answering")
        except BaseException:
            await sub.close()
            raise
        if self.status != "ok":
            log.info("control plane ok: %s at revision %d", self.store.where, self.state.revision)
        self.status, self.last_error = "ok", ""
        self._metrics.control_degraded.set(0)
        return sub

    def _degrade(self, exc: StoreUnavailable) -> None:
        if self.status != "degraded":
            log.warning("control plane degraded, serving revision %d: %s", self.state.revision, exc)
        self.status, self.last_error = "degraded", str(exc)
        self._metrics.control_degraded.set(1)

    async def _follow_forever(self, sub: Subscription | None) -> None:
        delay = _BACKOFF_MIN_S
        while True:
            try:
                if sub is None:
                    sub = await self._resync()
                delay = _BACKOFF_MIN_S
                await self._follow(sub)
            except StoreUnavailable as exc:
                self._degrade(exc)
                await self._back_off(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
            except Exception as exc:  # a bug or bad data must not end following for good
                log.exception("control plane: following the store failed")
                self._degrade(StoreUnavailable(f"following the store failed: {exc}"))
                await self._back_off(delay)
                delay = min(delay * 2, _BACKOFF_MAX_S)
            finally:
                if sub is not None:
                    await sub.close()
                    sub = None

    async def _back_off(self, delay: float) -> None:
        """The jittered backoff before a reconnect; cut short by the probe's first answer."""
        self._answered.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay * random.uniform(0.5, 1.0)):
                await self._answered.wait()

    async def _probe_forever(self) -> None:
        while True:
            await asyncio.sleep(self.probe_s)
            try:
                await self.store.ping(self.probe_timeout_s)
            except StoreUnavailable as exc:
                self._degrade(exc)
                self._lost.set()
            else:
                self._answered.set()

    async def _follow(self, sub: Subscription) -> None:
        # The revision is checked every resync_s whatever arrives meanwhile: a
        # steady flow of health holds must not postpone it forever. On the loop's
        # clock, like every wait here (virtual under looptime).
        clock = asyncio.get_running_loop().time
        check_at = clock() + self.resync_s
        while True:
            # A subscription to a frozen server waits quietly: the probe's verdict
            # is read at least every probe_s (a wait, not a cancellation, which a
            # redis-py retry could swallow and read on for the rest of the wait).
            if self._lost.is_set():
                raise StoreUnavailable(self.last_error or f"{self.store.where} stopped answering")
            wait = min(self.probe_s, max(0.0, check_at - clock()))
            notice = await sub.next(wait)
            if clock() >= check_at:
                check_at = clock() + self.resync_s
                if await self.store.revision() != self.state.revision:
                    await self.sync()
            if notice is None:
                continue
            if isinstance(notice, Changed):
                if notice.revision != self.state.revision:
                    await self.sync()
            elif notice.origin != self.replica:
                self._hold(notice)

    # -- writes (admin API, canary controller) ---------------------------------

    async def write(
        self,
        changes: Mapping[str, Doc | None],
        *,
        actor: str,
        action: str,
        note: str = "",
        expect: Mapping[str, Doc | None] | None = None,
    ) -> Commit:
        """Commit to the store and apply the result here at once (read your writes).
        Raises StoreUnavailable — fail-static means writes fail, reads do not."""
        commit = await self.store.commit(
            changes, actor=actor, action=action, note=note, expect=expect
        )
        with contextlib.suppress(StoreUnavailable):
            await self.sync()
        return commit

    # -- shared health -----------------------------------------------------------

    def share(self, backend: str, for_s: float, reason: str) -> None:
        """Tell the peers (in the background; a lost message only costs them time)."""
        if self.degraded or for_s <= 0:
            return
        hold = HealthHold(backend, time.time() + for_s, self.replica, reason)
        self._tasks.spawn(self._publish(hold))

    async def _publish(self, hold: HealthHold) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.store.publish(hold)

    def _hold(self, hold: HealthHold) -> None:
        left = min(hold.until - time.time(), _MAX_HOLD_S)
        if left > 0:
            why = f"{hold.reason} on peer {hold.origin}"
            self._health.hold(hold.backend, self.clock() + left, why)
