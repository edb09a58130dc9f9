"""The store's health probe: a Redis that accepts connections and answers nothing.

A SIGSTOPped Redis keeps its socket open: a subscription to it waits quietly
and nothing fails until some call's socket timeout runs out. The probe (a
PING every ``store.probe_s`` that must answer within ``probe_timeout_s``)
marks the control plane degraded while it is frozen and clears it once it
answers again. Real Redis (tests/redis_server.py), real gateways over
loopback; every wait is a condition with a deadline.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
import pytest

from gateway.app.server import Gateway
from gateway.config.model import Config, StoreConfig
from gateway.store import RedisStore, StoreUnavailable
from tests.conftest import ADMIN_TOKEN, EmulatorFactory, GatewayFactory, runtime_of, wait_for
from tests.gateway.control_kit import Load, admin, redis_config
from tests.redis_server import RedisServer

W = "/admin/v1/weights/test-model"


@contextmanager
def frozen(server: RedisServer) -> Iterator[None]:
    """SIGSTOP: the server keeps its connections and answers nothing, until SIGCONT."""
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    try:
        yield
    finally:
        server.process.send_signal(signal.SIGCONT)


def status_of(gw: Gateway) -> str:
    control = runtime_of(gw).control
    assert control is not None
    return control.status


async def degraded_metric(s: aiohttp.ClientSession, gw: Gateway) -> float:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with s.get(gw.admin_url + "/metrics", headers=headers) as r:
        text = await r.text()
    line = next(x for x in text.splitlines() if x.startswith("meridian_control_plane_degraded "))
    return float(line.split()[1])


async def readyz(s: aiohttp.ClientSession, gw: Gateway) -> tuple[int, str]:
    async with s.get(gw.http_url + "/readyz") as r:
        return r.status, str((await r.json())["control_plane"])


def config(em_url: str, server: RedisServer, **store: float) -> Config:
    # resync_s far beyond every deadline below: only the probe can notice in time
    rows = [("a", "aws:us-east-1", "v1", em_url)]
    return redis_config(rows, server, store={"resync_s": 60.0, **store})


async def test_a_frozen_redis_degrades_the_control_plane_and_a_thawed_one_clears_it(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators()
    gw = await gateways(config(em.url, redis_server))  # the default probe: 1 s, 0.5 s
    async with aiohttp.ClientSession() as s, Load([gw], workers=2) as load:
        assert status_of(gw) == "ok" and await degraded_metric(s, gw) == 0.0
        await wait_for(lambda: load.total > 5)
        with frozen(redis_server):
            stopped = time.monotonic()
            await wait_for(lambda: status_of(gw) == "degraded", timeout=3.0)
            noticed = time.monotonic() - stopped
            assert await degraded_metric(s, gw) == 1.0
            assert await readyz(s, gw) == (200, "degraded")  # fail-static: still ready
            served = load.total
            await wait_for(lambda: load.total > served + 10)  # and still serving
        thawed = time.monotonic()
        await wait_for(lambda: status_of(gw) == "ok", timeout=5.0)
        cleared = time.monotonic() - thawed
        assert await degraded_metric(s, gw) == 0.0
        assert await readyz(s, gw) == (200, "ok")
        # and it follows the store again: a write is applied at once
        status, body = await admin(s, gw, "PUT", W, {"split": {"v1": 100}})
        assert status == 200, body
        assert runtime_of(gw).snapshot.revision == body["revision"]
    print(f"\nfrozen Redis noticed after {noticed:.2f} s, cleared {cleared:.2f} s after SIGCONT")
    assert load.failures == [] and set(load.statuses) == {200}


async def test_a_freeze_shorter_than_any_socket_timeout_is_still_reported_and_cleared(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators()
    gw = await gateways(config(em.url, redis_server, probe_s=0.1, probe_timeout_s=0.1))
    control = runtime_of(gw).control
    assert control is not None
    with frozen(redis_server):
        await wait_for(lambda: status_of(gw) == "degraded", timeout=1.0)
        assert "did not answer a PING within 0.1 s" in control.last_error
    await wait_for(lambda: status_of(gw) == "ok", timeout=3.0)
    assert control.last_error == ""


async def test_a_peers_change_made_while_this_replica_was_degraded_is_loaded_after(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators()
    cfg = config(em.url, redis_server, probe_s=0.1, probe_timeout_s=0.1)
    a, b = await gateways(cfg), await gateways(cfg)
    async with aiohttp.ClientSession() as s:
        with frozen(redis_server):
            await wait_for(lambda: status_of(a) == "degraded" == status_of(b), timeout=1.0)
        await wait_for(lambda: status_of(a) == "ok" == status_of(b), timeout=3.0)
        status, body = await admin(s, b, "PUT", W, {"split": {"v1": 100}})
        assert status == 200, body
        await wait_for(lambda: runtime_of(a).snapshot.revision == body["revision"], timeout=2.0)


async def test_ping_has_its_own_deadline(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix="probe", timeout_s=5.0)
    await store.open()
    try:
        await store.ping(0.2)
        with frozen(redis_server):
            started = time.monotonic()
            with pytest.raises(StoreUnavailable, match=r"did not answer a PING within 0\.2 s"):
                await store.ping(0.2)
            assert time.monotonic() - started < 2.0  # not the 5 s socket timeout
        await asyncio.wait_for(store.ping(2.0), timeout=5.0)  # answers again, same client
    finally:
        await store.close()


def test_probe_settings_have_defaults_and_are_validated() -> None:
    assert (StoreConfig().probe_s, StoreConfig().probe_timeout_s) == (1.0, 0.5)
    for bad in ({"probe_s": 0}, {"probe_timeout_s": -1}):
        with pytest.raises(ValueError):
            StoreConfig.model_validate(bad)
