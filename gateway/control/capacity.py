"""A per-hour backend's capacity measured across the fleet, through the store.

Each replica sees only the requests it sends, so its own measure of a shared
backend's throughput (``regions.throughput``) is about its share: with N
replicas the capacity read 1/N of the truth and the per-token price N× too
high. Here every replica counts, per per-hour backend, the completion tokens
its requests produced in each wall-clock bucket (``bucket_s``, each request's
tokens spread over the time it ran, as the local meter does), and a
background loop reads the fleet's sums back and hands them to the meters
pricing reads (``Throughput.fleet``), so every replica prices with the same
fleet capacity.

- :class:`CapacityTap`, a request tap: one list append on the request
  path; spread over buckets and added to the store by
  :class:`PendingCounts` in the background.
  Window ``capacity/<bucket // GROUP>`` (a minute of 5 s buckets: a busy
  day is 1440 windows in the store, not 17280), field
  ``<bucket>\\x1f<backend>``, in milli-tokens (store counters are integers).
- :class:`CapacityFeed`, every ``bucket_s``: sums the windows of the last
  ``HORIZON_BUCKETS`` complete buckets (one store call) and feeds each busy
  bucket's rate. Read again each time, because a bucket keeps growing while
  long requests that ran in it finish; the meter keeps the larger rate.
  A store that does not answer leaves the last fleet figure standing for
  ``stale_s``; after that the meters fall back to their local peak.

Buckets are wall-clock (Unix time), so replicas agree on them as far as their
clocks agree: a replica whose clock is off by δ files its tokens δ early or
late, which leaves a steady rate's sum unchanged but may split a burst
shorter than δ over two buckets (a lower peak).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable

from failover.executor import Execution
from gateway.control.counts import PendingCounts
from gateway.store import Store, StoreUnavailable
from regions.inventory import BackendSpec
from regions.throughput import BUCKET_S, DECAY_S, HORIZON_BUCKETS
from routing.snapshot import RoutingSnapshot

log = logging.getLogger("meridian.capacity")

_SEP = "\x1f"
FLEET_BUCKET_S = BUCKET_S  # what attach() uses (read when it runs: a test may shorten it)
GROUP = 12  # buckets per store window
MILLI = 1000  # counters are integers: tokens × 1000, so a spread share keeps its fraction
# The feed reads the last two minutes; the store keeps a window ten, not the counters' week.
WINDOW_TTL_S = 600.0


def backends(snapshot: RoutingSnapshot) -> list[BackendSpec]:
    """The snapshot's per-hour backends (those with a meter), each once."""
    seen: dict[int, BackendSpec] = {}
    for route in snapshot.models.values():
        for specs in route.backends.values():
            for b in specs:
                if b.price.meter is not None:
                    seen.setdefault(id(b), b)
    return list(seen.values())


def window_name(bucket: int) -> str:
    return f"capacity/{bucket // GROUP}"


