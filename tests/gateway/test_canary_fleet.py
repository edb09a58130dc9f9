"""Canaries across two gateways sharing a real Redis, under live traffic.

Intervals are 0.2 s and the minimum sample small, so a whole canary runs in
about a second; counters flush every 50 ms.
"""

from __future__ import annotations

import asyncio
import re
import time

import aiohttp

from gateway.app.server import Gateway
from gateway.canary.plan import Phase
from tests.conftest import EmulatorFactory, GatewayFactory, wait_for
from tests.gateway.control_kit import Load, admin, chat, redis_config
from tests.redis_server import RedisServer

C = "/admin/v1/canary/test-model"
FAST = {"counts_flush_s": 0.05, "lease_ttl_s": 0.6}
PLAN = {"to": "v2", "steps": [20, 50, 100], "interval_s": 0.2, "min_requests": 5}


async def _fleet(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis: RedisServer, **v2: object
) -> list[Gateway]:
    em1, em2 = await emulators(), await emulators(**v2)
    rows = [("us", "aws:us-east-1", "v1", em1.url), ("eu", "aws:eu-west-1", "v2", em2.url)]
    config = redis_config(
        rows, redis, versions={"v1": 100, "v2": 0}, store=FAST, failover={"hedge": False}
    )
    return [await gateways(config), await gateways(config)]


def _phase(gw: Gateway) -> Phase | None:
    assert gw.runtime is not None and gw.runtime.control is not None
    canary = gw.runtime.control.state.canaries.get("test-model")
    return None if canary is None else canary.phase


def _v2(gw: Gateway) -> int:
    assert gw.runtime is not None
    return gw.runtime.snapshot.models["test-model"].split["v2"]


async def test_a_healthy_canary_reaches_100_even_when_its_controller_dies(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    gws = await _fleet(emulators, gateways, redis_server)
    controllers = [g.runtime.control.controller for g in gws]  # type: ignore[union-attr]
    await wait_for(lambda: sum(c.leader for c in controllers) == 1)  # type: ignore[union-attr]
    leader = next(g for g, c in zip(gws, controllers, strict=True) if c.leader)  # type: ignore[union-attr]
    other = next(g for g in gws if g is not leader)
    async with aiohttp.ClientSession() as s, Load([other], workers=3) as load:
        status, body = await admin(s, other, "POST", C, PLAN, actor="ann")
        assert status == 200 and body["weight"] == 20
        # Deadlines, not pacing: a step needs min_requests of load, slower on a busy box.
        await wait_for(lambda: _v2(other) == 50, timeout=30)
        await leader.stop(grace=0.1)  # the lease lapses; the other replica takes over
        await wait_for(lambda: _phase(other) is Phase.SUCCEEDED, timeout=30)
        assert _v2(other) == 100
        await wait_for(lambda: load.versions["v2"] > 0)
        _, status_body = await admin(s, other, "GET", C)
    assert [h["weight"] for h in status_body["history"]] == [20, 50, 100]
    assert [h["actor"] for h in status_body["history"]] == ["ann", *["canary-controller"] * 2]
    assert load.failures == []


async def test_a_failing_canary_is_rolled_back_automatically(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    gws = await _fleet(emulators, gateways, redis_server)
    async with aiohttp.ClientSession() as s, Load(gws, workers=3):
        v2 = gws[0].runtime.config.backends[1].url  # type: ignore[union-attr]
        # 5 % of v2's requests fail (every 20th); retries on v1 hide them from clients
        async with s.post(v2 + "/_emulator/faults", json={"status": 500, "rate": 0.05}) as r:
            assert r.status == 200
        status, _ = await admin(s, gws[0], "POST", C, {**PLAN, "min_requests": 60})
        assert status == 200
        await wait_for(lambda: all(_phase(g) is Phase.ROLLED_BACK for g in gws), timeout=15)
        assert [_v2(g) for g in gws] == [0, 0]
        _, body = await admin(s, gws[1], "GET", C)
        seen = re.match(r"rolled back: error rate ([\d.]+)% on v2 vs 0\.0% on v1", body["last"])
        assert seen is not None and 2 < float(seen[1]) < 10  # one window's share of 5 %
        _, audit = await admin(s, gws[1], "GET", "/admin/v1/audit")
        assert "canary.rollback" in {e["action"] for e in audit["entries"]}
        for _ in range(5):  # and traffic is whole again
            status, headers, _ = await chat(s, gws[1])
            assert status == 200 and headers["x-meridian-version"] == "v1"


async def test_abort_returns_to_0_at_once_everywhere(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    gws = await _fleet(emulators, gateways, redis_server)
    async with aiohttp.ClientSession() as s:
        status, _ = await admin(s, gws[0], "POST", C, {**PLAN, "interval_s": 3600})
        assert status == 200
        await wait_for(lambda: _v2(gws[1]) == 20)
        status, body = await admin(s, gws[1], "POST", C + "/abort")
        assert status == 200 and body["phase"] == "aborted"
        assert _v2(gws[1]) == 0  # the replica that took the call, before it answered
        await wait_for(lambda: _v2(gws[0]) == 0, timeout=1.0)


async def test_canary_metrics_are_summed_across_replicas(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    gws = await _fleet(emulators, gateways, redis_server)
    async with aiohttp.ClientSession() as s:
        await admin(s, gws[0], "POST", C, {**PLAN, "interval_s": 3600, "steps": [50, 100]})
        await wait_for(lambda: _v2(gws[1]) == 50)
        for i in range(12):
            status, _, _ = await chat(s, gws[i % 2])
            assert status == 200

        deadline = time.monotonic() + 5
        while True:  # each replica flushes its counters every 50 ms
            _, body = await admin(s, gws[0], "GET", C)
            counted = {w["version"]: w["requests"] for w in body["window"].values()}
            if sum(counted.values()) == 12 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert sum(counted.values()) == 12 and counted["v2"] > 0 and counted["v1"] > 0
