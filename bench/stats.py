"""Percentiles and distribution summaries for the benchmark, with no I/O.

Percentiles use linear interpolation between closest ranks (Hyndman & Fan
type 7, numpy's default and therefore what ``vllm bench serve`` reports), so
our p50/p90/p99 can be set beside theirs without a definitional gap:

    rank = p / 100 * (n - 1)
    value = x[floor(rank)] + frac(rank) * (x[ceil(rank)] - x[floor(rank)])

Overheads ("added TTFT") are differences of percentiles of two independent
runs, not percentiles of paired differences: the gateway run and the direct
run do not contain the same requests.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def percentile(sorted_values: Sequence[float], p: float) -> float:
    """The ``p``-th percentile (0..100) of an ascending, non-empty sequence (type 7)."""
    if not sorted_values:
        raise ValueError("percentile of an empty sequence")
    if not 0.0 <= p <= 100.0:
        raise ValueError(f"percentile must be within 0..100, got {p}")
    rank = p / 100.0 * (len(sorted_values) - 1)
    lo = math.floor(rank)
    hi = math.ceil(rank)
    low_value = sorted_values[lo]
    return low_value + (rank - lo) * (sorted_values[hi] - low_value)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Summary of one latency sample set, in the unit of its inputs (ms here)."""

    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Iterable[float]) -> Distribution | None:
        """The summary of ``values``, or None when there are none."""
        ordered = sorted(values)
        if not ordered:
            return None
        return cls(
            n=len(ordered),
            mean=math.fsum(ordered) / len(ordered),
            p50=percentile(ordered, 50),
            p90=percentile(ordered, 90),
            p99=percentile(ordered, 99),
            max=ordered[-1],
        )
