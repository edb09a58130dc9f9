"""The end of the grace period, for HTTP requests whose response has not started.

A request still waiting for its first token, and a non-stream request whose
answer is still being generated, have sent no status yet: the drain's cut
answers them 503 ``shutting_down`` with ``Retry-After``, like a request that
arrives while draining (and like gRPC's UNAVAILABLE), never a bare disconnect.
Streams that already started end with an error event (tests/gateway/test_lifecycle.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from multidict import CIMultiDict

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


async def _post(
    s: aiohttp.ClientSession, url: str, **body: Any
) -> tuple[int, CIMultiDict[str], Any]:
    payload = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], **body}
    async with s.post(url + "/v1/chat/completions", json=payload, headers=AUTH) as resp:
        return resp.status, CIMultiDict(resp.headers), await resp.json(content_type=None)


def _assert_shutting_down(answer: tuple[int, CIMultiDict[str], Any]) -> None:
    status, headers, body = answer
    assert status == 503, body
    assert body["error"]["code"] == "shutting_down"
    assert body["error"]["type"] == "service_unavailable_error"
    assert headers["Retry-After"] == "1"
    assert headers["Connection"].lower() == "close"
    assert len(headers["x-request-id"]) == 32


async def test_requests_before_their_first_token_get_503_at_the_cut(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators(ttft_s=30.0)  # no first token within the grace period
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    rt = runtime_of(gw)
    async with aiohttp.ClientSession() as s:
        waiting = [
            asyncio.create_task(_post(s, gw.http_url, stream=True, max_tokens=5)),
            asyncio.create_task(_post(s, gw.http_url, max_tokens=5)),
        ]
        await wait_for(lambda: rt.lifecycle.in_flight == 2 and em.stats.requests == 2)
        assert await gw.stop(grace=0.2) == 2
        answers = await asyncio.gather(*waiting)
    for answer in answers:
        _assert_shutting_down(answer)
    counted = sum(
        sample.value
        for metric in rt.metrics.requests.collect()
        for sample in metric.samples
        if sample.name.endswith("_total") and sample.labels["status"] == "503"
    )
    assert counted == 2


async def test_a_non_stream_answer_mid_generation_gets_503_at_the_cut(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators(itl_s=0.02)  # 10 000 tokens: minutes
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        generating = asyncio.create_task(_post(s, gw.http_url, max_tokens=10_000))
        await wait_for(lambda: em.stats.tokens_sent >= 3)  # past the first token
        assert await gw.stop(grace=0.2) == 1
        _assert_shutting_down(await generating)
