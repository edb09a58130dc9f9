"""Tenant limits: requests/min, tokens/min and concurrent streams (docs/design.md §3 step 1).

Where: every front end gets its :class:`~failover.executor.Execution` from
``Pipeline.execution``, which returns a :class:`LimitedExecution`; its
``start`` admits the request before the first backend attempt, so HTTP and
gRPC share one admission and a refusal is an ``ExecutionFailed(429)`` that
each front end already renders (OpenAI's error shape with ``Retry-After``;
gRPC ``RESOURCE_EXHAUSTED`` with ``retry-after`` metadata). Requests a route
refuses (unknown model, residency) never count against the limits.

How: with Redis, one Lua script (``gateway.store.lua.ADMIT``) checks and
counts atomically across every replica; the embedded store counts in
process. The rules are ``gateway.store.quota``'s. When a request ends (a
request tap), its stream slot is released and its prompt + completion
tokens are added to the tenant's minute — in the background.

Fail-static: admission is the one store call in the request path, so it has
a short deadline (``store.limits_timeout_s``) and is skipped while the
control plane is degraded; either way the replica counts locally instead,
so a Redis outage loosens the limits (each replica enforces them alone)
but never refuses or delays traffic.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from failover.executor import Execution, ExecutionFailed
from gateway.config import Config
from gateway.metrics import Metrics
from gateway.store import Quota, Store, StoreUnavailable, Verdict
from gateway.store.quota import LocalQuotas
from regions.events import Event
from regions.tasks import BackgroundTasks

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
    shared: bool  # counted in the store (else locally)


class TenantLimiter:
    def __init__(
        self,
        quotas: Mapping[str, Quota],
        store: Store,
        metrics: Metrics,
        *,
        timeout_s: float = 0.05,
        degraded: Callable[[], bool] = lambda: False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._quotas = dict(quotas)
        self._store = store
        self._metrics = metrics
        self._timeout_s = timeout_s
        self._degraded = degraded
        self._clock = clock
        self._local = LocalQuotas()
        self._tasks = BackgroundTasks()
        # Stream slots whose release Redis never got (it was away): replayed
        # at the next answer from it, not left to hold the slot for a lease.
        self._unreleased: collections.deque[tuple[str, str]] = collections.deque(maxlen=10_000)

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
        timeout = config.store.limits_timeout_s
        return cls(quotas, store, metrics, timeout_s=timeout, degraded=degraded)

    async def admit(self, tenant: str) -> Ticket | None:
        """A ticket, None for an unlimited tenant; raises ExecutionFailed(429)."""
        quota = self._quotas.get(tenant)
        if quota is None:
            return None
        stream_id = uuid.uuid4().hex
        now = self._clock()
        verdict: Verdict | None = None
        shared = self._store.kind != "embedded" and not self._degraded()
        if shared:
            try:
                if self._unreleased:  # first, the slots Redis still counts by mistake
                    await self._replay(limit=64)
                    if self._unreleased:
                        self._tasks.spawn(self._replay())
                async with asyncio.timeout(self._timeout_s):
                    verdict = await self._store.admit(tenant, quota, stream_id, now)
            except (StoreUnavailable, TimeoutError):
                shared = False
                self._forget(tenant, stream_id)
            except BaseException:
                self._forget(tenant, stream_id)  # the caller left mid-admission
                raise
        if verdict is None:
            store_local = self._store.kind == "embedded"
            verdict = (
                await self._store.admit(tenant, quota, stream_id, now)
                if store_local
                else self._local.admit(tenant, quota, stream_id, now)
            )
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

    def finished(self, execution: Execution, status: int) -> None:
        """The request tap: give the stream slot back and count the tokens, off the request path."""
        ticket = getattr(execution, "ticket", None)
        if not isinstance(ticket, Ticket):
            return
        usage = execution.usage
        tokens = 0 if usage is None else usage.prompt_tokens + usage.completion_tokens
        now = self._clock()
        if ticket.shared or self._store.kind == "embedded":
            self._tasks.spawn(self._release(ticket, tokens, now))
        else:
            self._local.release(ticket.tenant, ticket.stream_id, tokens, now)

    def _forget(self, tenant: str, stream_id: str) -> None:
        """Give back a slot an interrupted admission may have taken: the script
        may have run in Redis although its answer never arrived, and a slot
        left behind would count against the tenant for a whole lease."""
        self._tasks.spawn(self._release(Ticket(tenant, stream_id, True), 0, self._clock()))

    async def _release(self, ticket: Ticket, tokens: int, now: float) -> None:
        try:
            await self._store.release(ticket.tenant, ticket.stream_id, tokens, now)
        except StoreUnavailable as exc:
            log.debug("tenant limits: release not recorded, kept for later: %s", exc)
            self._unreleased.append((ticket.tenant, ticket.stream_id))

    async def _replay(self, limit: int = 10_000) -> None:
        """Give back the slots released while Redis was away (their tokens are
        lost: the minute they belonged to has mostly passed anyway)."""
        for _ in range(limit):
            if not self._unreleased:
                return
            tenant, stream_id = self._unreleased.popleft()
            try:
                async with asyncio.timeout(self._timeout_s):
                    await self._store.release(tenant, stream_id, 0, self._clock())
            except (StoreUnavailable, TimeoutError):
                self._unreleased.appendleft((tenant, stream_id))
                return

    async def close(self) -> None:
        await self._tasks.wait()


@dataclass(slots=True)
class LimitedExecution(Execution):
    """An execution that first admits its request under the tenant's limits."""

    limiter: TenantLimiter | None = None
    ticket: Ticket | None = None

    async def start(self) -> list[Event]:
        if self.limiter is not None:
            self.ticket = await self.limiter.admit(self.request.tenant)
        return await Execution.start(self)
