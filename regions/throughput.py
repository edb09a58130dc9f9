"""A self-hosted backend's output capacity, measured: a decayed peak of completion tokens/s.

A backend priced by the hour (``price.per_hour``, GPU hours) costs per output
token ``per_hour / (3600 × capacity)``, where capacity is what it can produce,
not what it produces now: priced at its current rate, an idle backend would
look expensive and be starved of the traffic that would make it cheap.

Observed throughput is the backend's aggregate completion tokens/s, in
buckets of ``bucket_s``: each finished request spreads its tokens evenly over
the time it ran, so a bucket holds the tokens every request produced in it
(a bucket only grows, as late finishers add to it). The estimate is the peak
of the bucket rates, decayed toward lower ones with time constant
``decay_s``::

    peak = max(rate, peak × exp(-busy / decay_s))

where ``busy`` counts only time with traffic (a gap between requests longer
than one bucket counts as one bucket), as ``routing.ewma`` does not decay an
idle backend: nobody asking says nothing about capacity. A configured
``seed`` (``price.tokens_per_s``) stands until measured and stays a floor
after: the operator's figure is what the backend can do, and a measured peak
below it means it was never saturated here.

Each replica measures only the traffic it sends; with several gateway
replicas sharing a backend, set ``seed`` (docs/observability.md#cost-model).
Time is passed in (the request's monotonic timestamps); nothing reads a clock.
"""

from __future__ import annotations

import math

BUCKET_S = 5.0
DECAY_S = 600.0
_HORIZON_BUCKETS = 24  # buckets kept (2 minutes at 5 s): later parts of a long request still count


class Throughput:
    __slots__ = ("_buckets", "_last", "_peak", "bucket_s", "decay_s", "seed")

    def __init__(
        self, seed: float | None = None, *, bucket_s: float = BUCKET_S, decay_s: float = DECAY_S
    ) -> None:
        if seed is not None and seed <= 0:
            raise ValueError("seed must be a positive number of tokens per second")
        self.seed = seed
        self.bucket_s = bucket_s
        self.decay_s = decay_s
        self._buckets: dict[int, float] = {}  # bucket index → tokens produced in it
        self._peak = 0.0
        self._last: float | None = None

    def observe(self, tokens: int, start: float, end: float) -> None:
        """``tokens`` completion tokens produced between ``start`` and ``end`` (seconds)."""
        if tokens <= 0:
            return
        end = max(end, start)
        if self._last is not None:
            busy = min(max(0.0, end - self._last), self.bucket_s)
            self._peak *= math.exp(-busy / self.decay_s)
        self._last = end if self._last is None else max(self._last, end)
        width = self.bucket_s
        last = int(end // width)
        first = max(int(start // width), last - _HORIZON_BUCKETS + 1)
        duration = end - start
        buckets = self._buckets
        for k in range(first, last + 1):
            if duration > 0:
                overlap = min(end, (k + 1) * width) - max(start, k * width)
                share = tokens * overlap / duration
            else:
                share = float(tokens)  # an instant answer: all in its one bucket
            total = buckets.get(k, 0.0) + share
            buckets[k] = total
            if total / width > self._peak:
                self._peak = total / width
        if len(buckets) > 2 * _HORIZON_BUCKETS:
            newest = max(buckets)
            for k in [k for k in buckets if k <= newest - _HORIZON_BUCKETS]:
                del buckets[k]

    @property
    def measured(self) -> float | None:
        """The decayed peak alone, tokens/s; None before the first sample."""
        return self._peak if self._last is not None else None

    @property
    def capacity(self) -> float | None:
        """Tokens/s the backend is taken to produce: the peak, floored at the seed."""
        if self._last is None:
            return self.seed
        return self._peak if self.seed is None or self._peak > self.seed else self.seed

    @property
    def source(self) -> str:
        """Where ``capacity`` comes from: measured, configured or unknown."""
        if self._last is not None and (self.seed is None or self._peak > self.seed):
            return "measured"
        return "unknown" if self.seed is None else "configured"
