"""Scoring eligible backends and choosing among them.

Each candidate's *latency cost* is the expected time it would take to serve
the request, inflated by its load (peak-EWMA × (pending + 1), Finagle/tower)::

    latency = (ttft + itl × expected_tokens) × (in_flight + queue_depth + 1)

and its *price* is what the request would cost there::

    price = input_per_m × prompt_tokens / 1e6 + output_per_m × expected_tokens / 1e6

Both are normalised by the best candidate's value, so the score is unitless::

    score = latency / min(latency) + cost_weight × price / min(price)

A cost weight of 0 ignores price; 1 makes "twice as expensive" as bad as
"twice as slow". A cold backend (no TTFT sample yet) is assumed to be as fast
as the median warm one: it gets a fair share of probes instead of being
starved (no history) or flooded (optimism), and its own samples take over
after the first request.

Choice is power of two choices (Mitzenmacher): two candidates drawn at
random, weighted by backend weight × region dial, and the lower score wins.
The others follow in score order as the failover sequence.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from regions.inventory import BackendSpec
from routing.signals import BackendSignal

COLD_TTFT_S = 0.5
COLD_ITL_S = 0.02


@dataclass(frozen=True, slots=True)
class Scored:
    backend: BackendSpec
    weight: float
    latency: float
    price: float
    score: float
    cold: bool

    def describe(self) -> str:
        cold = " cold" if self.cold else ""
        return (
            f"score {self.score:.3f} (latency {self.latency * 1000:.1f} ms{cold}, "
            f"price ${self.price:.6f})"
        )


def score_all(
    backends: Sequence[tuple[BackendSpec, float, BackendSignal]],
    *,
    prompt_tokens: int,
    expected_tokens: int,
    cost_weight: float,
) -> list[Scored]:
    """``backends`` are (spec, selection weight, signal) of the eligible set."""
    warm_ttft = [s.ttft_s for _, _, s in backends if s.ttft_s is not None]
    warm_itl = [s.itl_s for _, _, s in backends if s.itl_s is not None]
    cold_ttft = statistics.median(warm_ttft) if warm_ttft else COLD_TTFT_S
    cold_itl = statistics.median(warm_itl) if warm_itl else COLD_ITL_S
    raw = []
    for spec, weight, sig in backends:
        ttft = cold_ttft if sig.ttft_s is None else sig.ttft_s
        itl = cold_itl if sig.itl_s is None else sig.itl_s
        latency = (ttft + itl * expected_tokens) * (sig.in_flight + sig.queue_depth + 1)
        price = (
            spec.price.input_per_m * prompt_tokens + spec.price.output_per_m * expected_tokens
        ) / 1e6
        raw.append((spec, weight, latency, price, sig.ttft_s is None))
    best_latency = min((r[2] for r in raw), default=1.0) or 1e-9
    best_price = min((r[3] for r in raw), default=0.0)
    scored = []
    for spec, weight, latency, price, cold in raw:
        score = latency / best_latency
        if cost_weight > 0 and best_price > 0:
            score += cost_weight * price / best_price
        scored.append(Scored(spec, weight, latency, price, score, cold))
    return scored


def p2c_order(scored: list[Scored], rng: random.Random) -> list[Scored]:
    """The P2C winner first, then the rest by ascending score."""
    if len(scored) <= 1:
        return list(scored)
    weights = [s.weight for s in scored]
    a = rng.choices(range(len(scored)), weights)[0]
    rest_w = [0.0 if i == a else w for i, w in enumerate(weights)]
    b = rng.choices(range(len(scored)), rest_w)[0] if sum(rest_w) > 0 else a
    first = a if scored[a].score <= scored[b].score else b
    others = sorted((s for i, s in enumerate(scored) if i != first), key=lambda s: s.score)
    return [scored[first], *others]
