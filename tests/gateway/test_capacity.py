"""A per-hour backend's capacity measured across the fleet (issue 18 item 4): each
replica counts its tokens per wall-clock bucket into the store, and every replica
prices with the fleet's sum, not its own share."""

from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.cli.main import main
from gateway.config.model import Config
from gateway.control import capacity
from gateway.control.capacity import CapacityFeed, CapacityTap
from gateway.store import EmbeddedStore, RedisStore
from regions.inventory import BackendSpec, Price, ProviderKind, Region
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
    wait_for,
)
from tests.gateway.control_kit import redis_config
from tests.gateway.test_metrics_requests import scrape, total
from tests.redis_server import RedisServer

GAUGE = "meridian_backend_capacity_tokens_per_second"


def spec(price: Price) -> BackendSpec:
    region = Region("onprem:fra1", frozenset({"EU"}))
    return BackendSpec("fra", "m", "v1", region, ProviderKind.VLLM, "http://x", "s", price=price)


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def test_two_replicas_counts_sum_in_the_store_and_feed_the_meter(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path / "store.db"))
    await store.open()
    clock = Clock(1000.0)
    a, b = (CapacityTap(store, bucket_s=5.0, clock=clock) for _ in range(2))
    a.count("fra", 1000, 1000.0, 1005.0)  # 200 tokens/s on each replica
    b.count("fra", 1000, 1000.0, 1005.0)
    b.count("fra", 600, 1002.5, 1007.5)  # 300 tokens in this bucket, 300 in the next
    b.count("api", 10_000, 1000.0, 1005.0)  # per token: no meter, not fed
    await a.flush()
    await b.flush()
    backend = spec(Price.hourly(3.6))
    seen: list[float] = []
    feed = CapacityFeed(
        store, lambda: [backend], lambda _b, c: seen.append(c), bucket_s=5.0, clock=clock
    )
    meter = backend.price.meter
    assert meter is not None
    clock.now = 1010.5  # bucket 201 (1005-1010) is complete, not yet settled
    await feed.refresh()
    assert meter.capacity == pytest.approx(2300 / 5) and meter.source == "fleet"
    clock.now = 1011.0
    await feed.refresh()  # the next bucket's 300 tokens: 60 tokens/s, below the peak
    assert meter.capacity == pytest.approx(460.0 * math.exp(-5 / 600))
    assert seen and seen[-1] == meter.capacity
    await feed.refresh()  # read again: nothing changes, nothing decays twice
    assert seen[-1] == seen[-2]
    await store.close()


def test_a_long_request_is_spread_over_its_buckets_in_milli_tokens(tmp_path: Path) -> None:
    tap = CapacityTap(EmbeddedStore(str(tmp_path / "s.db")), bucket_s=5.0)
    tap.count("fra", 10, 0.0, 15.0)
    assert tap.pending() == {"capacity/0": {"0\x1ffra": 3333, "1\x1ffra": 3333, "2\x1ffra": 3333}}


def test_counting_a_request_costs_well_under_a_few_microseconds(tmp_path: Path) -> None:
    tap = CapacityTap(EmbeddedStore(str(tmp_path / "s.db")), bucket_s=5.0)
    n = 20_000
    start = time.perf_counter()
    for i in range(n):
        tap.count("fra", 200, 1000.0 + i * 0.01, 1030.0 + i * 0.01)  # 30 s streams
    per_request = (time.perf_counter() - start) / n
    assert per_request < 3e-6, per_request  # an append: ~0.2 µs here; spread at flush time
    assert sum(tap.pending()["capacity/16"].values()) > 0


async def test_a_store_that_goes_away_leaves_the_fleet_figure_then_the_local_one(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix="cap")
    await store.open()
    clock = Clock(2000.0)
    tap = CapacityTap(store, bucket_s=5.0, clock=clock)
    tap.count("fra", 5000, 2000.0, 2005.0)  # the fleet: 1000 tokens/s
    await tap.flush()
    backend = spec(Price.hourly(3.6))
    meter = backend.price.meter
    assert meter is not None
    meter.observe(500, 0.0, 5.0)  # this replica alone: 100 tokens/s
    feed = CapacityFeed(
        store, lambda: [backend], lambda _b, _c: None, bucket_s=5.0, stale_s=60.0, clock=clock
    )
    clock.now = 2011.0
    await feed.refresh()
    assert meter.capacity == pytest.approx(1000.0) and meter.source == "fleet"
    redis_server.kill()
    clock.now = 2050.0
    await feed.refresh()  # no error; the last fleet figure stands a while
    assert meter.capacity == pytest.approx(1000.0) and meter.source == "fleet"
    clock.now = 2072.0
    await feed.refresh()  # past stale_s: this replica's own measure
    assert meter.capacity == pytest.approx(100.0) and meter.source == "measured"
    await store.close()


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


