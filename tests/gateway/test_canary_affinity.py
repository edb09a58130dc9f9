"""The version split sees a one-key application (issue 19 item 3): with no
session and no ``user``, the split is sticky per conversation (its opening
messages), not per API key; a step whose sample is one affinity key warns."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import aiohttp

from gateway.app.server import Gateway
from gateway.canary.plan import Phase
from gateway.canary.window import skew
from routing.affinity import opening_of, split_key
from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)

C = f"/admin/v1/canary/{MODEL}"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}", "x-meridian-actor": "ann"}


def test_the_key_is_the_conversation_not_the_api_key() -> None:
    def key(*messages: tuple[str, str], session: str | None = None, user: str | None = None) -> str:
        return split_key(
            session=session,
            user=user,
            key_digest="k",
            opening=opening_of(list(messages), ""),
            request_id="r1",
        )

    sys = ("system", "be brief")
    one = key(sys, ("user", "plan a trip"))
    later = key(sys, ("user", "plan a trip"), ("assistant", "where to?"), ("user", "Rome"))
    assert one == later  # every turn of a conversation: the same version
    assert key(sys, ("user", "write a poem")) != one  # another conversation
    assert key(("user", "x"), session="s9") == "s9" and key(("user", "x"), user="u") == "u"
    assert split_key(session=None, user=None, key_digest="k", opening=[], request_id="r") == "r:r"


def test_skew_warns_only_when_one_key_carries_the_sample() -> None:
    assert skew({"aff|3": 40, "v2|req": 4}) is not None
    assert skew({"aff|3": 10}) is None  # too few to say
    spread = {f"aff|{b}": 5 for b in range(16)}
    assert skew(spread) is None


async def _chat(s: aiohttp.ClientSession, gw: Gateway, text: str) -> str:
    """One request of a one-key application: no session header, no user."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": text}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with s.post(f"{gw.http_url}/v1/chat/completions", json=body, headers=headers) as r:
        assert r.status == 200
        await r.read()
        return r.headers["x-meridian-version"]


async def _admin(s: aiohttp.ClientSession, gw: Gateway, method: str, body: Any = None) -> Any:
    async with s.request(method, gw.admin_url + C, json=body, headers=ADMIN) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def _phase(gw: Gateway) -> Phase | None:
    assert gw.runtime is not None and gw.runtime.control is not None
    canary = gw.runtime.control.state.canaries.get(MODEL)
    return None if canary is None else canary.phase


async def test_a_one_key_clients_canary_advances_at_10_percent(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config(
            [("us-v1", "aws:us-east-1", "v1", em.url), ("us-v2", "aws:us-east-1", "v2", em.url)],
            versions={"v1": 100, "v2": 0},
            store={"counts_flush_s": 0.05},
            failover={"hedge": False},
        )
    )
    plan = {"to": "v2", "steps": [10, 100], "interval_s": 0.3, "min_requests": 5}
    seen: dict[str, int] = {"v1": 0, "v2": 0}
    async with aiohttp.ClientSession() as s:
        await _admin(s, gw, "POST", plan)
        conversations = itertools.count()

        async def load() -> None:
            while _phase(gw) is Phase.PROGRESSING:
                seen[await _chat(s, gw, f"conversation {next(conversations)}")] += 1

        workers = [asyncio.create_task(load()) for _ in range(3)]
        try:
            await wait_for(lambda: _phase(gw) is not Phase.PROGRESSING, timeout=30)
        finally:
            await asyncio.gather(*workers)
        status = await _admin(s, gw, "GET")
    assert _phase(gw) is Phase.SUCCEEDED, status["last"]
    assert seen["v2"] > 0
    # The same conversation keeps its version turn after turn.
    async with aiohttp.ClientSession() as s:
        await _admin(s, gw, "POST", {**plan, "to": "v1", "interval_s": 3600})
        versions = {await _chat(s, gw, "the same opening") for _ in range(10)}
        assert len(versions) == 1


async def test_status_warns_when_one_affinity_key_carries_the_step(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config(
            [("us-v1", "aws:us-east-1", "v1", em.url), ("us-v2", "aws:us-east-1", "v2", em.url)],
            versions={"v1": 100, "v2": 0},
            store={"counts_flush_s": 0.05},
        )
    )
    plan = {"to": "v2", "steps": [10, 100], "interval_s": 3600, "min_requests": 5}
    async with aiohttp.ClientSession() as s:
        await _admin(s, gw, "POST", plan)
        for _ in range(25):
            await _chat(s, gw, "every request opens the same way")

        async def warned() -> Any:
            while True:
                body = await _admin(s, gw, "GET")
                if "25 of 25" in (body.get("warning") or ""):  # every count flushed
                    return body
                await asyncio.sleep(0.05)

        body = await asyncio.wait_for(warned(), 10)
    assert "25 of 25 requests in this step share one affinity key" in body["warning"]
