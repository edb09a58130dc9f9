"""Scoring eligible backends and choosing among them.

Each candidate's *latency cost* is the expected time it would take to serve
the request, inflated by its load (peak-EWMA × (pending + 1), Finagle/tower)::

    latency = (ttft + itl × expected_tokens) × (in_flight + queue_depth + 1)

and its *price* is what the request would cost there, by the same
``Price.cost`` that counts spend (per token, or per GPU hour over the
backend's measured capacity, ``regions.throughput``)::

    price = Price.cost(prompt_tokens, expected_tokens)

Both are normalised by the best candidate's value, so the score is unitless::

    score = latency / min(latency) + cost_weight × price / min(price)

A cost weight of 0 ignores price; 1 makes "twice as expensive" as bad as
"twice as slow". A cold backend (no TTFT sample yet) is assumed to be as fast
as the median warm one: it gets a fair share of probes instead of being
starved (no history) or flooded (optimism), and its own samples take over
after the first request. Likewise a per-hour backend whose capacity is not
measured yet (and has no configured ``tokens_per_s``) is priced at the
median of the others' prices.

Choice is power of two choices (Mitzenmacher): two candidates drawn at
random, weighted by backend weight × region dial, and the lower score wins.
The best others follow in score order as the failover sequence, capped: a
request never needs fifty fallbacks, and the retry budget would refuse them.
"""

from __future__ import annotations

import bisect
import heapq
import itertools
import random
from collections.abc import Sequence
from typing import NamedTuple

from regions.inventory import BackendSpec
from routing.signals import BackendSignal

COLD_TTFT_S = 0.5
COLD_ITL_S = 0.02
MAX_FALLBACKS = 7


class Scored(NamedTuple):
    """Per request and per backend: a NamedTuple because it is built on the hot
    path, where a frozen dataclass costs several times more to construct."""

    backend: BackendSpec
    weight: float
    latency: float
    price: float
    score: float
    cold: bool


def _median(values: list[float]) -> float:
    values.sort()
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def _warm_median(estimates: list[float | None], default: float) -> float:
    """The median of the estimates that are known; ``default`` when none is."""
    warm = [e for e in estimates if e is not None]
    return _median(warm) if warm else default


def rank(
    backends: Sequence[tuple[BackendSpec, float, BackendSignal]],
    *,
    prompt_tokens: int,
    expected_tokens: int,
    cost_weight: float,
    rng: random.Random,
) -> list[Scored]:
    """The P2C winner, then at most MAX_FALLBACKS others by ascending score.

    ``backends`` are (spec, selection weight, signal) of the eligible set.
    Scores are plain floats; records are built only for the plan's members
    (this runs once per request over every eligible backend).
    """
    n = len(backends)
    # A cold backend's estimates: the warm ones' medians, computed at the first one met
    # (none is, when every backend is warm: the common case).
    cold_ttft: float | None = None
    cold_itl: float | None = None
    latencies = [0.0] * n
    prices = [0.0] * n
    unpriced: list[int] = []
    best_latency = best_price = float("inf")
    for i, (spec, _, sig) in enumerate(backends):
        ttft = sig.ttft_s
        if ttft is None:
            if cold_ttft is None:
                cold_ttft = _warm_median([s.ttft_s for _, _, s in backends], COLD_TTFT_S)
            ttft = cold_ttft
        itl = sig.itl_s
        if itl is None:
            if cold_itl is None:
                cold_itl = _warm_median([s.itl_s for _, _, s in backends], COLD_ITL_S)
            itl = cold_itl
        latency = (ttft + itl * expected_tokens) * (sig.in_flight + sig.queue_depth + 1)
        price = spec.price
        cost = price.cost(prompt_tokens, expected_tokens)
        latencies[i] = latency
        prices[i] = cost
        if latency < best_latency:
            best_latency = latency
        if not cost and price.meter is not None and price.meter.capacity is None:
            unpriced.append(i)  # per hour, capacity not measured yet: priced below
        elif cost < best_price:
            best_price = cost
    if unpriced:
        # As a cold backend's latency: the median known price, so it gets a fair share
        # until its first request measures it (neither free nor the dearest).
        skip = set(unpriced)
        known = [p for i, p in enumerate(prices) if i not in skip]
        guess = _median(known) if known else 0.0
        for i in unpriced:
            prices[i] = guess
        best_price = min(best_price, guess)
    inv_latency = 1.0 / (best_latency or 1e-9)
    if cost_weight > 0 and best_price > 0:
        k = cost_weight / best_price
        scores = [lat * inv_latency + k * pr for lat, pr in zip(latencies, prices, strict=True)]
    else:
        scores = [lat * inv_latency for lat in latencies]

    def record(i: int) -> Scored:
        spec, weight, sig = backends[i]
        return Scored(spec, weight, latencies[i], prices[i], scores[i], sig.ttft_s is None)

    if n <= 1:
        return [record(i) for i in range(n)]
    first = _p2c(backends, scores, rng)
    others = heapq.nsmallest(
        MAX_FALLBACKS, (i for i in range(n) if i != first), key=scores.__getitem__
    )
    return [record(first), *(record(i) for i in others)]


def _p2c(
    backends: Sequence[tuple[BackendSpec, float, BackendSignal]],
    scores: list[float],
    rng: random.Random,
) -> int:
    """Two distinct candidates drawn by selection weight; the lower score wins."""
    cumulative = list(itertools.accumulate(w for _, w, _ in backends))
    total = cumulative[-1]
    a = bisect.bisect_right(cumulative, rng.random() * total)
    b = a
    for _ in range(4):  # weights can make a repeat likely: redraw a few times
        b = bisect.bisect_right(cumulative, rng.random() * total)
        if b != a:
            break
    n = len(backends)
    a, b = min(a, n - 1), min(b, n - 1)
    if b == a:
        b = (a + 1) % n
    return a if scores[a] <= scores[b] else b