async def explain(s: aiohttp.ClientSession, admin_url: str) -> dict[str, Any]:
    async with s.get(
        admin_url + "/admin/v1/route/explain",
        params={"model": MODEL, "tenant": "eu"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as r:
        assert r.status == 200
        first: dict[str, Any] = (await r.json())["candidates"][0]
        return first


async def stream_for(s: aiohttp.ClientSession, url: str, until: float) -> int:
    """Requests one after another until ``until``; the completion tokens they used."""
    tokens = 0
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
    while time.monotonic() < until:
        async with s.post(
            url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {EU_KEY}"}
        ) as r:
            assert r.status == 200, await r.text()
            tokens += (await r.json())["usage"]["completion_tokens"]
    return tokens


async def test_two_replicas_on_redis_price_with_the_fleets_capacity(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(capacity, "FLEET_BUCKET_S", 1.0)  # read when the gateways attach
    fra = await emulators(itl_s=0.01)  # a stream: ~100 tokens/s
    config = redis_config(
        [("fra", "onprem:fra1", "v1", fra.url, {"price": {"per_hour": 3.6}})],
        redis_server,
        prefix="cap",
        store={"counts_flush_s": 0.05},
        failover={"hedge": False},
    )
    await two_replicas_price_with_the_fleets_capacity(gateways, config, capsys)


async def test_workers_sharing_an_embedded_store_file_price_with_the_fleets_capacity(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """``--workers 2`` on one node: the workers share ``store.path``, one fleet."""
    monkeypatch.setattr(capacity, "FLEET_BUCKET_S", 1.0)
    fra = await emulators(itl_s=0.01)
    config = gateway_config(
        [("fra", "onprem:fra1", "v1", fra.url, {"price": {"per_hour": 3.6}})],
        store={"path": str(tmp_path / "node.db"), "counts_flush_s": 0.05},
        failover={"hedge": False},
    )
    await two_replicas_price_with_the_fleets_capacity(gateways, config, capsys)


async def two_replicas_price_with_the_fleets_capacity(
    gateways: GatewayFactory, config: Config, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = await gateways(config), await gateways(config)
    seconds = 3.0
    async with aiohttp.ClientSession() as s:
        until = time.monotonic() + seconds
        sent = await asyncio.gather(
            *(stream_for(s, gw.http_url, until) for gw in (a, b) for _ in range(3))
        )
        fleet_rate = sum(sent) / seconds  # what the backend produced, both replicas together
        meters = [
            runtime_of(gw).snapshot.models[MODEL].backends["v1"][0].price.meter for gw in (a, b)
        ]
        shares = [m.local_measured or 0.0 for m in meters if m is not None]
        # The old figure: each replica's own share, at most about half the fleet's.
        assert all(share < 0.65 * fleet_rate for share in shares), (shares, fleet_rate)

        async def gauges() -> list[float]:
            return [total(await scrape(s, gw.admin_url), GAUGE, backend="fra") for gw in (a, b)]

        async def fleet_read() -> None:
            while min(await gauges()) < 0.8 * fleet_rate:
                await asyncio.sleep(0.05)

        await asyncio.wait_for(fleet_read(), 10)
        seen = await gauges()
        explained = [await explain(s, gw.admin_url) for gw in (a, b)]
        argv = ["route", "explain", MODEL, "--tenant", "eu", "--admin-url", b.admin_url]
        code, table = await asyncio.to_thread(cli, [*argv, "--token", ADMIN_TOKEN], capsys)
    for gauge, shown in zip(seen, explained, strict=True):
        assert 0.8 * fleet_rate <= gauge <= 1.5 * fleet_rate, (gauge, fleet_rate)
        assert shown["capacity_source"] == "fleet"
        assert shown["capacity_tokens_per_s"] >= 0.8 * fleet_rate
    assert seen[0] == pytest.approx(seen[1], rel=0.1)  # one fleet, one figure
    assert code == 0 and "(fleet)" in table


async def test_no_store_answering_leaves_the_local_figure_and_no_error(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    redis_server: RedisServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(capacity, "FLEET_BUCKET_S", 0.2)  # the feed runs (and fails) meanwhile
    fra = await emulators(itl_s=0.005)
    config = redis_config(
        [("fra", "onprem:fra1", "v1", fra.url, {"price": {"per_hour": 3.6}})],
        redis_server,
        prefix="cap2",
        store={"counts_flush_s": 0.05, "probe_s": 0.1},
    )
    gw = await gateways(config)
    redis_server.kill()
    meter = runtime_of(gw).snapshot.models[MODEL].backends["v1"][0].price.meter
    assert meter is not None
    async with aiohttp.ClientSession() as s:
        await stream_for(s, gw.http_url, time.monotonic() + 0.5)
        await wait_for(lambda: meter.local_measured is not None)
        local = meter.local_measured
        shown = await explain(s, gw.admin_url)
        gauge = total(await scrape(s, gw.admin_url), GAUGE, backend="fra")
    assert shown["capacity_source"] == "measured"
    assert shown["capacity_tokens_per_s"] == pytest.approx(local)
    assert gauge == pytest.approx(local)
    assert not [r for r in caplog.records if r.name == "meridian.capacity"]


async def test_a_fresh_meter_after_a_reload_is_fed_the_last_two_minutes(tmp_path: Path) -> None:
    store = EmbeddedStore(str(tmp_path / "store.db"))
    await store.open()
    clock = Clock(3000.0)
    tap = CapacityTap(store, bucket_s=5.0, clock=clock)
    tap.count("fra", 4000, 3000.0, 3005.0)  # 800 tokens/s
    await tap.flush()
    current = [spec(Price.hourly(3.6))]
    feed = CapacityFeed(store, lambda: current, lambda _b, _c: None, bucket_s=5.0, clock=clock)
    clock.now = 3011.0
    await feed.refresh()
    current = [spec(Price.hourly(3.6, tokens_per_s=100.0))]  # a reload: new figures, new meter
    meter = current[0].price.meter
    assert meter is not None and meter.capacity == 100.0
    clock.now = 3100.0  # still within the horizon
    await feed.refresh()
    assert meter.capacity == pytest.approx(800.0) and meter.source == "fleet"
    await store.close()
