"""Resumption stays exact (issue 17): a stream with several choices, logprobs or
tool calls is never continued on another backend; a tool call is retried whole."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.gateway.test_openai_compat_passthrough import WEATHER, client


async def two_backends(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> tuple[Any, Any, Any]:
    first = await emulators()
    second = await emulators()
    gw = await gateways(
        gateway_config(
            [("a", "onprem:fra1", "v1", first.url), ("b", "onprem:fra1", "v1", second.url)],
            tenant={"explain": True},
        )
    )
    return first, second, gw


async def test_a_stream_of_several_choices_that_breaks_is_not_resumed(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    first, second, gw = await two_backends(emulators, gateways)
    for em in (first, second):
        em.faults.update({"reset_after_tokens": 3, "times": 1})
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Tell me about the sea"}],
        "n": 2,
        "max_tokens": 4,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        served = resp.headers["x-meridian-backend"]
        events = [line async for line in resp.content if line.startswith(b"data: ")]
    error = json.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "stream_failed"
    assert "not resumed: a stream with several choices ('n')" not in error["message"]
    assert (
        "not resumed: a stream with several choices (n) cannot be continued exactly"
        in (error["message"])
    )
    assert "request id" in error["message"] and "Error(" not in error["message"]
    other = second if served == "a" else first
    assert other.stats.requests == 0  # never resumed elsewhere


async def test_a_tool_call_broken_before_its_end_is_retried_whole(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """A tool call is only sent to the client once the backend has finished it (it
    has no text token before), so a break inside it is a failover from scratch,
    never a call spliced from two backends."""
    first, second, gw = await two_backends(emulators, gateways)
    for em in (first, second):
        em.faults.update({"reset_after_tokens": 2, "times": 1})
    async with client(gw.http_url) as c:
        chunks = await c.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather?"}],
            tools=[WEATHER],
            stream=True,
        )
        ids, arguments = set(), ""
        async for chunk in chunks:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or ():
                    if call.id:
                        ids.add(call.id)
                    if call.function is not None:
                        arguments += call.function.arguments or ""
    assert len(ids) == 1 and json.loads(arguments) == {"city": "text", "days": 1}
    assert first.stats.requests + second.stats.requests >= 2  # at least one failover
