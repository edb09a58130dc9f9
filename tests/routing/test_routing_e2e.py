"""Routing through a real gateway and emulators, with explicit statistical tolerances."""

from __future__ import annotations

import asyncio
import time
from collections import Counter

import aiohttp

from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config

REGIONS = {"aws:eu-west-1": ["EU"], "onprem:fra1": ["EU"]}


async def _serve(s: aiohttp.ClientSession, url: str, n: int, concurrency: int = 4) -> Counter[str]:
    served: Counter[str] = Counter()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    queue = list(range(n))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            async with s.post(
                url + "/v1/chat/completions",
                json={**body, "user": f"u{i}"},
                headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
            ) as r:
                assert r.status == 200
                await r.read()
                served[r.headers["x-meridian-backend"]] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return served


async def test_faster_region_takes_most_traffic_and_loses_it_within_seconds(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    near = await emulators(ttft_s=0.005)
    far = await emulators(ttft_s=0.06)
    gw = await gateways(
        gateway_config(
            [("near", "onprem:fra1", "v1", near.url), ("far", "aws:eu-west-1", "v1", far.url)],
            regions=REGIONS,
            failover={"hedge": False, "health_checks": {"enabled": False}},
        )
    )
    async with aiohttp.ClientSession() as s:
        await _serve(s, gw.http_url, 20)  # warm-up: both get latency samples
        served = await _serve(s, gw.http_url, 100)
        assert served["near"] >= 80, served  # tolerance: ≥ 80% to the faster region
        near.faults.update({"ttft_s": 0.2})  # the near region degrades
        started = time.monotonic()
        moved = Counter[str]()
        while time.monotonic() - started < 5.0:
            batch = await _serve(s, gw.http_url, 10)
            moved = batch
            if batch["far"] >= 8:
                break
        elapsed = time.monotonic() - started
    assert moved["far"] >= 8, moved  # traffic moved to the other region ...
    assert elapsed < 5.0  # ... within seconds (peak-EWMA takes the new peak at once)


async def test_raising_the_cost_weight_moves_traffic_to_the_cheaper_region(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    cheap = await emulators(ttft_s=0.02)
    dear = await emulators(ttft_s=0.01)
    rows = [
        (
            "cheap",
            "onprem:fra1",
            "v1",
            cheap.url,
            {"price": {"input_per_m": 0.1, "output_per_m": 0.2}},
        ),
        (
            "dear",
            "aws:eu-west-1",
            "v1",
            dear.url,
            {"price": {"input_per_m": 2.0, "output_per_m": 6.0}},
        ),
    ]
    results = {}
    for weight in (0.0, 1.0):
        gw = await gateways(
            gateway_config(
                rows,
                regions=REGIONS,
                tenant={"cost_weight": weight},
                failover={"hedge": False, "health_checks": {"enabled": False}},
            )
        )
        async with aiohttp.ClientSession() as s:
            await _serve(s, gw.http_url, 20)
            results[weight] = await _serve(s, gw.http_url, 60)
    assert results[0.0]["dear"] > results[0.0]["cheap"], results  # latency alone: the faster one
    assert results[1.0]["cheap"] >= 54, results  # cost weighted: ≥ 90% to the cheaper region
