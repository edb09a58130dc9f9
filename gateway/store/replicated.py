"""Reads near, writes far: a Redis primary for writes and a nearby replica for reads.

A fleet spread over regions has one writable Redis (``store.url``; in AWS
the primary cluster of an ElastiCache Global Datastore) and, in each other
region, a read-only copy (``store.read_url``: a secondary cluster, or any
Redis ``replicaof`` the primary). :class:`ReplicatedStore` sends

* to the **replica**: the follower's loads, revision checks and its
  subscription (Redis replicas pass the primary's ``PUBLISH`` on to their
  own subscribers, so change notices and peers' health holds arrive from
  the local copy), and the health probe's PING;
* to the **primary**: every write — commits, health holds, canary and
  shadow counters, the canary controller's lease, tenant-limit leases
  (``script``) — and the reads that must be current: the audit log and the
  canary counters the controller analyses.

**Read your writes.** The replica trails the primary by its replication lag.
After a commit of its own at revision r, a replica that still reads a
revision below r from its copy loads from the primary instead (and checks
the primary's revision), so the CLI's answer, and this replica's routing,
show the change at once. Other replicas see it when their copy does.

**Promotion.** When the primary is lost (``docs/deploy.md`` §7: fail the
Global Datastore over to a secondary, or ``REPLICAOF NO ONE`` on a replica),
:meth:`promote` points writes at the new primary without a restart
(``POST /admin/v1/store/primary``, ``gateway.admin.store``). A replica
whose own read endpoint was promoted finds out by itself: when a write to the
primary fails, it tries a harmless write on its copy (a replica refuses it,
``READONLY``; a promoted one takes it), at most once a second, and sends
writes there from then on. Until then writes fail (503, fail-static) and
reads keep coming from the local copy.
If the read endpoint itself is gone, reads fall back to the primary.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, TypeVar

from gateway.store.base import (
    COUNTS_TTL_S,
    AuditEntry,
    Commit,
    Doc,
    HealthHold,
    Loaded,
    StoreUnavailable,
    Subscription,
)
from gateway.store.lease import Arg, ScriptCall
from gateway.store.quota import Quota, Verdict
from gateway.store.redis_store import RedisStore

log = logging.getLogger("meridian.store")

T = TypeVar("T")
_DISCOVER_EVERY_S = 1.0  # how often a failing primary makes us test the copy for promotion


class ReplicatedStore:
    kind = "redis"

    def __init__(self, url: str, read_url: str, *, prefix: str = "meridian") -> None:
        self.prefix = prefix
        self.primary = RedisStore(url, prefix=prefix)
        self.replica = RedisStore(read_url, prefix=prefix)
        self._written = 0  # the newest revision this replica committed (read your writes)
        self._scripts: dict[str, tuple[RedisStore, ScriptCall]] = {}
        self._holder = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._next_check = 0.0  # monotonic: when the copy may next be tested for promotion
        self.where = self._where()

    def _where(self) -> str:
        return f"{self.primary.where} (reads from {self.replica.where})"

    async def open(self) -> None:
        """Either one answering is enough: reads, or writes, fail alone until the other does."""
        failed: list[StoreUnavailable] = []
        for store in (self.replica, self.primary):
            try:
                await store.open()
            except StoreUnavailable as exc:
                failed.append(exc)
        if len(failed) == 2:
            raise failed[0]

    async def close(self) -> None:
        await self.replica.close()
        await self.primary.close()

    async def ping(self, timeout_s: float) -> None:
        await self.replica.ping(timeout_s)

    async def promote(self, url: str) -> str:
        """Send writes to ``url`` from now on (it must answer); returns it without its password."""
        new = RedisStore(url, prefix=self.prefix)
        try:
            await new.open()
        except StoreUnavailable:
            await new.close()
            raise
        old, self.primary = self.primary, new
        self._written = 0  # revisions now follow the new primary
        self._scripts.clear()
        self.where = self._where()
        await old.close()
        log.warning("store: writes now go to %s (was %s)", new.where, old.where)
        return new.where

    async def read_from(self, url: str) -> str:
        """Read from ``url`` from now on (it must answer); the follower's next resync
        subscribes there."""
        new = RedisStore(url, prefix=self.prefix)
        try:
            await new.open()
        except StoreUnavailable:
            await new.close()
            raise
        old, self.replica = self.replica, new
        self.where = self._where()
        await old.close()
        log.warning("store: reads now come from %s (was %s)", new.where, old.where)
        return new.where

    # -- reads near ---------------------------------------------------------------

    async def subscribe(self) -> Subscription:
        try:
            return await self.replica.subscribe()
        except StoreUnavailable:
            return await self.primary.subscribe()

    async def load(self) -> Loaded:
        try:
            near = await self.replica.load()
        except StoreUnavailable:
            return await self.primary.load()
        if near.revision >= self._written:
            return near
        far = await self.primary.load()  # this replica's own write has not arrived here yet
        return far if far.revision >= near.revision else near

    async def revision(self) -> int:
        try:
            near = await self.replica.revision()
        except StoreUnavailable:
            return await self.primary.revision()
        if near >= self._written:
            return near
        return max(near, await self.primary.revision())

    # -- writes far (and the reads that must be current) -----------------------------

    async def _on_primary(self, call: Callable[[RedisStore], Awaitable[T]]) -> T:
        """``call`` on the primary; when that fails and the read endpoint has been
        promoted meanwhile (it takes a write), writes move there and ``call`` is
        tried once more: a failover to this region's copy needs no admin call."""
        primary = self.primary
        try:
            return await call(primary)
        except StoreUnavailable:
            if not await self._discover(primary):
                raise
        return await call(self.primary)

    async def _discover(self, failed: RedisStore) -> bool:
        if self.primary is not failed:
            return True  # switched meanwhile: try the new one
        copy = self.replica
        now = time.monotonic()
        if copy is failed or now < self._next_check:
            return False
        self._next_check = now + _DISCOVER_EVERY_S
        try:  # a replica refuses the write (READONLY); a promoted one takes it
            await copy.lease("primary-check", self._holder, 1.0)
        except StoreUnavailable:
            return False
        self.primary = copy
        self._written = 0  # revisions now follow the new primary
        self._scripts.clear()
        self.where = self._where()
        log.warning("store: %s takes writes now (promoted); was %s", copy.where, failed.where)
        await failed.close()
        return True

    async def commit(
        self,
        changes: Mapping[str, Doc | None],
        *,
        actor: str,
        action: str,
        note: str = "",
        expect: Mapping[str, Doc | None] | None = None,
    ) -> Commit:
        # Tried again on a promoted copy: a commit that did reach the lost primary and
        # was replicated changes nothing the second time (no revision, no audit entry).
        done = await self._on_primary(
            lambda p: p.commit(changes, actor=actor, action=action, note=note, expect=expect)
        )
        self._written = max(self._written, done.revision)
        return done

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        return await self._on_primary(lambda p: p.audit(limit))

    async def publish(self, hold: HealthHold) -> None:
        await self._on_primary(lambda p: p.publish(hold))

    async def add_counts(
        self, name: str, counts: Mapping[str, int], ttl_s: float = COUNTS_TTL_S
    ) -> None:
        await self._on_primary(lambda p: p.add_counts(name, counts, ttl_s))

    async def read_counts(self, name: str) -> dict[str, int]:
        return await self._on_primary(lambda p: p.read_counts(name))

    async def sum_counts(self, names: Sequence[str]) -> dict[str, int]:
        return await self._on_primary(lambda p: p.sum_counts(names))

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        return await self._on_primary(lambda p: p.lease(name, holder, ttl_s))

    async def release_lease(self, name: str, holder: str) -> None:
        await self._on_primary(lambda p: p.release_lease(name, holder))

    async def admit(self, tenant: str, quota: Quota, stream_id: str, now: float) -> Verdict:
        return await self._on_primary(lambda p: p.admit(tenant, quota, stream_id, now))

    async def release(self, tenant: str, stream_id: str, tokens: int, now: float) -> None:
        await self._on_primary(lambda p: p.release(tenant, stream_id, tokens, now))

    def script(self, source: str) -> ScriptCall:
        """Runs on whichever server is the primary when it is called."""

        def on(primary: RedisStore) -> ScriptCall:
            cached = self._scripts.get(source)
            if cached is None or cached[0] is not primary:
                cached = (primary, primary.script(source))
                self._scripts[source] = cached
            return cached[1]

        async def run(keys: list[str], args: list[Arg]) -> Any:
            return await self._on_primary(lambda p: on(p)(keys, args))

        return run
