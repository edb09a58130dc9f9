"""SIGTERM-style draining, readiness, and a slow client's bounded memory."""

from __future__ import annotations

import asyncio
from typing import cast

import aiohttp

from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
    wait_for,
)

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
MESSAGES = [{"role": "user", "content": "hello"}]


async def _open_stream(
    s: aiohttp.ClientSession, url: str, max_tokens: int
) -> aiohttp.ClientResponse:
    resp = await s.post(
        url + "/v1/chat/completions",
        json={"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": max_tokens},
        headers=AUTH,
    )
    assert resp.status == 200
    return resp


async def test_drain_finishes_short_streams_and_cuts_long_ones_with_an_error(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators(itl_s=0.02)
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        short = await _open_stream(s, gw.http_url, 10)  # ~0.2 s: finishes within the grace
        long = await _open_stream(s, gw.http_url, 10_000)  # cannot finish
        draining = asyncio.create_task(runtime_of(gw).lifecycle.drain(1.0))
        await wait_for(lambda: runtime_of(gw).lifecycle.draining)
        async with s.get(gw.http_url + "/readyz") as ready:
            assert ready.status == 503
        async with s.post(
            gw.http_url + "/v1/chat/completions",
            json={"model": MODEL, "messages": MESSAGES},
            headers=AUTH,
        ) as refused:
            assert refused.status == 503
            assert "Retry-After" in refused.headers
        short_body = (await short.read()).decode()
        long_body = (await long.read()).decode()
        assert await draining == 1
    assert short_body.rstrip().endswith("data: [DONE]")
    last = [e for e in long_body.split("\n\n") if e][-1]
    assert "shutting down" in last and "[DONE]" not in long_body


async def test_readyz_and_healthz(emulators: EmulatorFactory, gateways: GatewayFactory) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.http_url + "/readyz") as r:
            assert r.status == 200 and (await r.json())["ready"] is True
        async with s.get(gw.http_url + "/healthz") as r:
            assert r.status == 200


async def test_slow_client_gets_backpressure_not_unbounded_buffering(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """A client that stops reading makes the gateway stop reading the upstream.

    Loopback kernel buffers hold a few MB, so the request asks for far more
    (300 000 tokens, ~45 MB): if the gateway buffered without bound the
    emulator would keep producing; with backpressure it plateaus.
    """
    em = await emulators()  # streams as fast as it can
    gw = await gateways(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], limits={"stream_buffer_bytes": 4096})
    )
    host, port = gw.http_url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1024)
    body = (
        b'{"model":"test-model","stream":true,"max_tokens":300000,'
        b'"messages":[{"role":"user","content":"hello"}]}'
    )
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + GLOBAL_KEY.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\n\r\n"
        + body
    )
    await writer.drain()
    await reader.readuntil(b"\r\n\r\n")
    cast(asyncio.Transport, writer.transport).pause_reading()  # the client stops reading

    samples: list[int] = []

    def plateaued() -> bool:
        samples.append(em.stats.tokens_sent)
        return len(samples) > 20 and samples[-1] == samples[-20] > 0

    await wait_for(plateaued, timeout=20, interval=0.02)
    assert samples[-1] < 150_000
    # Other streams are unaffected while the slow one is held back.
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with aiohttp.ClientSession() as s:
        other = await _open_stream(s, gw.http_url, 50)
        answer = (await other.read()).decode()
    assert answer.count('"content":') == 51 and answer.rstrip().endswith("[DONE]")
    assert loop.time() - started < 2.0
    writer.transport.abort()
    await wait_for(lambda: em.stats.running == 0)
    assert em.stats.completed == 1  # only the other stream; the slow one never finished
