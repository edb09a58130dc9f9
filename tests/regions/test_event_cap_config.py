"""``limits.max_event_bytes`` is the cap on one upstream event, for every provider.

A backend that sends one 64 KiB event (a valid chunk padded with a long unknown
member): under the default 1 MiB cap it is the answer's first token; with the
cap at 16 KiB it is a broken stream and the answer comes from the other backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from emulators.text import expected_text, generate, render_chat
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.hostile_backend import HostileBackend, Script, chunk, sse, usage_chunk

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
PROMPT = "Tell me about the sea"
CONTEXT = render_chat([("user", PROMPT)], False)


@pytest.fixture
async def hostile() -> AsyncIterator[HostileBackend]:
    words = generate(CONTEXT, 8)
    big = chunk(words[0])
    big["padding"] = "p" * 65536  # a member the gateway does not read
    backend = HostileBackend(
        Script(
            [
                sse(chunk("", role=True)),
                sse(big),
                *(sse(chunk(w)) for w in words[1:]),
                sse(chunk("", finish="length")),
                sse(usage_chunk(3, 8)),
                b"data: [DONE]\n\n",
            ]
        )
    )
    await backend.start()
    yield backend
    await backend.stop()


async def answer(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostile: HostileBackend, **limits: Any
) -> tuple[str, str]:
    good = await emulators()
    gw = await gateways(
        gateway_config(
            [
                ("hostile", "aws:eu-west-1", "v1", hostile.url, {"weight": 1e6}),
                ("good", "onprem:fra1", "v1", good.url, {"weight": 1e-6}),
            ],
            failover={"health_checks": {"enabled": False}, "hedge": False},
            limits=limits,
        )
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status == 200
        reply = orjson.loads(await resp.read())
        return resp.headers["x-meridian-backend"], reply["choices"][0]["message"]["content"]


async def test_the_default_cap_takes_a_64_kib_event(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostile: HostileBackend
) -> None:
    assert await answer(emulators, gateways, hostile) == ("hostile", expected_text(CONTEXT, 8))


async def test_a_lower_cap_makes_it_a_broken_stream(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostile: HostileBackend
) -> None:
    served, text = await answer(emulators, gateways, hostile, max_event_bytes=16384)
    assert served == "good" and text == expected_text(CONTEXT, 8)
