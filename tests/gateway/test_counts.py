"""PendingCounts: the one counter-window flusher of the canary tap and the shadow mirror."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, cast

import pytest

from gateway.control.counts import PendingCounts
from gateway.store import Store, StoreUnavailable


class Recording:
    """The store's ``add_counts`` alone, failing as told."""

    def __init__(self) -> None:
        self.added: list[tuple[str, dict[str, int]]] = []
        self.fail: list[BaseException] = []

    async def add_counts(self, name: str, counts: Mapping[str, int], ttl_s: float = 0) -> None:
        if self.fail:
            raise self.fail.pop(0)
        self.added.append((name, dict(counts)))


def counts(store: Recording, **kw: Any) -> PendingCounts:
    return PendingCounts(cast(Store, store), "test", **kw)


async def test_a_store_outage_keeps_a_bounded_backlog_for_the_next_flush() -> None:
    store = Recording()
    pending = counts(store, max_windows=2)
    for name in ("w1", "w2", "w3"):
        pending.window(name)["requests"] += 1
    store.fail = [StoreUnavailable("down")] * 3
    await pending.flush()
    pending.window("w1")["requests"] += 1  # counted meanwhile
    await pending.flush()
    assert store.added == [("w1", {"requests": 2}), ("w2", {"requests": 1})]  # w3: over the bound


async def test_the_loop_survives_any_flush_error_and_flushes_once_more_when_stopped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Recording()
    store.fail = [RuntimeError("a bug in the store")]
    ticks: asyncio.Queue[None] = asyncio.Queue()
    slept = 0

    async def sleep(_: float) -> None:
        nonlocal slept
        slept += 1
        await ticks.get()

    async def flush_once() -> None:
        before = slept
        ticks.put_nowait(None)
        async with asyncio.timeout(5):
            while slept == before:  # the loop flushed and sleeps again
                await asyncio.sleep(0)

    pending = counts(store, sleep=sleep)
    task = asyncio.create_task(pending.run())
    pending.window("w")["requests"] += 1
    await flush_once()  # fails and is logged: that window's sample is lost
    pending.window("w")["requests"] += 1
    await flush_once()  # the loop goes on
    pending.window("w")["errors"] += 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.added == [("w", {"requests": 1}), ("w", {"errors": 1})]
    assert "test counters: flush failed" in caplog.text


async def test_a_rollup_window_gets_each_count_once_even_after_an_outage() -> None:
    store = Recording()
    pending = counts(store, rollup=lambda w: "hour" if w.startswith("min") else None)
    pending.window("min1")["requests"] += 1
    pending.window("min2")["requests"] += 2
    store.fail = [StoreUnavailable("down")] * 3  # min1, min2 and hour all fail
    await pending.flush()
    pending.window("min2")["requests"] += 4  # counted meanwhile
    await pending.flush()
    assert sorted(store.added) == [
        ("hour", {"requests": 7}),  # 1 + 2 rolled up once, then the new 4
        ("min1", {"requests": 1}),
        ("min2", {"requests": 6}),
    ]
