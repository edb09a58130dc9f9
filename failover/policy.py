"""Failover policy as plain data: timeouts, resumption, hedging, budgets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimeoutPolicy:
    """Seconds. ``first_token`` runs from an attempt's start to its first text;
    ``idle`` is the longest gap between chunks after that; ``total`` bounds the
    whole request across attempts."""

    connect: float = 3.0
    first_token: float = 30.0
    idle: float = 30.0
    total: float = 600.0


@dataclass(frozen=True, slots=True)
class FailoverPolicy:
    timeouts: TimeoutPolicy = TimeoutPolicy()
    # Mid-stream resumption on another backend of the same version.
    resume: bool = True
    max_resumptions: int = 2
    # Hedging: race a second backend when the first is later than its p95 TTFT.
    hedge: bool = True
    hedge_min_delay_s: float = 0.05
    # Rounds over the plan: a second pass after a backoff, when everything
    # failed retryably (a 429 storm with Retry-After, a blip).
    rounds: int = 2
    max_retry_after_s: float = 2.0
