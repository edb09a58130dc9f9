"""Backoff between rounds of attempts: tenacity's exponential, full jitter, Retry-After.

Formula ("Full Jitter", AWS Architecture Blog, "Exponential Backoff And
Jitter"; tenacity ``wait_random_exponential``)::

    ceiling = min(base × 2**(round − 1), cap)          as tenacity.wait_exponential
    delay   = uniform(0, ceiling)                      the injected rng
    delay   = max(delay, min(retry_after, max_retry_after))   when a hint is given

The ceiling is tenacity's exponential (tested against it). Its jittered strategies
(``wait_random_exponential``, ``wait_exponential_jitter``) draw from the global
``random`` module and cannot take an rng, so the jitter is drawn here from the
injected ``random.Random`` — the same uniform draw ``wait_random_exponential``
makes, kept reproducible in tests.

Retry-After is a floor, not a schedule: an overloaded backend asks not to be
called sooner, and waiting less than the hint only earns another 429. But a
hint is capped by ``max_retry_after``: a backend answering ``Retry-After: 3600``
must not hold a client's request (and its connection) for an hour. When the hint
exceeds the cap, the caller should prefer another backend or give up with a 503
that passes the hint on (:func:`exceeds_retry_after`); either way a delay that
would end past the request's deadline is not worth waiting (the caller answers
at once: :mod:`failover.rounds`).

A round's hint is the soonest any of its backends asked to be called again
(:func:`soonest_retry_after`): NaN and negative hints are no hints, in every
decision alike; 0 is a hint that asks for no wait; ``inf`` exceeds any cap.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable


def backoff_delay(
    round: int,
    retry_after: float | None,
    *,
    base: float = 0.05,
    cap: float = 2.0,
    max_retry_after: float = 5.0,
    rng: random.Random,
) -> float:
    """Seconds to wait after round ``round`` (1-based) of attempts failed.

    ``retry_after`` is that round's Retry-After hint in seconds
    (:func:`soonest_retry_after`); None, 0, negative or NaN means no floor.
    """
    if round < 1:
        raise ValueError("round is 1-based: the number of the round that just failed")
    if base < 0 or cap < 0 or max_retry_after < 0:
        raise ValueError("base, cap and max_retry_after must be ≥ 0")
    delay = rng.uniform(0.0, _ceiling(round, base, cap))
    if retry_after is not None and retry_after > 0:  # NaN > 0 is False
        delay = max(delay, min(retry_after, max_retry_after))
    return delay


def soonest_retry_after(hints: Iterable[float | None]) -> float | None:
    """The soonest of a round's Retry-After hints; None when none is usable."""
    return min((h for h in hints if h is not None and h >= 0), default=None)  # NaN ≥ 0 is False


def exceeds_retry_after(retry_after: float | None, *, max_retry_after: float = 5.0) -> bool:
    """The hint asks for a longer wait than a request may be held for."""
    return retry_after is not None and not math.isnan(retry_after) and retry_after > max_retry_after


def _ceiling(round: int, base: float, cap: float) -> float:
    """tenacity's ``wait_exponential(multiplier=base, max=cap)`` at attempt ``round``.

    Written out, not called: it is one clamp, and tenacity's form needs a
    Retrying and a RetryCallState built per call, imported on the failure path
    (or held by every gateway, ~0.4 MiB): under file-descriptor exhaustion that
    import itself failed, and a request that had failed over answered 500.
    tests/failover/test_backoff.py holds it to tenacity's own answer.
    """
    try:
        return min(base * 2.0 ** (round - 1), cap)
    except OverflowError:  # tenacity's answer too: past any float, the cap
        return cap