class CapacityTap:
    """Counts each served request's completion tokens on a per-hour backend
    into the fleet's buckets; :meth:`run` adds them to the store.

    The request path only appends the request's span to a list (well under a
    microsecond); spreading it over its buckets happens at flush time."""

    def __init__(
        self,
        store: Store,
        flush_s: float = 1.0,
        *,
        bucket_s: float = BUCKET_S,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._counts = PendingCounts(store, "capacity", flush_s=flush_s, ttl_s=WINDOW_TTL_S)
        self.flush_s = flush_s
        self.bucket_s = bucket_s
        self._clock = clock
        self._monotonic = monotonic  # the pipeline's clock: an attempt's ``started``
        self._sleep = sleep
        # Bounded by the requests of one flush_s: drained whether or not the store answers.
        self._spans: list[tuple[str, int, float, float]] = []

    def __call__(self, execution: Execution, status: int) -> None:
        serving = execution.serving
        usage = execution.usage
        if serving is None or usage is None or serving.backend.price.meter is None:
            return
        end = self._clock()
        ran = self._monotonic() - serving.started
        self._spans.append((serving.backend.name, usage.completion_tokens, end - ran, end))

    def count(self, backend: str, tokens: int, start: float, end: float) -> None:
        """``tokens`` produced by ``backend`` between ``start`` and ``end`` (Unix seconds)."""
        self._spans.append((backend, tokens, start, end))

    def _spread(self) -> None:
        """The spans counted so far, each request's tokens spread over the buckets it ran in."""
        spans, self._spans = self._spans, []
        width = self.bucket_s
        for backend, tokens, start, end in spans:
            if tokens <= 0:
                continue
            end = max(end, start)
            last = int(end // width)
            first = max(int(start // width), last - HORIZON_BUCKETS + 1)
            duration = end - start
            for k in range(first, last + 1):
                if duration > 0:
                    overlap = min(end, (k + 1) * width) - max(start, k * width)
                    share = tokens * overlap / duration
                else:
                    share = float(tokens)
                milli = round(share * MILLI)
                if milli > 0:  # an end on a bucket's edge leaves the next one nothing
                    self._counts.window(window_name(k))[f"{k}{_SEP}{backend}"] += milli

    def pending(self) -> dict[str, dict[str, int]]:
        """What the next flush adds, by window (for tests and the curious)."""
        self._spread()
        return {w: dict(c) for w, c in self._counts._pending.items()}

    async def flush(self) -> None:
        self._spread()
        await self._counts.flush()

    async def run(self) -> None:
        """Flush every ``flush_s`` until cancelled, then once more if the store answers."""
        try:
            while True:
                await self._sleep(self.flush_s)
                try:
                    await self.flush()
                except Exception:
                    log.exception("capacity counters: flush failed")
        finally:
            with contextlib.suppress(StoreUnavailable):
                await self.flush()  # what this replica counted still counts


class CapacityFeed:
    """Reads the fleet's bucket sums every ``bucket_s`` and feeds the meters."""

    def __init__(
        self,
        store: Store,
        backends: Callable[[], Iterable[BackendSpec]],
        measured: Callable[[BackendSpec, float], None],
        *,
        bucket_s: float = BUCKET_S,
        settle_s: float = 1.0,
        stale_s: float = DECAY_S,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._store = store
        self._backends = backends
        self._measured = measured  # the capacity gauge
        self.bucket_s = bucket_s
        self.settle_s = settle_s  # a bucket is read once its replicas have flushed it
        self.stale_s = stale_s
        self._clock = clock
        self._sleep = sleep
        self._last_read: float | None = None

    def span(self, now: float) -> range:
        """The complete, settled buckets read at ``now``: the newest ``HORIZON_BUCKETS``."""
        newest = int((now - self.settle_s) // self.bucket_s) - 1
        return range(newest - HORIZON_BUCKETS + 1, newest + 1)

    async def refresh(self) -> None:
        now = self._clock()
        span = self.span(now)
        names = sorted({window_name(k) for k in span})
        try:
            fields = await self._store.sum_counts(names)
        except StoreUnavailable:
            if self._last_read is None or now - self._last_read > self.stale_s:
                for backend in self._backends():
                    meter = backend.price.meter
                    if meter is not None:
                        meter.fleet_stale()
                        if meter.capacity is not None:
                            self._measured(backend, meter.capacity)
            return
        self._last_read = now
        rates: dict[str, list[tuple[int, float]]] = {}
        for field, milli in fields.items():
            bucket, sep, name = field.partition(_SEP)
            if not sep or not bucket.lstrip("-").isdigit():
                continue
            k = int(bucket)
            if k in span:
                rates.setdefault(name, []).append((k, milli / MILLI / self.bucket_s))
        for backend in self._backends():
            meter = backend.price.meter
            if meter is None:
                continue
            for k, rate in sorted(rates.get(backend.name, ())):
                meter.fleet(k, rate, self.bucket_s)
            if meter.capacity is not None:
                self._measured(backend, meter.capacity)

    async def run(self) -> None:
        """Refresh every ``bucket_s`` until cancelled; a failed refresh is logged, not fatal."""
        while True:
            await self._sleep(self.bucket_s)
            try:
                await self.refresh()
            except Exception:
                log.exception("fleet capacity: refresh failed")
