"""The control plane with a real Redis: propagation, fail-static, shared health."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import aiohttp
import orjson

from tests.conftest import EmulatorFactory, GatewayFactory, runtime_of, wait_for
from tests.gateway.control_kit import Load, admin, chat, redis_config
from tests.redis_server import RedisServer

W = "/admin/v1/weights/test-model"


async def test_weights_set_reaches_every_replica_fast(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em1, em2 = await emulators(), await emulators()
    rows = [("a", "aws:us-east-1", "v1", em1.url), ("b", "aws:eu-west-1", "v2", em2.url)]
    config = redis_config(rows, redis_server, versions={"v1": 100, "v2": 0})
    gws = [await gateways(config) for _ in range(3)]
    delays = []
    async with aiohttp.ClientSession() as s:
        for i in range(20):
            split = {"v1": 100 - i, "v2": i + 1}
            sent = time.perf_counter()  # from the operator's call to every replica's swap
            status, body = await admin(s, gws[i % 3], "PUT", W, {"split": split})
            assert status == 200, body
            revision = body["revision"]
            await wait_for(
                lambda rev=revision: all(  # type: ignore[misc]
                    g.runtime is not None and g.runtime.snapshot.revision >= rev for g in gws
                ),
                timeout=2.0,
                interval=0.0002,
            )
            delays.append(time.perf_counter() - sent)
            for g in gws:
                assert g.runtime is not None
                assert dict(g.runtime.snapshot.models["test-model"].split) == split
        p99 = statistics.quantiles(delays, n=100, method="inclusive")[98]
        print(
            f"\nweights propagation to 3 replicas over {len(delays)} changes: "
            f"p50 {statistics.median(delays) * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
            f"max {max(delays) * 1000:.2f} ms"
        )
        assert p99 < 0.5
        _, audit = await admin(s, gws[0], "GET", "/admin/v1/audit?limit=3", actor="ann")
        assert [e["action"] for e in audit["entries"]] == ["weights.set"] * 3
        assert audit["entries"][-1]["new"] == {"v1": 81, "v2": 20}


async def test_redis_killed_under_load_nothing_fails_then_replicas_reconverge(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em1, em2 = await emulators(), await emulators()
    rows = [("a", "aws:us-east-1", "v1", em1.url), ("b", "aws:eu-west-1", "v2", em2.url)]
    config = redis_config(rows, redis_server, versions={"v1": 100, "v2": 0})
    gws = [await gateways(config), await gateways(config)]
    async with aiohttp.ClientSession() as s, Load(gws, workers=4) as load:
        status, body = await admin(s, gws[0], "PUT", W, {"split": {"v1": 50, "v2": 50}})
        assert status == 200
        await wait_for(lambda: load.total > 20)
        redis_server.kill()

        async def readyz(gw: object) -> tuple[int, dict[str, object]]:
            async with s.get(gw.http_url + "/readyz") as r:  # type: ignore[attr-defined]
                return r.status, await r.json()

        async def all_say(word: str) -> bool:
            answers = [await readyz(g) for g in gws]
            return all(st == 200 and d["control_plane"] == word for st, d in answers)

        deadline = time.monotonic() + 5
        while not await all_say("degraded"):
            assert time.monotonic() < deadline, "replicas never reported degraded"
        served_while_down = load.total
        status, body = await admin(s, gws[1], "PUT", W, {"split": {"v1": 10, "v2": 90}})
        assert status == 503 and "unreachable" in body["error"]["message"]
        async with s.get(
            gws[0].admin_url + "/metrics", headers={"Authorization": "Bearer test-admin-token"}
        ) as r:
            assert "meridian_control_plane_degraded 1.0" in await r.text()
        await wait_for(lambda: load.total > served_while_down + 20)
        redis_server.restart()
        deadline = time.monotonic() + 10
        while not await all_say("ok"):
            assert time.monotonic() < deadline, "replicas never came back"
        status, body = await admin(s, gws[1], "PUT", W, {"split": {"v1": 0, "v2": 100}})
        assert status == 200
        await wait_for(
            lambda: all(
                g.runtime is not None and g.runtime.snapshot.models["test-model"].split["v1"] == 0
                for g in gws
            )
        )
        await wait_for(lambda: load.versions["v2"] > 0 and load.total > served_while_down + 40)
    assert load.failures == [] and set(load.statuses) == {200}


async def test_an_ejection_on_one_replica_protects_the_others(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    bad, good = await emulators(), await emulators()
    rows = [("bad", "aws:us-east-1", "v1", bad.url), ("good", "aws:eu-west-1", "v1", good.url)]
    config = redis_config(rows, redis_server, failover={"hedge": False})
    gw1, gw2 = await gateways(config), await gateways(config)
    assert gw1.runtime is not None and gw2.runtime is not None
    bad.faults.update({"status": 500})
    async with aiohttp.ClientSession() as s:
        while gw1.runtime.health.signal("bad", time.monotonic()).available:
            status, _, _ = await chat(s, gw1)
            assert status == 200  # failover to the good backend hides the bad one
        found = time.monotonic()
        await wait_for(
            lambda: not gw2.runtime.health.signal("bad", time.monotonic()).available,  # type: ignore[union-attr]
            timeout=1.0,
            interval=0.001,
        )
        print(f"\nshared ejection reached the peer in {(time.monotonic() - found) * 1000:.1f} ms")
        why = gw2.runtime.health.signal("bad", time.monotonic()).why_unavailable
        assert "on peer" in why
        requests_before = bad.stats.requests
        for _ in range(5):
            status, headers, _ = await chat(s, gw2)
            assert status == 200 and headers["x-meridian-backend"] == "good"
        assert bad.stats.requests == requests_before  # gw2 never tried it


async def test_a_replica_started_while_redis_is_down_serves_its_cached_state(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    redis_server: RedisServer,
    tmp_path: Path,
) -> None:
    """Without the cache, a restart during an outage would undo every change:
    here, a drained region would come back into rotation."""
    em1, em2 = await emulators(), await emulators()
    rows = [("us", "aws:us-east-1", "v1", em1.url), ("eu", "aws:eu-west-1", "v1", em2.url)]
    cache = tmp_path / "state.json"
    config = redis_config(rows, redis_server, store={"snapshot_path": str(cache)})
    first = await gateways(config)
    async with aiohttp.ClientSession() as s:
        status, _ = await admin(s, first, "POST", "/admin/v1/regions/aws:us-east-1/drain")
        assert status == 200
        # The cache is written at every applied state, the start's too: wait for the drain's.
        await wait_for(lambda: runtime_of(first).snapshot.dial("aws:us-east-1") == 0)
        drained = runtime_of(first).snapshot.revision

        def cached_revision() -> int:
            return int(orjson.loads(cache.read_bytes())["revision"]) if cache.exists() else -1

        await wait_for(lambda: cached_revision() >= drained)
        await first.stop(grace=0.1)
        redis_server.kill()
        second = await gateways(config)  # a restart during the outage
        assert second.runtime is not None and second.runtime.control is not None
        assert second.runtime.control.status == "degraded"
        assert second.runtime.snapshot.dial("aws:us-east-1") == 0  # still drained
        for _ in range(5):
            status, headers, _ = await chat(s, second)
            assert status == 200 and headers["x-meridian-region"] == "aws:eu-west-1"
