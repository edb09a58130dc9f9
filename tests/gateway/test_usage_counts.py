from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.control.usage import MAX_WINDOW_S, UsageRow, UsageTap, minutes, read_usage, windows
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
    assert (usage.start, usage.end) == (6000 - 3600, 6060)  # every minute the hour touches
    # a one-minute window at a minute's first second still sees the minute before
    assert (await read_usage(store, 60, now=now)).totals.requests == 3
    assert (await read_usage(store, 60, now=now + 120)).rows == []


async def test_a_window_is_rounded_up_to_whole_minutes(store: EmbeddedStore) -> None:
    usage = await read_usage(store, 61, now=6030.0)
    assert (usage.start, usage.end, usage.rows) == (5940, 6060, [])


@pytest.mark.parametrize("window", [0, -60, 59, MAX_WINDOW_S + 1])
async def test_a_window_outside_the_bounds_is_refused(store: EmbeddedStore, window: int) -> None:
    with pytest.raises(ValueError, match="from 60 to 86400"):
        await read_usage(store, window)


async def test_any_configured_name_reads_back_as_it_was_counted(store: EmbeddedStore) -> None:
    # Tenant and model names are free text in the config: the field separator, a
    # % (the escape) or a / in one must neither lose nor mix up its counts.
    now = 6000.0
    tap = UsageTap(store, clock=lambda: now)
    names = [("a\x1fb", "m"), ("a", "b\x1fm"), ("50%", "meta/llama-3%1F"), ("a", "b")]
    for tenant, model in names:
        tap.count(tenant, model, 1, 1, 0.0)
    await tap.flush()
    usage = await read_usage(store, 60, now=now)
    assert sorted((r.tenant, r.model, r.requests) for r in usage.rows) == sorted(
        (t, m, 1) for t, m in names
    )


async def test_a_day_sums_every_minute_and_nothing_older(store: EmbeddedStore) -> None:
    minute = 100_000
    clock = [0.0]
    tap = UsageTap(store, clock=lambda: clock[0])
    for m in range(minute - 1441, minute + 1):  # the first ends before the day starts
        clock[0] = m * 60.0 + 59.9
        tap.count("t", "m", 2, 1, 1e-9)
    await tap.flush()
    usage = await read_usage(store, MAX_WINDOW_S, now=minute * 60 + 30)
    assert usage.rows == [UsageRow("t", "m", 1441, 2882, 1441, 1441)]
    assert (usage.start, usage.end) == ((minute - 1440) * 60, (minute + 1) * 60)


async def test_a_request_seconds_ago_is_in_the_last_minute_after_the_minute_turns(
    store: EmbeddedStore,
) -> None:
    clock = [6059.0]
    tap = UsageTap(store, clock=lambda: clock[0])
    tap.count("t", "m", 1, 1, 0.0)  # at 01:40:59
    await tap.flush()
    for now in (6060.0, 6061.0, 6119.0):  # asked at 01:41:00, :01 and :59
        assert (await read_usage(store, 60, now=now)).totals.requests == 1


@given(start=st.integers(0, 10**7), length=st.integers(1, MAX_WINDOW_S // 60 + 1))
def test_the_windows_read_cover_each_minute_of_a_span_exactly_once(start: int, length: int) -> None:
    span = range(start, start + length)
    covered: list[int] = []
    for name in windows(span):
        kind, _, n = name.partition("/")
        covered += range(int(n) * 60, int(n) * 60 + 60) if kind == "usage-hour" else [int(n)]
    assert covered == list(span)
    assert len(windows(span)) <= length // 60 + 118  # a day: 24 hours + two partial ends


async def test_a_long_window_reads_the_hours_the_tap_rolled_up(store: EmbeddedStore) -> None:
    now = 36_000.0  # 10:00
    clock = [now - 3 * 3600]
    tap = UsageTap(store, clock=lambda: clock[0])
    for _ in range(3 * 60 + 1):  # a request every minute for three hours
        tap.count("acme", "m1", 1, 2, 0.0)
        clock[0] += 60
    await tap.flush()
    assert set(windows(minutes(3 * 3600, now))) & {"usage-hour/7", "usage-hour/8", "usage-hour/9"}
    usage = await read_usage(store, 3 * 3600, now=now)
    assert usage.totals == UsageRow("", "", 181, 181, 362, 0)
    # the same through minute windows only: the hour windows hold the same counts
    assert await store.sum_counts([f"usage/{m}" for m in minutes(3 * 3600, now)]) == (
        await store.sum_counts(windows(minutes(3 * 3600, now)))
    )
