"""Reads near, writes far: a real Redis primary and a real replica (``replicaof``)."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp

from gateway.config.model import Config
from gateway.store import (
    Changed,
    HealthHold,
    Notice,
    RedisStore,
    ReplicatedStore,
    Subscription,
)
from tests.conftest import (
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    runtime_of,
    wait_for,
)
from tests.gateway.control_kit import admin, chat, redis_config
from tests.redis_server import RedisServer, redis_replica  # noqa: F401 - the fixture


async def _notice(sub: Subscription) -> Notice:
    """The next notice (a None is the subscription's own confirmation, or quiet)."""
    deadline = time.monotonic() + 5
    while (notice := await sub.next(0.5)) is None:
        assert time.monotonic() < deadline, "no notice"
    return notice


def _config(em_url: str, primary: RedisServer, replica: RedisServer, **extra: Any) -> Config:
    backends = [("fra", "onprem:fra1", "v1", em_url), ("fra-2", "onprem:fra1", "v2", em_url)]
    store = {"read_url": replica.url, "leases": {"renew_s": 0.1}}
    return redis_config(backends, primary, store=store, versions={"v1": 100, "v2": 0}, **extra)


async def test_loads_and_notices_come_from_the_replica(
    redis_server: RedisServer,
    redis_replica: RedisServer,  # noqa: F811
) -> None:
    store = ReplicatedStore(redis_server.url, redis_replica.url, prefix="near")
    await store.open()
    sub = await store.subscribe()
    done = await store.commit({"split/m": {"v1": 1}}, actor="t", action="weights.set")
    notice = await _notice(sub)  # published on the primary, heard from the replica
    assert notice == Changed(done.revision)
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # the primary answers nothing
    try:
        loaded = await store.load()
        assert loaded.revision == done.revision and loaded.entries["split/m"] == {"v1": 1}
        assert await store.revision() == done.revision
        await store.ping(0.5)  # the probe asks the replica
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    await sub.close()
    await store.close()


async def test_health_holds_reach_a_peer_through_its_replica(
    redis_server: RedisServer,
    redis_replica: RedisServer,  # noqa: F811
) -> None:
    far = RedisStore(redis_server.url, prefix="hold")  # a peer in the primary's region
    near = ReplicatedStore(redis_server.url, redis_replica.url, prefix="hold")
    await far.open()
    await near.open()
    sub = await near.subscribe()
    hold = HealthHold("b1", time.time() + 10, "peer", "breaker open")
    await far.publish(hold)
    assert await _notice(sub) == hold
    far_sub = await far.subscribe()
    mine = HealthHold("b2", time.time() + 10, "near", "ejected")
    await near.publish(mine)  # and its own go to the primary, for every region
    assert await _notice(far_sub) == mine
    await far_sub.close()
    await near.add_counts("w", {"attempts": 3})  # canary counters go to the primary
    assert await far.read_counts("w") == {"attempts": 3}
    assert await near.sum_counts(["w", "none"]) == {"attempts": 3}  # read there too
    await sub.close()
    await near.close()
    await far.close()


async def test_a_replica_reads_its_own_writes_while_its_copy_lags(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    redis_server: RedisServer,
    redis_replica: RedisServer,  # noqa: F811
) -> None:
    em = await emulators()
    gw = await gateways(_config(em.url, redis_server, redis_replica))
    other = ReplicatedStore(redis_server.url, redis_replica.url, prefix="t")  # a peer nearby
    await other.open()
    redis_replica.command("REPLICAOF", "NO", "ONE")  # the copy stops following: it lags
    async with aiohttp.ClientSession() as s:
        status, body = await admin(
            s, gw, "PUT", f"/admin/v1/weights/{MODEL}", {"split": {"v1": 30, "v2": 70}}
        )
        assert status == 200, body
        written = body["revision"]
        # this replica routes on its own write at once, and keeps doing so
        assert runtime_of(gw).snapshot.revision == written
        status, body = await admin(s, gw, "GET", f"/admin/v1/weights/{MODEL}")
        assert body["split"] == {"v1": 30, "v2": 70} and body["revision"] == written
        assert (await other.load()).revision < written  # the copy really is behind
        redis_replica.command("REPLICAOF", "127.0.0.1", str(redis_server.port))
        await wait_for(redis_replica.synced, timeout=10)
        await wait_for(lambda: runtime_of(gw).snapshot.revision == written)
        assert (await other.load()).revision == written  # and then everyone nearby has it
    await other.close()


async def test_promoting_the_replica_needs_no_restart(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    redis_server: RedisServer,
    redis_replica: RedisServer,  # noqa: F811
) -> None:
    em = await emulators()
    config = _config(
        em.url, redis_server, redis_replica, tenant={"limits": {"requests_per_min": 10000}}
    )
    gw = await gateways(config)
    limiter = runtime_of(gw).limiter
    assert limiter is not None
    path = f"/admin/v1/weights/{MODEL}"
    async with aiohttp.ClientSession() as s:
        status, before = await admin(s, gw, "PUT", path, {"split": {"v1": 60, "v2": 40}})
        assert status == 200
        await wait_for(redis_replica.synced)
        await wait_for(lambda: b"t:revision" in redis_replica.command("KEYS", "t:revision"))
        redis_server.kill()  # the primary is lost
        status, body = await admin(s, gw, "PUT", path, {"split": {"v1": 10, "v2": 90}})
        assert status == 503 and body["error"]["code"] == "store_unavailable"
        status, body = await admin(s, gw, "GET", "/admin/v1/store")
        assert status == 200 and body["primary_answers"] is False
        assert (await chat(s, gw))[0] == 200  # serving (and admitting) goes on
        redis_replica.command("REPLICAOF", "NO", "ONE")  # promoted
        status, body = await admin(
            s, gw, "POST", "/admin/v1/store/primary", {"url": redis_replica.url}
        )
        assert status == 200, body
        assert body["primary"] == redis_replica.url == body["reads"]
        status, body = await admin(s, gw, "PUT", path, {"split": {"v1": 10, "v2": 90}})
        assert status == 200, body
        assert body["revision"] == before["revision"] + 1  # nothing written before was lost
        status, audit = await admin(s, gw, "GET", "/admin/v1/audit")
        assert [e["new"] for e in audit["entries"]][-2:] == [
            {"v1": 60, "v2": 40},
            {"v1": 10, "v2": 90},
        ]
        # tenant-limit leases renew against the new primary
        await wait_for(lambda: not limiter._down and limiter.status()["global"]["mode"] == "lease")
        renewed = limiter._shares["global"].expires
        await wait_for(lambda: limiter._shares["global"].expires > renewed)
        status, body = await admin(s, gw, "GET", "/admin/v1/store")
        assert status == 200 and body["limits"]["global"]["mode"] == "lease"
        assert body["primary_answers"] is True


async def test_a_store_without_read_url_cannot_be_repointed(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators()
    gw = await gateways(redis_config([("fra", "onprem:fra1", "v1", em.url)], redis_server))
    async with aiohttp.ClientSession() as s:
        status, body = await admin(
            s, gw, "POST", "/admin/v1/store/primary", {"url": redis_server.url}
        )
        assert status == 409 and body["error"]["code"] == "not_replicated"
        status, body = await admin(s, gw, "POST", "/admin/v1/store/primary", {"url": "x"})
        assert status == 409  # refused before the body is looked at
        headers = {"Authorization": "Bearer wrong"}
        async with s.post(gw.admin_url + "/admin/v1/store/primary", headers=headers) as r:
            assert r.status == 401


async def test_writes_find_their_promoted_copy_by_themselves(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    redis_server: RedisServer,
    redis_replica: RedisServer,  # noqa: F811
) -> None:
    em = await emulators()
    gw = await gateways(_config(em.url, redis_server, redis_replica))
    path = f"/admin/v1/weights/{MODEL}"
    async with aiohttp.ClientSession() as s:
        status, before = await admin(s, gw, "PUT", path, {"split": {"v1": 60, "v2": 40}})
        assert status == 200
        await wait_for(lambda: b"t:revision" in redis_replica.command("KEYS", "t:revision"))
        await wait_for(redis_replica.synced)
        redis_server.kill()
        status, _ = await admin(s, gw, "PUT", path, {"split": {"v1": 10, "v2": 90}})
        assert status == 503  # the copy is still a replica: it refuses the write
        assert redis_replica.command("GET", "t:revision").endswith(
            f"\r\n{before['revision']}\r\n".encode()
        )
        redis_replica.command("REPLICAOF", "NO", "ONE")  # promoted; nobody tells the gateway
        deadline = time.monotonic() + 5
        while (answer := await admin(s, gw, "PUT", path, {"split": {"v1": 10, "v2": 90}}))[
            0
        ] != 200:
            assert answer[0] == 503 and time.monotonic() < deadline, answer
            await asyncio.sleep(0.05)
        assert answer[1]["revision"] == before["revision"] + 1
        status, body = await admin(s, gw, "GET", "/admin/v1/store")
        assert body["primary"] == redis_replica.url and body["primary_answers"] is True
