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

Each replica sees only the traffic it sends, so with several replicas sharing
a backend its own peak is about its share. :meth:`fleet` takes the fleet's
bucket rates, summed in the store over every replica
(``gateway.control.capacity``), into a second peak kept by the same rule;
the capacity is the larger of the two (the fleet's includes this replica's,
whose latest requests it may not hold yet). :meth:`fleet_stale` sets the
fleet's figure aside when the store has not answered for a while: the
local peak is then all that is current (docs/observability.md#cost-model).
Time is passed in (the request's monotonic timestamps, the fleet's bucket
indexes); nothing reads a clock.
"""

from __future__ import annotations

import math

BUCKET_S = 5.0
DECAY_S = 600.0
_HORIZON_BUCKETS = 24  # buckets kept (2 minutes at 5 s): later parts of a long request still count
HORIZON_BUCKETS = _HORIZON_BUCKETS


class Throughput:
    __slots__ = (
        "_buckets",
        "_fleet",
        "_fleet_last",
        "_fleet_live",
        "_fleet_peak",
        "_last",
        "_peak",
        "bucket_s",
        "decay_s",
        "seed",
    )

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
        self._fleet: dict[int, float] = {}  # fleet bucket index → its rate, tokens/s
        self._fleet_peak = 0.0
        self._fleet_last: int | None = None  # the newest busy fleet bucket
        self._fleet_live = False

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

    def fleet(self, bucket: int, rate: float, width: float | None = None) -> None:
        """The fleet's rate (tokens/s) in bucket ``bucket`` (``width`` seconds wide,
        ``bucket_s`` by default), as read from the store.

        A bucket's total only grows (late finishers, replicas that flush later),
        so reading one again keeps the larger rate and decays nothing; each newer
        busy bucket decays the peak by one bucket's width (a gap counts as one,
        as in :meth:`observe`)."""
        if rate <= 0:
            return
        width = self.bucket_s if width is None else width
        last = self._fleet_last
        if last is not None and bucket <= last - _HORIZON_BUCKETS:
            return  # forgotten already: it must not count twice
        if last is None or bucket > last:
            if last is not None:
                self._fleet_peak *= math.exp(-width / self.decay_s)
            self._fleet_last = bucket
        self._fleet_live = True
        fleet = self._fleet
        if rate > fleet.get(bucket, 0.0):
            fleet[bucket] = rate
            if rate > self._fleet_peak:
                self._fleet_peak = rate
        if len(fleet) > 2 * _HORIZON_BUCKETS:
            newest = max(fleet)
            for k in [k for k in fleet if k <= newest - _HORIZON_BUCKETS]:
                del fleet[k]

    def fleet_stale(self) -> None:
        """The store has been away too long: use the local peak until :meth:`fleet` again."""
        self._fleet_live = False

    @property
    def fleet_measured(self) -> float | None:
        """The fleet's decayed peak, tokens/s; None before a fleet sample or while stale."""
        return self._fleet_peak if self._fleet_live else None

    @property
    def local_measured(self) -> float | None:
        """This replica's own decayed peak, tokens/s; None before its first sample."""
        return self._peak if self._last is not None else None

    @property
    def measured(self) -> float | None:
        """The decayed peak alone (the fleet's or the local one, the larger),
        tokens/s; None before the first sample."""
        local, fleet = self.local_measured, self.fleet_measured
        if fleet is None:
            return local
        return fleet if local is None or fleet >= local else local

    @property
    def capacity(self) -> float | None:
        """Tokens/s the backend is taken to produce: the peak, floored at the seed."""
        measured = self.measured
        if measured is None:
            return self.seed
        return measured if self.seed is None or measured > self.seed else self.seed

    @property
    def source(self) -> str:
        """Where ``capacity`` comes from: fleet (measured across replicas), measured
        (by this replica alone), configured or unknown."""
        measured = self.measured
        if measured is not None and (self.seed is None or measured > self.seed):
            fleet = self.fleet_measured
            return "fleet" if fleet is not None and fleet >= measured else "measured"
        return "unknown" if self.seed is None else "configured"
