"""Tenant limits: requests/min, tokens/min and concurrent streams (docs/design.md §3 step 1).

Where: every front end gets its :class:`~failover.executor.Execution` from
``Pipeline.execution``, which gives it a :class:`TenantAdmission` (the
executor's ``Admission`` protocol); the execution admits the request before
its first backend attempt and releases it when it closes, so HTTP and gRPC
share one admission and a refusal is an ``ExecutionFailed(429)`` that
each front end already renders (OpenAI's error shape with ``Retry-After``;
gRPC ``RESOURCE_EXHAUSTED`` with ``retry-after`` metadata). Requests a route
refuses (unknown model, residency) never count against the limits.

How: admission is decided from local state only; nothing a request does
waits on the store, however far away it is. With Redis, each replica holds a
lease on a share of each limited tenant's budget (``gateway.store.lease``:
the design, its sources — Doorman, CockroachDB's distributed token bucket —
and the bound on over-admission, ``L + N × C`` per minute): request and
token credits already counted in the store, and stream slots set aside for
it. A background loop renews every lease every ``store.leases.renew_s`` and
at once when one runs low. When a request ends (the admission's release), its stream
slot comes back to the lease and its tokens are charged to it; the next
renewal settles both with the store. The embedded store has no peers: each
process counts alone (``gateway.store.quota.LocalQuotas``).

Fail-static: a replica whose renewals fail keeps admitting on its last lease
until ``store.leases.ttl_s`` passes, then on a safe share of each limit
(``⌈L / store.leases.expected_replicas⌉`` on its own count). A Redis outage
neither refuses nor delays traffic, and never lifts the limits altogether;
what was admitted meanwhile is counted in the store when it answers again.
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
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from failover.executor import ExecutionFailed
from gateway.config.model import Config
from gateway.observe.metrics import Metrics
from gateway.store import Quota, Store, StoreUnavailable, Verdict
from gateway.store.lease import LeaseSettings, RedisLeases, Scripted, TenantShare
from gateway.store.quota import LocalQuotas
from regions.events import Usage
from regions.tasks import BackgroundTasks, stop_tasks

log = logging.getLogger("meridian.limits")

_WHAT = {
    "requests_per_min": "requests per minute",
    "tokens_per_min": "tokens per minute",
    "concurrent_streams": "concurrent streams",
}


@dataclass(frozen=True, slots=True)
class Ticket:
    """An admitted request: what to give back when it ends."""

    tenant: str
    stream_id: str
    shared: bool  # admitted under a lease (else on the safe share, or counted locally)


def settings_of(config: Config) -> LeaseSettings:
    """``store.leases`` as the limiter's settings."""
    c = config.store.leases
    return LeaseSettings(c.renew_s, c.ttl_s, c.share, c.expected_replicas, c.timeout_s)


