from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.control.usage import UsageRow, UsageTap, read_usage
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
    rows = await read_usage(store, 3600, now=now)
    assert rows == [
        UsageRow("acme", "m1", 2, 13, 7, 0.003),
        UsageRow("beta", "m1", 1, 7, 1, 0.0),
    ]
    # a one-minute window sees only the current minute
    assert await read_usage(store, 60, now=now) == [UsageRow("acme", "m1", 1, 10, 5, 0.002)]


async def test_a_non_positive_window_is_refused(store: EmbeddedStore) -> None:
    with pytest.raises(ValueError, match="positive"):
        await read_usage(store, 0)
