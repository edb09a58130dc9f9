from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.control.usage import MAX_WINDOW_S, UsageRow, UsageTap, read_usage
from gateway.store import EmbeddedStore


@pytest.fixture
async def store() -> AsyncIterator[EmbeddedStore]:
    s = EmbeddedStore()
    await s.open()
    yield s
    await s.close()


async def test_two_replicas_counts_sum_per_tenant_and_model(store: EmbeddedStore) -> None:
    now = 6000.0
    a, b = UsageTap(store, clock=lambda: now), UsageTap(store, clock=lambda: now - 60)
    a.count("acme", "m1", 10, 5, 0.002)
    b.count("acme", "m1", 3, 2, 0.001)
    b.count("beta", "m1", 7, 1, 0.0)
    await a.flush()
    await b.flush()
    usage = await read_usage(store, 3600, now=now)
    assert usage.rows == [
        UsageRow("acme", "m1", 2, 13, 7, 3_000_000),
        UsageRow("beta", "m1", 1, 7, 1, 0),
    ]
    assert usage.totals == UsageRow("", "", 3, 20, 8, 3_000_000)
    assert usage.rows[0].spend_usd == 0.003
    assert (usage.start, usage.end) == (6000 - 3540, 6060)  # 60 whole minutes, this one last
    # a one-minute window sees only the current minute
    assert (await read_usage(store, 60, now=now)).rows == [
        UsageRow("acme", "m1", 1, 10, 5, 2_000_000)
    ]


async def test_a_window_is_rounded_up_to_whole_minutes(store: EmbeddedStore) -> None:
    usage = await read_usage(store, 61, now=6030.0)
    assert (usage.start, usage.end, usage.rows) == (5940, 6060, [])


@pytest.mark.parametrize("window", [0, -60, 59, MAX_WINDOW_S + 1])
async def test_a_window_outside_the_bounds_is_refused(store: EmbeddedStore, window: int) -> None:
    with pytest.raises(ValueError, match="from 60 to 86400"):
        await read_usage(store, window)
