"""Counters per store window, summed in memory and added to the store in the background.

The canary tap and the shadow mirror both count per request (requests, errors,
TTFT buckets, agreements) into windows the store sums across the fleet. The
request path only bumps a ``Counter``; :meth:`PendingCounts.run` adds the sums
every ``flush_s``. While the store is away a bounded backlog of windows is kept
and retried (``max_windows``): a longer outage costs samples, never memory. Any
other failure of a flush is logged and counting goes on: a lost flush costs a
window's sample, not the loop.

``rollup`` names a coarser window each window's counts are also added to at
flush time (usage minutes into hours), so a long read sums few windows and the
request path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import Awaitable, Callable

from gateway.store import Store, StoreUnavailable
from gateway.store.base import COUNTS_TTL_S

log = logging.getLogger("meridian.counts")


class PendingCounts:
    __slots__ = (
        "_backlog",
        "_pending",
        "_rollup",
        "_sleep",
        "_store",
        "flush_s",
        "max_windows",
        "name",
        "ttl_s",
    )

    def __init__(
        self,
        store: Store,
        name: str,
        *,
        flush_s: float = 1.0,
        max_windows: int = 64,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rollup: Callable[[str], str | None] = lambda _window: None,
        ttl_s: float = COUNTS_TTL_S,
    ) -> None:
        self._store = store
        self.name = name  # for the log: "canary", "shadow"
        self.flush_s = flush_s
        self.max_windows = max_windows
        self._sleep = sleep
        self._rollup = rollup
        self.ttl_s = ttl_s  # how long the store keeps a window after its last add
        self._pending: dict[str, Counter[str]] = {}
        # Windows whose add failed, already rolled up: retried as they are.
        self._backlog: dict[str, Counter[str]] = {}

    def window(self, name: str) -> Counter[str]:
        """The in-memory counters of window ``name``, to update in place."""
        return self._pending.setdefault(name, Counter())

    async def flush(self) -> None:
        pending, self._pending = self._pending, {}
        for window, counts in list(pending.items()):
            coarse = self._rollup(window)
            if coarse is not None:
                pending.setdefault(coarse, Counter()).update(counts)
        backlog, self._backlog = self._backlog, {}
        for window, counts in pending.items():
            backlog.setdefault(window, Counter()).update(counts)
        for window, counts in backlog.items():
            try:
                await self._store.add_counts(window, counts, self.ttl_s)
            except StoreUnavailable:
                if window in self._backlog or len(self._backlog) < self.max_windows:
                    self._backlog.setdefault(window, Counter()).update(counts)

    async def run(self) -> None:
        """Flush every ``flush_s`` until cancelled, then once more if the store answers."""
        try:
            while True:
                await self._sleep(self.flush_s)
                try:
                    await self.flush()
                except Exception:
                    log.exception("%s counters: flush failed", self.name)
        finally:
            with contextlib.suppress(StoreUnavailable):
                await self.flush()  # what this replica counted still counts
