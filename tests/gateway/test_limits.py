"""Tenant limits: one limit across two gateways (real Redis), local in embedded mode.

The leases underneath (bound, fail-static, give-back): test_limits_lease.py."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import grpc
import orjson

from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
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
        # Each gateway admits from its lease on the budget, so which of them gets
        # the last units depends on where the credits are: the total is exact.
        # Alternate until both have refused twice in a row (their leases are spent),
        # each request once the renewals it started have answered.
        shares = [runtime_of(g).limiter._shares["global"] for g in gws]  # type: ignore[union-attr]
        answers: list[tuple[int, int, dict[str, str], bytes]] = []
        while [a[1] for a in answers[-4:]] != [429] * 4:
            assert len(answers) < 40
            i = len(answers) % 2
            answers.append((i, *await chat(s, gws[i])))
            await wait_for(lambda: not any(share.asking for share in shares))
        assert sum(1 for a in answers if a[1] == 200) == 5
        refused_by, _, headers, body = answers[-1]
        error = orjson.loads(body)["error"]
        assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
        assert "requests per minute (limit 5) for tenant 'global'" in error["message"]
        assert int(headers["Retry-After"]) >= 1
        _, _, body = await chat(s, gws[0], key="sk-test-eu")  # another tenant: unlimited
        async with s.get(
            gws[refused_by].admin_url + "/metrics",
            headers={"Authorization": "Bearer test-admin-token"},
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
