"""A budget of extra attempts earned by original requests (tower / Finagle / Linkerd).

Why a budget and not "at most k retries per request": a per-request limit
bounds each request, not the system. When a backend or a whole region fails,
every request fails, so every request uses all its retries and the load on
what is left multiplies by k + 1 — exactly when it can least take it; a brief
brown-out becomes a retry storm that keeps it down. A budget bounds the
*total*: retries may add at most a fixed share of the real traffic, so an
outage costs at most ``1 + ratio`` times the load, while the occasional failure
of a healthy system (which leaves the budget full) is still retried at once.
The small floor keeps a quiet service, with few deposits, able to retry at all.
(tower ``retry/budget``; Finagle ``RetryBudget``, "allows for about 20% of the
total requests to be retried on top of 10 retries per second"; Linkerd's
``retryRatio`` 0.2, ``minRetriesPerSecond`` 10, ``ttl`` 10 s.)

Nothing here is retry-specific: the hedge cap is the same object with
``ratio=0.05`` and a small floor, where a hedge withdraws.

Formula, over the live window (the last ``ttl_s`` to within one slot)::

    balance = min_per_s × ttl_s + ratio × deposits − withdrawals
    withdraw() succeeds, and takes 1, iff balance ≥ 1

Deposits and withdrawals expire ``ttl_s`` after they are made, as in tower: the
window is a ring of ``slots`` counters, each covering ``ttl_s / slots`` seconds
(O(slots) memory whatever the rate). Amounts are integers in millionths so that
e.g. five deposits at ratio 0.2 buy exactly one withdrawal.

Guarantee: every successful withdrawal at time t had ``withdrawals ≤ floor ×
ttl + ratio × deposits`` counted over the slots live at t (itself included).
Hence in any ``slots`` consecutive slots, the withdrawals are at most ``floor ×
ttl + ratio ×`` the deposits made in those slots and the ttl before them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

_UNIT = 1_000_000  # one withdrawal, in the integer units of the ledger


class RetryBudget:
    """Deposit once per original request; withdraw once per extra attempt."""

    __slots__ = (
        "_deposit",
        "_epoch",
        "_reserve",
        "_ring",
        "_sum",
        "_width",
        "denied",
        "min_per_s",
        "ratio",
        "ttl_s",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        min_per_s: float = 10.0,
        ttl_s: float = 10.0,
        *,
        slots: int = 10,
    ) -> None:
        if ratio < 0 or min_per_s < 0:
            raise ValueError("ratio and min_per_s must be ≥ 0")
        if ttl_s <= 0 or slots < 1:
            raise ValueError("ttl_s must be > 0 and slots ≥ 1")
        self.ratio = ratio
        self.min_per_s = min_per_s
        self.ttl_s = ttl_s
        self.denied = 0  # refused withdrawals, for metrics
        self._deposit = round(ratio * _UNIT)
        self._reserve = round(min_per_s * ttl_s * _UNIT)
        self._width = ttl_s / slots
        self._ring = [0] * slots
        self._sum = 0
        self._epoch: int | None = None

    def deposit(self, now: float) -> None:
        """One original request: earns ``ratio`` of a withdrawal for ``ttl_s``."""
        i = self._advance(now)
        self._ring[i] += self._deposit
        self._sum += self._deposit

    def withdraw(self, now: float) -> bool:
        """One extra attempt; False when the budget is exhausted (do not make it)."""
        i = self._advance(now)
        if self._reserve + self._sum < _UNIT:
            self.denied += 1
            return False
        self._ring[i] -= _UNIT
        self._sum -= _UNIT
        return True

    def refund(self, now: float) -> None:
        """Give back a withdrawal that made no attempt (nothing could start): the
        budget bounds the extra load sent, and none was."""
        i = self._advance(now)
        self._ring[i] += _UNIT
        self._sum += _UNIT

    def balance(self, now: float) -> float:
        """Withdrawals available now (may be negative just after deposits expire)."""
        self._advance(now)
        return (self._reserve + self._sum) / _UNIT

    def _advance(self, now: float) -> int:
        """Expire slots older than the window; return the current slot's index.
        A time earlier than one already seen counts in the current slot."""
        epoch = math.floor(now / self._width)
        n = len(self._ring)
        if self._epoch is None:
            self._epoch = epoch
        elif epoch > self._epoch:
            for e in range(self._epoch + 1, min(epoch, self._epoch + n) + 1):
                self._sum -= self._ring[e % n]
                self._ring[e % n] = 0
            self._epoch = epoch
        return self._epoch % n


@dataclass(slots=True)
class Budgets:
    """Shared across requests: retries ≈ 20% of requests, hedges ≈ 5%."""

    retries: RetryBudget = field(default_factory=RetryBudget)
    hedges: RetryBudget = field(default_factory=lambda: RetryBudget(ratio=0.05, min_per_s=1.0))