class TenantLimiter:
    def __init__(
        self,
        quotas: Mapping[str, Quota],
        store: Store,
        metrics: Metrics,
        *,
        settings: LeaseSettings | None = None,
        degraded: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
        replica: str | None = None,
    ) -> None:
        self._quotas = dict(quotas)
        self._store = store
        self._metrics = metrics
        self.settings = settings or LeaseSettings()
        self._degraded = degraded
        self._clock = clock
        self._local = LocalQuotas()
        self._tasks = BackgroundTasks()
        self.replica = replica or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._leases = (
            RedisLeases(store, self.replica)
            if store.kind != "embedded" and isinstance(store, Scripted)
            else None
        )
        self._shares = {
            name: TenantShare(name, quota, self.settings) for name, quota in self._quotas.items()
        }
        self._runner: asyncio.Task[None] | None = None
        self._down = False  # the last renewal failed (logged once per outage)
        self._start()

    @classmethod
    def from_config(
        cls, config: Config, store: Store, metrics: Metrics, degraded: Callable[[], bool]
    ) -> TenantLimiter | None:
        """None when no tenant has limits (then nothing is counted at all)."""
        quotas = {
            t.name: Quota(
                t.limits.requests_per_min, t.limits.tokens_per_min, t.limits.concurrent_streams
            )
            for t in config.tenants
            if t.limits is not None
        }
        quotas = {name: q for name, q in quotas.items() if not q.unlimited}
        if not quotas:
            return None
        return cls(quotas, store, metrics, settings=settings_of(config), degraded=degraded)

    def _start(self) -> None:
        """The renewal loop, from the first moment there is an event loop to run it."""
        if self._leases is None or self._runner is not None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop yet: the first admit starts it
            self._runner = asyncio.get_running_loop().create_task(self._renew_forever())

    # -- the request path: local state only ------------------------------------------

    def admit(self, tenant: str) -> Ticket | None:
        """A ticket, None for an unlimited tenant; raises ExecutionFailed(429)."""
        quota = self._quotas.get(tenant)
        if quota is None:
            return None
        stream_id = uuid.uuid4().hex
        now = self._clock()
        shared = False
        if self._leases is None:
            verdict: Verdict = self._local.admit(tenant, quota, stream_id, now)
        else:
            self._start()
            share = self._shares[tenant]
            shared = share.leased(now)
            verdict = share.admit(stream_id, now)
            if share.low(now):
                self._renew_soon(share)
        if not verdict.allowed:
            self._metrics.rate_limited.labels(tenant, verdict.reason).inc()
            wait = max(1, round(verdict.retry_after))
            raise ExecutionFailed(
                429,
                "rate_limit_exceeded",
                f"Rate limit reached for {_WHAT.get(verdict.reason, verdict.reason)} "
                f"(limit {verdict.limit}) for tenant '{tenant}'. Please try again in {wait}s.",
                verdict.retry_after,
            )
        return Ticket(tenant, stream_id, shared)

    def admission(self, tenant: str) -> TenantAdmission:
        """One request's admission under ``tenant``'s limits (for ``Execution``)."""
        return TenantAdmission(self, tenant)

    def release(self, ticket: Ticket, usage: Usage | None) -> None:
        """The stream slot and the tokens go back to the lease (or the local count)."""
        tokens = 0 if usage is None else usage.prompt_tokens + usage.completion_tokens
        now = self._clock()
        share = self._shares.get(ticket.tenant)
        if self._leases is None or share is None:
            self._local.release(ticket.tenant, ticket.stream_id, tokens, now)
            return
        share.finished(ticket.stream_id, tokens, now)
        if share.low(now):
            self._renew_soon(share)

    def status(self) -> dict[str, Any]:
        """Per tenant: lease or safe share, credits, slots (for ``meridian status`` and the lab)."""
        now = self._clock()
        return {name: share.status(now) for name, share in self._shares.items()}

    # -- beside the path: renewals ---------------------------------------------------

    def _renew_soon(self, share: TenantShare) -> None:
        if not share.asking and not self._degraded():
            share.asking = True  # claimed now: one renewal in flight per tenant
            self._tasks.spawn(self._renew(share))

    async def _renew_forever(self) -> None:
        while True:
            now = self._clock()
            due = [s for s in self._shares.values() if not s.asking and s.due(now)]
            await asyncio.gather(*(self._renew(s) for s in due))
            # jittered, so replicas started together do not renew in step
            await asyncio.sleep(self.settings.renew_s * random.uniform(0.9, 1.1))

    async def _renew(self, share: TenantShare) -> None:
        assert self._leases is not None
        now = self._clock()
        ask = share.ask(now)
        try:
            async with asyncio.timeout(self.settings.timeout_s):
                grant = await self._leases.renew(
                    share.tenant, share.quota, ask, self.settings.ttl_s, now
                )
        except (StoreUnavailable, TimeoutError) as exc:
            share.failed(ask)
            if not self._down:
                self._down = True
                log.warning(
                    "tenant limits: lease renewal failed (last lease holds %g s, then the "
                    "safe share): %s",
                    self.settings.ttl_s,
                    exc or "no answer in time",
                )
            return
        except BaseException:
            share.failed(ask)
            raise
        if self._down:
            self._down = False
            log.info("tenant limits: leases renewed again")
        share.granted(ask, grant, self._clock())
        if share.low(self._clock()):
            self._renew_soon(share)

    async def close(self) -> None:
        """Stop renewing and give every credit and slot back (best effort, short)."""
        if self._runner is not None:
            await stop_tasks([self._runner])
            self._runner = None
        await self._tasks.stop()
        if self._leases is None:
            return
        now = self._clock()
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            async with asyncio.timeout(min(self.settings.timeout_s, 1.0)):
                await asyncio.gather(
                    *(
                        self._leases.renew(
                            s.tenant, s.quota, s.giving_back(), self.settings.ttl_s, now
                        )
                        for s in self._shares.values()
                        if s.expires or s.requests or s.tokens  # held a lease, or owes
                    )
                )


@dataclass(slots=True)
class TenantAdmission:
    """:class:`failover.executor.Admission` under a tenant's limits; holds its ticket."""

    limiter: TenantLimiter
    tenant: str
    ticket: Ticket | None = None

    def admit(self) -> None:
        self.ticket = self.limiter.admit(self.tenant)

    def release(self, usage: Usage | None) -> None:
        if self.ticket is not None:
            ticket, self.ticket = self.ticket, None
            self.limiter.release(ticket, usage)
