"""Tenant limits as plain data and the sliding-window arithmetic both stores share.

Requests and tokens per minute use the *sliding window counter* (Cloudflare's
and nginx-plus's approximation of a true sliding log): counts are kept per
fixed minute, and the rate at time ``t`` is::

    estimate = previous_minute × (1 − f) + current_minute     f = elapsed share of this minute

A request is admitted when ``estimate + 1 ≤ limit``. For tokens, whose number
is only known after the request, the same rule admits while at least one
token of budget is left, and the request's prompt + completion tokens are
added when it ends. ``wait_s`` solves the rule for the first time it holds
again: that is the ``Retry-After`` a refused client gets.

Concurrent streams are leases (member → expiry) so a replica that dies while
holding some cannot leak them for longer than a lease.

:class:`LocalQuotas` is the in-process implementation (embedded mode, and a
replica's own count, which its safe share is checked against while it holds
no lease); ``gateway.store.lua`` holds the same rules for Redis, where the
``GRANT`` script hands them out as leases (``gateway.store.lease``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Quota:
    """One tenant's limits; None = unlimited."""

    requests_per_min: int | None = None
    tokens_per_min: int | None = None
    concurrent_streams: int | None = None
    lease_s: float = 900.0  # a stream slot's longest life (a crashed replica's slots expire)

    @property
    def unlimited(self) -> bool:
        return (
            self.requests_per_min is None
            and self.tokens_per_min is None
            and self.concurrent_streams is None
        )


@dataclass(frozen=True, slots=True)
class Verdict:
    allowed: bool
    reason: str = ""  # requests_per_min | tokens_per_min | concurrent_streams
    limit: int = 0
    retry_after: float = 0.0


ALLOWED = Verdict(True)


def minute(now: float) -> tuple[int, float]:
    """The minute index of ``now`` and the elapsed share of that minute."""
    index = math.floor(now / WINDOW_S)
    return index, (now - index * WINDOW_S) / WINDOW_S


def wait_s(current: float, previous: float, elapsed: float, limit: int) -> float:
    """Seconds until ``previous × (1 − f) + current + 1 ≤ limit`` holds again."""
    if current + 1 > limit:
        # Only the next minute can help; there the current count becomes "previous".
        need = 1 - (limit - 1) / current if current > 0 else 0.0
        return (1 - elapsed) * WINDOW_S + max(0.0, need) * WINDOW_S
    if previous <= 0:
        return 0.0
    need = 1 - (limit - current - 1) / previous
    return max(0.0, need - elapsed) * WINDOW_S


@dataclass(slots=True)
class _Tenant:
    requests: dict[int, int] = field(default_factory=dict)
    tokens: dict[int, int] = field(default_factory=dict)
    streams: dict[str, float] = field(default_factory=dict)  # id → lease expiry


class LocalQuotas:
    """Per-process counters with the same rules as the Redis script; time is passed in."""

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}

    def admit(self, tenant: str, quota: Quota, stream_id: str, now: float) -> Verdict:
        t = self._tenants.setdefault(tenant, _Tenant())
        index, elapsed = minute(now)
        for counts in (t.requests, t.tokens):
            for old in [m for m in counts if m < index - 1]:
                del counts[old]
        checks = (
            ("requests_per_min", quota.requests_per_min, t.requests),
            ("tokens_per_min", quota.tokens_per_min, t.tokens),
        )
        for reason, limit, counts in checks:
            if limit is None:
                continue
            cur, prev = counts.get(index, 0), counts.get(index - 1, 0)
            if prev * (1 - elapsed) + cur + 1 > limit:
                return Verdict(False, reason, limit, wait_s(cur, prev, elapsed, limit))
        if quota.concurrent_streams is not None:
            for sid in [s for s, until in t.streams.items() if until <= now]:
                del t.streams[sid]
            if len(t.streams) >= quota.concurrent_streams:
                return Verdict(False, "concurrent_streams", quota.concurrent_streams, 1.0)
            t.streams[stream_id] = now + quota.lease_s
        t.requests[index] = t.requests.get(index, 0) + 1
        return ALLOWED

    def check(self, tenant: str, quota: Quota, now: float) -> Verdict:
        """The rate rules alone, counting nothing (streams are not looked at)."""
        t = self._tenants.setdefault(tenant, _Tenant())
        index, elapsed = minute(now)
        checks = (
            ("requests_per_min", quota.requests_per_min, t.requests),
            ("tokens_per_min", quota.tokens_per_min, t.tokens),
        )
        for reason, limit, counts in checks:
            if limit is None:
                continue
            cur, prev = counts.get(index, 0), counts.get(index - 1, 0)
            if prev * (1 - elapsed) + cur + 1 > limit:
                return Verdict(False, reason, limit, wait_s(cur, prev, elapsed, limit))
        return ALLOWED

    def count(self, tenant: str, now: float) -> None:
        """One request admitted (by whatever rule): counted in its minute."""
        t = self._tenants.setdefault(tenant, _Tenant())
        index, _ = minute(now)
        for counts in (t.requests, t.tokens):
            for old in [m for m in counts if m < index - 1]:
                del counts[old]
        t.requests[index] = t.requests.get(index, 0) + 1

    def release(self, tenant: str, stream_id: str, tokens: int, now: float) -> None:
        t = self._tenants.get(tenant)
        if t is None:
            return
        t.streams.pop(stream_id, None)
        if tokens > 0:
            index, _ = minute(now)
            t.tokens[index] = t.tokens.get(index, 0) + tokens
