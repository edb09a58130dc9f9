"""Tenant limits: one limit across two gateways (real Redis), local in embedded mode."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import grpc
import orjson
import pytest

from gateway.limits import TenantLimiter
from gateway.metrics import Metrics
from gateway.store import Quota
from gateway.store.redis_store import RedisStore
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)
from tests.gateway.control_kit import Load, chat, redis_config
from tests.gateway.test_grpc_helpers import auth, grpc_config, stub, trailers
from tests.gateway.test_grpc_helpers import chat as grpc_chat
from tests.redis_server import RedisServer


def _limited(**limits: int) -> dict[str, Any]:
    return {"tenant": {"limits": limits}}


async def test_requests_per_minute_hold_across_two_gateways(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators()
    config = redis_config(
        [("fra", "onprem:fra1", "v1", em.url)], redis_server, **_limited(requests_per_min=5)
    )
    gws = [await gateways(config), await gateways(config)]
    async with aiohttp.ClientSession() as s:
        answers = [await chat(s, gws[i % 2]) for i in range(8)]
        assert [a[0] for a in answers] == [200] * 5 + [429] * 3
        _, headers, body = answers[-1]
        error = orjson.loads(body)["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert "requests per minute (limit 5) for tenant 'global'" in error["message"]
        assert int(headers["Retry-After"]) >= 1
        _, _, body = await chat(s, gws[0], key="sk-test-eu")  # another tenant: unlimited
        async with s.get(
            gws[1].admin_url + "/metrics", headers={"Authorization": "Bearer test-admin-token"}
        ) as r:
            text = await r.text()
    assert 'meridian_rate_limited_total{reason="requests_per_min",tenant="global"}' in text


async def test_concurrent_streams_hold_across_two_gateways(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators(itl_s=0.02)
    config = redis_config(
        [("fra", "onprem:fra1", "v1", em.url)], redis_server, **_limited(concurrent_streams=1)
    )
    gw1, gw2 = await gateways(config), await gateways(config)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 20,
            "stream": True}  # fmt: skip
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with aiohttp.ClientSession() as s:
        async with s.post(gw1.http_url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200
            await r.content.readline()  # the stream is open and holds the tenant's one slot
            status, hdrs, _ = await chat(s, gw2)
            assert status == 429 and hdrs["Retry-After"] == "1"
            await r.read()  # let it finish
        deadline = time.monotonic() + 5
        while (status := (await chat(s, gw2))[0]) != 200:  # the slot is released off-path
            assert status == 429 and time.monotonic() < deadline
            await asyncio.sleep(0.01)


async def test_tokens_per_minute_count_after_the_request(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], **_limited(tokens_per_min=12))
    )
    used = 0  # tokens of the answered requests, as their usage reports them
    async with aiohttp.ClientSession() as s:
        deadline = time.monotonic() + 5
        while (answer := await chat(s, gw))[0] == 200:
            used += orjson.loads(answer[2])["usage"]["total_tokens"]
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)  # tokens are counted off the request path
    assert used >= 12  # refused only once the minute's tokens were spent
    status, _, body = answer
    assert (
        status == 429 and "tokens per minute (limit 12)" in orjson.loads(body)["error"]["message"]
    )


async def test_grpc_shares_the_admission(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        grpc_config([("fra", "onprem:fra1", "v1", em.url)], **_limited(requests_per_min=1))
    )
    async with stub(gw) as st:
        assert (await st.Chat(grpc_chat(2), metadata=auth())).text
        try:
            await st.Chat(grpc_chat(2), metadata=auth())
        except grpc.aio.AioRpcError as err:
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert trailers(err)["meridian-error-code"] == "rate_limit_exceeded"
            assert int(trailers(err)["retry-after"]) >= 1
        else:
            raise AssertionError("the second call should have been refused")


async def test_limits_fail_open_to_local_counting_when_redis_dies(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators()
    config = redis_config(
        [("fra", "onprem:fra1", "v1", em.url)], redis_server, **_limited(requests_per_min=100000)
    )
    gws = [await gateways(config), await gateways(config)]
    async with Load(gws, workers=3) as load:
        await wait_for(lambda: load.total > 0)  # the load is running
        redis_server.kill()
        start = load.total
        await wait_for(lambda: load.total >= start + 30, timeout=5)
    assert load.failures == [] and set(load.statuses) == {200}


@pytest.mark.parametrize("interruption", ["timeout", "cancel"])
async def test_an_interrupted_admission_gives_its_stream_slot_back(
    redis_server: RedisServer, interruption: str
) -> None:
    """Redis may run the admission script although its answer never arrives (the
    limiter's deadline passed, or the client left); the slot must not stay taken
    for a whole lease."""
    store = RedisStore(redis_server.url, prefix="intr")
    await store.open()
    quota = Quota(concurrent_streams=1)
    deadline = 0.05 if interruption == "timeout" else 30.0
    limiter = TenantLimiter({"t": quota}, store, Metrics(), timeout_s=deadline)
    # load the script first, so the interrupted call is the EVALSHA that runs
    await store.release("t", "warm", 0, time.time())
    assert (await store.admit("t", quota, "warm", time.time())).allowed
    await store.release("t", "warm", 0, time.time())
    assert redis_server.process is not None
    redis_server.process.send_signal(signal.SIGSTOP)  # answers nothing, still accepts
    try:
        admitting = asyncio.ensure_future(limiter.admit("t"))
        if interruption == "timeout":
            ticket = await admitting  # the deadline passed: admitted by local counting
            assert ticket is not None and not ticket.shared
        else:
            await wait_for(lambda: _waiting_on_redis(store))
            admitting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await admitting
    finally:
        redis_server.process.send_signal(signal.SIGCONT)
    await limiter.close()  # the give-back has been sent
    verdict = await store.admit("t", quota, "next", time.time())
    assert verdict.allowed, verdict  # the one slot is free again
    await store.close()


def _waiting_on_redis(store: RedisStore) -> bool:
    """The admission holds a pooled connection: its script is sent (the server is
    stopped, so no answer comes back)."""
    return any(True for _ in store._client.connection_pool._get_in_use_connections())


async def test_slots_released_while_redis_was_away_are_given_back_when_it_returns(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix="blip")
    await store.open()
    quota = Quota(concurrent_streams=2)
    limiter = TenantLimiter({"t": quota}, store, Metrics(), timeout_s=5.0)
    tickets = [await limiter.admit("t") for _ in range(2)]
    assert all(t is not None and t.shared for t in tickets)
    redis_server.kill()
    for ticket in tickets:  # the streams end while Redis is away
        assert ticket is not None
        await limiter._release(ticket, 0, time.time())
    redis_server.start()  # the same data: both slots still taken there
    # Redis answers again: the give-back goes first, so this is admitted
    assert await limiter.admit("t") is not None
    assert (await store.admit("t", quota, "one-more", time.time())).allowed  # and one more
    await store.close()
