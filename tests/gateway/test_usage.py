"""``meridian usage`` end to end (issue 18 item 4): tenants' requests through real
gateways over HTTP against the emulators, counted into the store, read back by
``GET /admin/v1/usage`` and the CLI as the fleet's sum."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.app.server import Gateway
from gateway.cli.main import main
from gateway.control.usage import MAX_WINDOW_S, read_usage
from gateway.store import EmbeddedStore
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    sha,
    wait_for,
)
from tests.gateway.control_kit import redis_config
from tests.gateway.test_grpc_helpers import auth, stub
from tests.gateway.test_grpc_helpers import chat as grpc_chat
from tests.redis_server import RedisServer

VIEWER = "tok-usage-viewer"
TOKENS = {
    "token": sha(ADMIN_TOKEN),
    "tokens": [{"name": "bi", "token": sha(VIEWER), "role": "viewer"}],
}
# Whole dollars per million tokens: a request's cost is a whole number of
# micro-USD, so the nano-USD counters hold it exactly.
PRICES = {"us": (1, 2), "eu": (3, 5)}
USAGE = "/admin/v1/usage"


def _rows(em_url: str) -> list[tuple[str, str, str, str, dict[str, Any]]]:
    regions = {"us": "aws:us-east-1", "eu": "aws:eu-west-1"}
    return [
        (name, regions[name], "v1", em_url, {"price": {"input_per_m": i, "output_per_m": o}})
        for name, (i, o) in PRICES.items()
    ]


class Sent:
    """What the clients were told they used: tokens per tenant, nano-USD by price."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}

    def add(self, tenant: str, backend: str, prompt: int, completion: int) -> None:
        c = self.counts.setdefault(tenant, Counter())
        input_per_m, output_per_m = PRICES[backend]
        c.update(
            requests=1,
            prompt_tokens=prompt,
            completion_tokens=completion,
            # USD per 1M tokens × tokens = micro-USD; × 1000 = nano-USD
            spend_nusd=(prompt * input_per_m + completion * output_per_m) * 1000,
        )

    def rows(self) -> list[dict[str, Any]]:
        return [
            {
                "tenant": tenant,
                "model": MODEL,
                "requests": c["requests"],
                "prompt_tokens": c["prompt_tokens"],
                "completion_tokens": c["completion_tokens"],
                "spend_usd": c["spend_nusd"] / 1e9,
            }
            for tenant, c in sorted(self.counts.items())
        ]


async def _chat(
    s: aiohttp.ClientSession, gw: Gateway, key: str, sent: Sent, tenant: str, *, stream: bool
) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"count me {time.monotonic_ns()}"}],
        "max_tokens": 5,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"Authorization": f"Bearer {key}"}
    async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        backend = r.headers["x-meridian-backend"]
        if stream:
            events = [line[6:] for line in (await r.text()).splitlines() if line[:6] == "data: "]
            usage = json.loads(events[-2])["usage"]  # the last chunk before [DONE]
        else:
            usage = (await r.json())["usage"]
    sent.add(tenant, backend, usage["prompt_tokens"], usage["completion_tokens"])


async def _refused(s: aiohttp.ClientSession, gw: Gateway) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "free?"}], "max_tokens": 5}
    headers = {"Authorization": "Bearer sk-not-a-key"}
    async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 401


