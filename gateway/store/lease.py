"""Tenant-limit leases: each replica admits from a share of the budget it holds.

The global budget of a tenant (``gateway.store.quota.Quota``: requests/min,
tokens/min, concurrent streams) lives in the store; a replica never asks it
anything while a request waits. It holds a **lease**: request and token
*credits* already counted in the store's minute, and stream *slots* the store
has set aside for it. Admission spends them locally; in the background the
replica renews the lease every ``renew_s``, and at once when it runs low
(half its credits spent, or a refusal). Each renewal settles the last lease
(unused credits go back, use beyond it is counted) and takes the next one, in
one script (``gateway.store.lua.GRANT``).

Sources:

* Google/YouTube's Doorman (github.com/youtube/doorman, ``doc/design.md``):
  capacity is handed to clients as leases with an expiry and a refresh
  interval; a client that cannot refresh keeps its lease until it expires and
  then runs in *safe mode* on a safe capacity, by default the capacity divided
  by the number of clients. Here: ``ttl_s``, ``renew_s`` and the safe share
  ``⌈L / expected_replicas⌉``.
* CockroachDB's distributed token bucket for tenant cost control
  (``docs/RFCS/20210604_distributed_token_bucket.md``): each SQL pod takes
  tokens from the tenant's central bucket in batches and asks for more in the
  background before it runs out, reporting its consumption as it does. Here:
  credits granted in batches of at most ``C``, topped up when half are spent,
  consumption (tokens known only after a request) settled at each renewal.

Sizes. For a per-minute limit ``L`` one grant carries at most
``C = max(1, ⌈share × L⌉)`` credits: ``C`` for a replica that saw demand since
its last renewal, 1 for an idle one (so its next request is admitted at once).
A replica holds at most ``C`` credits at any time.

**Bound on over-admission** (N replicas, lease size C, renewal period R,
lease ttl V ≥ R, safe share S = ⌈L / expected_replicas⌉):

* Store reachable: credits are counted in the minute they are *granted*, and a
  minute never grants beyond ``L`` (the sliding-window rule), so what is
  admitted in any calendar minute is at most what was granted in it plus the
  credits carried in from the minute before: ``admitted ≤ L + N × C``. Within
  a minute of steady demand R only changes how often a replica asks (about
  ``demand × R / C`` renewals a period), not the bound.
* Concurrent streams: a replica admits only into slots the store holds for
  it, so ``in flight ≤ L`` while every replica reaches the store.
* k replicas cut off from the store: each spends what is left of its lease
  (≤ C, already in N × C) until its ttl V passes, then admits on its safe
  share S per minute on its own count (which includes what it admitted under
  the lease this minute), so ``admitted ≤ L + N × C + k × S`` per minute, and
  ``in flight ≤ L + k × S`` streams. Nothing refuses all traffic (S ≥ 1) and
  nothing admits without a bound. What a cut-off replica admitted is counted
  in the store at its next renewal, so the fleet pays it back.
* Tokens: a request is admitted while one token of credit is left and its
  tokens are charged when it ends, so tokens also overshoot by what the
  requests in flight use when the credits run out (as with one counter).

Under-admission is bounded the same way: idle replicas hold at most one
credit each, active ones at most C, so up to ``N × C`` of a minute's budget
can sit unused in leases (it is given back at the next renewal), and a
replica with no slot refuses a stream (``Retry-After: 1``) while another one
holds an idle spare, until that one's next renewal gives it up: a replica
keeps one spare slot while it saw streams in the last ``2 × renew_s``, and
none while another replica is refusing streams for want of one.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from gateway.store import lua
from gateway.store.quota import ALLOWED, LocalQuotas, Quota, Verdict, minute

Arg = bytes | str | int | float
ScriptCall = Callable[[list[str], list[Arg]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """The knobs (``store.leases`` in the config; docs/control-plane.md#tenant-limits)."""

    renew_s: float = 1.0  # R: background renewal period
    ttl_s: float = 5.0  # V: how long a lease holds without renewal (then the safe share)
    share: float = 0.01  # C = max(1, ⌈share × limit⌉): the most one replica holds
    expected_replicas: int = 1  # S = ⌈limit / expected_replicas⌉ once a lease has expired
    timeout_s: float = 2.0  # one renewal's deadline (off the request path)

    def chunk(self, limit: int) -> int:
        return max(1, math.ceil(self.share * limit))

    def safe(self, quota: Quota) -> Quota:
        def part(limit: int | None) -> int | None:
            return None if limit is None else max(1, math.ceil(limit / self.expected_replicas))

        return Quota(
            part(quota.requests_per_min),
            part(quota.tokens_per_min),
            part(quota.concurrent_streams),
            quota.lease_s,
        )


@dataclass(frozen=True, slots=True)
class Ask:
    """One renewal: what is settled and what is asked for."""

    settle_requests: int  # > 0 given back, < 0 used beyond the lease
    settle_tokens: int
    want_requests: int
    want_tokens: int
    want_slots: int
    in_use: int
    refusing: bool = False  # refused a stream since the last renewal


@dataclass(frozen=True, slots=True)
class Grant:
    requests: int
    tokens: int
    slots: int  # held after this renewal
    requests_wait_s: float  # when a short grant's rate has room again
    tokens_wait_s: float
    waiting: int  # other replicas refusing streams for want of a slot


@runtime_checkable
class Scripted(Protocol):
    """A store that runs server-side scripts (the Redis store)."""

    prefix: str

    def script(self, source: str) -> ScriptCall: ...


class RedisLeases:
    """The store half: settles and grants in one ``GRANT`` script run."""

    def __init__(self, store: Scripted, replica: str) -> None:
        self.replica = replica
        self._prefix = store.prefix
        self._grant = store.script(lua.GRANT)

    def keys(self, tenant: str, now: float) -> list[str]:
        index, _ = minute(now)
        base = f"{self._prefix}:limit:{tenant}"
        return [
            f"{base}:req:{index}",
            f"{base}:req:{index - 1}",
            f"{base}:tok:{index}",
            f"{base}:tok:{index - 1}",
            f"{base}:held",
            f"{base}:held-until",
            f"{base}:waiting",
        ]

    async def renew(self, tenant: str, quota: Quota, ask: Ask, ttl_s: float, now: float) -> Grant:
        _, elapsed = minute(now)
        args: list[Arg] = [
            repr(now),
            repr(elapsed),
            quota.requests_per_min or 0,
            quota.tokens_per_min or 0,
            quota.concurrent_streams or 0,
            self.replica,
            repr(ttl_s),
            ask.settle_requests,
            ask.settle_tokens,
            ask.want_requests,
            ask.want_tokens,
            ask.want_slots,
            ask.in_use,
            1 if ask.refusing else 0,
        ]
        out = await self._grant(self.keys(tenant, now), args)
        return Grant(
            int(out[0]), int(out[1]), int(out[2]), float(out[3]), float(out[4]), int(out[5])
        )


def _plan(balance: int, want: int) -> tuple[int, int]:
    """(settle, ask): give back what is above ``want``, or pay what is owed and ask for ``want``."""
    if balance > want:
        return balance - want, 0
    if balance < 0:
        return balance, want
    return 0, want - balance


@dataclass(slots=True)
class TenantShare:
    """One replica's part of one tenant's budget: admitted from here, renewed beside the path.

    Time is passed in (wall-clock seconds). A balance below zero is use beyond
    the lease (tokens charged after a request, admissions on the safe share),
    owed to the store at the next renewal."""

    tenant: str
    quota: Quota
    settings: LeaseSettings
    requests: int = 0  # request credits
    tokens: int = 0  # token credits
    slots: int = 0  # stream slots the store holds for this replica
    streams: set[str] = field(default_factory=set)  # in flight here
    expires: float = 0.0  # the lease holds until then (0: none yet)
    retry_at: dict[str, float] = field(default_factory=dict)  # reason → when the store has room
    asking: bool = False  # a renewal is in flight
    demand: bool = True  # requests since the last renewal (a new share assumes some)
    stream_demand_at: float = math.inf  # last stream admitted or refused here (inf: assume now)
    refusing: bool = False  # a stream refused since the last renewal
    others_waiting: bool = False  # the store said another replica wants a slot
    _window: LocalQuotas = field(default_factory=LocalQuotas)  # this replica's own count
    _safe: Quota = field(init=False)

    def __post_init__(self) -> None:
        self._safe = self.settings.safe(self.quota)

    def leased(self, now: float) -> bool:
        return now < self.expires

    # -- the request path (no I/O) ------------------------------------------------

    def admit(self, stream_id: str, now: float) -> Verdict:
        q = self.quota
        self.demand = True
        if q.concurrent_streams is not None:
            self.stream_demand_at = now
        if not self.leased(now):
            verdict = self._admit_safe(stream_id, now)
        else:
            verdict = self._admit_leased(now)
        if verdict.allowed:
            self._window.count(self.tenant, now)
            if q.requests_per_min is not None:
                self.requests -= 1
            if q.concurrent_streams is not None:
                self.streams.add(stream_id)
        return verdict

    def _admit_leased(self, now: float) -> Verdict:
        q = self.quota
        if q.requests_per_min is not None and self.requests < 1:
            return self._refused("requests_per_min", q.requests_per_min, now)
        if q.tokens_per_min is not None and self.tokens < 1:
            return self._refused("tokens_per_min", q.tokens_per_min, now)
        if q.concurrent_streams is not None and len(self.streams) >= self.slots:
            self.refusing = True
            return Verdict(False, "concurrent_streams", q.concurrent_streams, 1.0)
        return ALLOWED

    def _admit_safe(self, stream_id: str, now: float) -> Verdict:
        """No lease (none yet, or it expired unrenewed): the safe share, on this replica's
        own count of the minute, which includes what it admitted under its lease."""
        safe = Quota(self._safe.requests_per_min, self._safe.tokens_per_min, None)
        verdict = self._window.check(self.tenant, safe, now)
        if not verdict.allowed:  # the client is told the tenant's limit, not this share
            configured = getattr(self.quota, verdict.reason, None) or verdict.limit
            return Verdict(False, verdict.reason, configured, verdict.retry_after)
        streams = self._safe.concurrent_streams
        if streams is not None and len(self.streams) >= streams:
            limit = self.quota.concurrent_streams or streams
            return Verdict(False, "concurrent_streams", limit, 1.0)
        return ALLOWED

    def _refused(self, reason: str, limit: int, now: float) -> Verdict:
        # The store's answer at the last short grant, else "soon": a renewal is on its way.
        wait = self.retry_at.get(reason, 0.0) - now
        return Verdict(False, reason, limit, wait if wait >= 1 else 1.0)

    def finished(self, stream_id: str, tokens: int, now: float) -> None:
        self.streams.discard(stream_id)
        if tokens > 0:
            self._window.release(self.tenant, stream_id, tokens, now)
            if self.quota.tokens_per_min is not None:
                self.tokens -= tokens

    def low(self, now: float) -> bool:
        """Time to ask for more before the next periodic renewal."""
        if self.asking:
            return False
        q = self.quota
        if q.requests_per_min is not None and self.requests * 2 < self._want(q.requests_per_min):
            return now >= self.retry_at.get("requests_per_min", 0.0)
        if q.tokens_per_min is not None and self.tokens * 2 < self._want(q.tokens_per_min):
            return now >= self.retry_at.get("tokens_per_min", 0.0)
        if q.concurrent_streams is not None:
            if self.refusing:
                return now >= self.retry_at.get("concurrent_streams", 0.0)
            if self.others_waiting and self.slots > len(self.streams):
                return True  # a spare slot another replica is refusing streams for
        return False

    # -- renewal (beside the path) -------------------------------------------------

    def due(self, now: float) -> bool:
        """Whether the periodic renewal has work: demand, something to settle or give
        back, a slot to move, or a lease half gone. An idle tenant is renewed every
        ``ttl_s / 2`` instead of every ``renew_s``."""
        q = self.quota
        if self.demand or self.refusing or self.others_waiting:
            return True
        if self.expires - now < self.settings.ttl_s / 2:
            return True
        if self.requests < 0 or self.tokens < 0:
            return True
        if q.requests_per_min is not None and self.requests > self._want(q.requests_per_min):
            return True
        if q.tokens_per_min is not None and self.tokens > self._want(q.tokens_per_min):
            return True
        if q.concurrent_streams is not None:
            spare = 1 if now - self.stream_demand_at < 2 * self.settings.renew_s else 0
            return self.slots != len(self.streams) + spare
        return False

    def _want(self, limit: int) -> int:
        return self.settings.chunk(limit) if self.demand else 1

    def ask(self, now: float) -> Ask:
        """The next renewal's request; what it gives back is no longer spendable from now."""
        q = self.quota
        settle_r = want_r = settle_t = want_t = 0
        if q.requests_per_min is not None:
            settle_r, want_r = _plan(self.requests, self._want(q.requests_per_min))
            self.requests -= settle_r
        if q.tokens_per_min is not None:
            settle_t, want_t = _plan(self.tokens, self._want(q.tokens_per_min))
            self.tokens -= settle_t
        in_use = len(self.streams)
        # a spare slot while streams were asked for lately (a new share assumes so)
        spare = 1 if now - self.stream_demand_at < 2 * self.settings.renew_s else 0
        ask = Ask(settle_r, settle_t, want_r, want_t, in_use + spare, in_use, self.refusing)
        self.asking = True
        self.demand = self.refusing = False
        return ask

    def granted(self, ask: Ask, grant: Grant, now: float) -> None:
        self.asking = False
        self.requests += grant.requests
        self.tokens += grant.tokens
        self.slots = grant.slots
        self.others_waiting = grant.waiting > 0
        if ask.refusing and grant.slots <= ask.in_use:
            self.retry_at["concurrent_streams"] = now + self.settings.renew_s / 4
        elif grant.slots > ask.in_use:
            self.retry_at.pop("concurrent_streams", None)
        self.expires = now + self.settings.ttl_s
        for reason, wanted, got, wait in (
            ("requests_per_min", ask.want_requests, grant.requests, grant.requests_wait_s),
            ("tokens_per_min", ask.want_tokens, grant.tokens, grant.tokens_wait_s),
        ):
            if got < wanted:
                self.retry_at[reason] = now + wait
            else:
                self.retry_at.pop(reason, None)

    def failed(self, ask: Ask) -> None:
        """The renewal did not answer. What it owed is owed again (if the script did run,
        the store counts it twice: the safe side); what it gave back stays given back."""
        self.asking = False
        self.demand = True
        self.refusing = self.refusing or ask.refusing
        if ask.settle_requests < 0:
            self.requests += ask.settle_requests
        if ask.settle_tokens < 0:
            self.tokens += ask.settle_tokens

    def giving_back(self) -> Ask:
        """The last renewal (at shutdown): every credit and slot back."""
        ask = Ask(self.requests, self.tokens, 0, 0, len(self.streams), len(self.streams))
        self.requests = self.tokens = 0
        return ask

    def status(self, now: float) -> dict[str, Any]:
        return {
            "mode": "lease" if self.leased(now) else "safe",
            "requests": self.requests,
            "tokens": self.tokens,
            "slots": self.slots,
            "streams": len(self.streams),
            "expires_in_s": round(max(0.0, self.expires - now), 3),
        }
