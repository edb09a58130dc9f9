"""A discovered backend has its breaker, ejection and attempt series from the moment it joins,
as a configured one has from start: alerts and dashboards see it before its first change."""

from __future__ import annotations

import aiohttp

from tests.conftest import EmulatorFactory, GatewayFactory
from tests.gateway.test_metrics_requests import scrape
from tests.regions.test_discovery_gateway import Scripted, attach, config


async def test_discovered_backends_get_their_series_when_they_join(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    static, found = await emulators(), await emulators()
    gw = await gateways(config(static.url))
    source = Scripted()
    discovery = await attach(gw, source)
    name = source.instance("gpu-1", found)
    await discovery.refresh()
    async with aiohttp.ClientSession() as http:
        samples = await scrape(http, gw.admin_url)
    series = {(n, labels.get("backend")): v for n, labels, v in samples}
    for metric in ("meridian_breaker_state", "meridian_ejections_total"):
        assert series[(metric, "fra")] == 0  # the configured backend, from start
        assert series[(metric, name)] == 0  # the discovered one, from discovery
    assert (
        "meridian_backend_attempts_total",
        name,
    ) in series


async def test_rediscovery_keeps_an_open_breaker_reading_open(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """Pre-creating a series never resets one that already moved."""
    static, found = await emulators(), await emulators()
    gw = await gateways(config(static.url))
    source = Scripted()
    discovery = await attach(gw, source)
    name = source.instance("gpu-1", found)
    await discovery.refresh()
    assert gw.runtime is not None
    spec = next(s for s in discovery.live if s.name == name)
    gw.runtime.metrics.breaker.labels(name, spec.region.name).set(2)
    source.instance("gpu-1", static)  # the same name at a new address: re-added
    await discovery.refresh()
    async with aiohttp.ClientSession() as http:
        samples = await scrape(http, gw.admin_url)
    states = {labels["backend"]: v for n, labels, v in samples if n == "meridian_breaker_state"}
    assert states[name] == 2