async def _usage(
    s: aiohttp.ClientSession, gw: Gateway, query: str = "", token: str = VIEWER
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"}
    async with s.get(gw.admin_url + USAGE + query, headers=headers) as r:
        return r.status, await r.json()


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_two_replicas_on_redis_count_the_fleets_usage_per_tenant(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
) -> None:
    em = await emulators()
    config = redis_config(
        _rows(em.url),
        redis_server,
        prefix="u",
        store={"counts_flush_s": 0.05},
        admin=TOKENS,
        failover={"hedge": False},
    )
    a, b = await gateways(config), await gateways(config)
    sent = Sent()
    async with aiohttp.ClientSession() as s:
        for gw, key, tenant, stream in [
            (a, GLOBAL_KEY, "global", False),
            (a, GLOBAL_KEY, "global", True),
            (b, GLOBAL_KEY, "global", False),
            (a, EU_KEY, "eu", True),  # EU only: served in aws:eu-west-1, at its price
            (b, EU_KEY, "eu", False),
            (b, EU_KEY, "eu", False),
        ]:
            await _chat(s, gw, key, sent, tenant, stream=stream)
        await _refused(s, a)  # a 401 used nothing
        await _refused(s, b)
        expected = sent.rows()
        assert [r["requests"] for r in expected] == [3, 3]
        found: dict[str, Any] = {}

        async def counted() -> None:
            while True:
                asked = time.time()
                status, body = await _usage(s, b)
                assert status == 200, body
                if body["totals"]["requests"] >= 6:
                    found.update(body, asked=asked)
                    return
                await asyncio.sleep(0.02)

        await asyncio.wait_for(counted(), 10)
        assert found["rows"] == expected
        assert found["totals"] == {
            "requests": 6,
            "prompt_tokens": sum(r["prompt_tokens"] for r in expected),
            "completion_tokens": sum(r["completion_tokens"] for r in expected),
            "spend_usd": sum(sent.counts[t]["spend_nusd"] for t in sent.counts) / 1e9,
        }
        assert found["window"] == 3600 and found["to"] - found["from"] in (3600, 3660)
        assert found["to"] % 60 == 0 and found["from"] <= found["asked"] - 3600
        assert found["asked"] < found["to"]
        # the other replica reads the same fleet-wide sums
        status, other = await _usage(s, a, "?window=120")
        assert status == 200 and other["rows"] == expected and other["window"] == 120

    # every minute's window outlives the longest window the route reads
    keys = re.findall(rb"u:counts:usage/\d+", redis_server.command("KEYS", "u:counts:usage/*"))
    assert keys
    for key in keys:
        ttl = int(redis_server.command("TTL", key.decode()).strip().lstrip(b":"))
        assert ttl > MAX_WINDOW_S + 60

    args = ["usage", f"--admin-url={a.admin_url}", f"--token={VIEWER}"]
    code, out, err = await asyncio.to_thread(_cli, [*args, "--json", "--window", "1h"], capsys)
    assert code == 0, err
    printed = json.loads(out)
    assert printed["rows"] == expected and printed["totals"] == found["totals"]
    code, out, err = await asyncio.to_thread(_cli, [*args, "--window", "30m"], capsys)
    assert code == 0, err
    line = next(line for line in out.splitlines() if "total" in line)
    cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
    assert cells[:4] == ["total", "", "6", str(found["totals"]["prompt_tokens"])]


async def test_counts_pending_at_shutdown_are_flushed_and_failures_cost_nothing(
    emulators: EmulatorFactory, tmp_path: Path
) -> None:
    em = await emulators()
    path = str(tmp_path / "store.db")
    # no periodic flush during the test: only the stop can have written them
    store = {"path": path, "counts_flush_s": 3600}
    listen = {"grpc": "127.0.0.1:0"}
    config = gateway_config(_rows(em.url), store=store, listen=listen, failover={"hedge": False})
    gw = Gateway(config)
    await gw.start()
    sent = Sent()
    try:
        async with aiohttp.ClientSession() as s:
            await _chat(s, gw, EU_KEY, sent, "eu", stream=False)
            await _chat(s, gw, GLOBAL_KEY, sent, "global", stream=True)
            async with stub(gw) as grpc_client:  # the gRPC front end counts alike
                call = grpc_client.StreamChat(grpc_chat(4, include_usage=True), metadata=auth())
                chunks = [c async for c in call]
            used = next(c.usage for c in chunks if c.HasField("usage"))
            sent.add("global", chunks[0].served.backend, used.prompt_tokens, used.completion_tokens)
            # every backend failing before a first token: nothing was used
            async with s.post(em.url + "/_emulator/faults", json={"status": 500}) as r:
                assert r.status == 200
            body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}]}
            headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
            url = gw.http_url + "/v1/chat/completions"
            async with s.post(url, json=body, headers=headers) as r:
                assert r.status >= 500
    finally:
        await gw.stop(grace=0.5)
    reader = EmbeddedStore(path)
    await reader.open()
    try:
        usage = await read_usage(reader, 300)
    finally:
        await reader.close()
    assert [
        {
            "tenant": r.tenant,
            "model": r.model,
            "requests": r.requests,
            "prompt_tokens": r.prompt_tokens,
            "completion_tokens": r.completion_tokens,
            "spend_usd": r.spend_usd,
        }
        for r in usage.rows
    ] == sent.rows()


@pytest.mark.parametrize(
    "window",
    ["abc", "-60", "0", "59", "86401", "1e3", "3600.0", "٣٦٠٠", "9" * 40, ""],
)
async def test_a_bad_window_is_a_400_naming_it(
    emulators: EmulatorFactory, gateways: GatewayFactory, window: str
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config(_rows(em.url), admin=TOKENS))
    async with aiohttp.ClientSession() as s:
        status, body = await _usage(s, gw, f"?window={window}")
        assert status == 400, body
        assert body["error"]["param"] == "window"
        assert "from 60 to 86400" in body["error"]["message"]
        status, body = await _usage(s, gw, "", token="not-a-token")
        assert status == 401
        status, body = await _usage(s, gw, "?window=60&window=120")
        assert status == 400 and body["error"]["param"] == "window"
        status, body = await _usage(s, gw, "?tenant=global")  # no such filter: not ignored
        assert status == 400 and body["error"]["param"] == "tenant", body
        status, body = await _usage(s, gw)
    assert status == 200 and body["window"] == 3600 and body["rows"] == []


async def test_an_unreachable_store_is_a_503_not_an_empty_answer(
    emulators: EmulatorFactory, gateways: GatewayFactory, redis_server: RedisServer
) -> None:
    em = await emulators()
    config = redis_config(_rows(em.url), redis_server, admin=TOKENS, store={"probe_s": 0.1})
    gw = await gateways(config)
    redis_server.kill()
    control = gw.runtime.control  # type: ignore[union-attr]
    assert control is not None
    await wait_for(lambda: control.degraded, timeout=10)
    async with aiohttp.ClientSession() as s:
        status, body = await _usage(s, gw)
    assert status == 503 and body["error"]["code"] == "store_unavailable", body
