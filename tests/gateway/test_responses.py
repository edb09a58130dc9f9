"""POST /v1/responses, stateless, judged by the stock openai SDK (issue 17 item 5)."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from emulators.text import expected_text, render_chat
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config

TOOL: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=GLOBAL_KEY, max_retries=0)


async def test_create_streaming_text(emulators: EmulatorFactory, gateways: GatewayFactory) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        stream = await c.responses.create(
            model=MODEL,
            instructions="be brief",
            input="Tell me about the sea",
            max_output_tokens=6,
            store=False,
            stream=True,
        )
        kinds, text, final = [], "", None
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                text += event.delta
            if event.type in ("response.completed", "response.incomplete"):
                final = event.response
    context = render_chat([("system", "be brief"), ("user", "Tell me about the sea")], False)
    assert text == expected_text(context, 6)
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.incomplete"  # cut by max_output_tokens
    assert "response.output_item.added" in kinds and "response.output_text.done" in kinds
    assert final is not None and final.output_text == text
    assert final.usage is not None and final.usage.output_tokens == 6
    sent = em.stats.last_request
    assert sent is not None and sent["messages"][0] == {"role": "system", "content": "be brief"}
    assert sent["max_tokens"] == 6


async def test_create_with_a_function_tool_streaming_and_not(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        whole = await c.responses.create(model=MODEL, input="Weather?", tools=[TOOL])
        stream = await c.responses.create(model=MODEL, input="Weather?", tools=[TOOL], stream=True)
        arguments, done = "", None
        async for event in stream:
            if event.type == "response.function_call_arguments.delta":
                arguments += event.delta
            if event.type == "response.completed":
                done = event.response
        # The tool's answer goes back as input items; the model then speaks.
        call = whole.output[0]
        assert call.type == "function_call"
        answer = await c.responses.create(
            model=MODEL,
            input=[
                {"role": "user", "content": "Weather?"},
                {
                    "type": "function_call",
                    "call_id": call.call_id,
                    "name": call.name,
                    "arguments": call.arguments,
                },
                {"type": "function_call_output", "call_id": call.call_id, "output": "sunny"},
            ],
            tools=[TOOL],
        )
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "text"}
    assert json.loads(arguments) == {"city": "text"}
    assert done is not None and done.output[0].type == "function_call"
    assert answer.output_text
    sent = em.stats.last_request
    assert sent is not None
    assert sent["messages"][1]["tool_calls"][0]["id"] == call.call_id
    assert sent["messages"][2] == {"role": "tool", "tool_call_id": call.call_id, "content": "sunny"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id"),
        ({"store": True}, "store"),
        ({"tools": [{"type": "web_search"}]}, "tools.0"),
        ({"reasoning": {"effort": "low"}}, "reasoning"),
    ],
)
async def test_what_a_stateless_gateway_cannot_do_is_a_400(
    emulators: EmulatorFactory, gateways: GatewayFactory, extra: dict[str, Any], param: str
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.responses.create(model=MODEL, input="hi", **extra)
    assert caught.value.param == param
    assert em.stats.requests == 0


async def test_the_sdks_stream_helper_accumulates_the_events(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        async with c.responses.stream(model=MODEL, input="Tell me about the sea") as stream:
            final = await stream.get_final_response()
        async with c.responses.stream(model=MODEL, input="Weather?", tools=[TOOL]) as stream:
            called = await stream.get_final_response()
    context = render_chat([("user", "Tell me about the sea")], False)
    assert final.output_text == expected_text(context, 32)  # the emulator's default length
    call = called.output[0]
    assert call.type == "function_call" and json.loads(call.arguments) == {"city": "text"}


async def test_the_demo_serves_tools_from_backends_that_can() -> None:
    """Inside the EU key's residency, a tool call is answered by a backend whose
    container takes tools (the vLLM server, Vertex's vLLM container), never by the
    SageMaker TGI endpoint in aws:eu-west-1, whose native payload has no tools."""
    from gateway.cli.demo import MODEL as DEMO_MODEL
    from gateway.cli.demo import Demo

    demo = Demo("127.0.0.1:0", "127.0.0.1:0", None)
    gw = await demo.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=gw.http_url + "/v1", api_key="sk-demo-eu", max_retries=0
        ) as c:
            for _ in range(3):
                reply = await c.responses.with_raw_response.create(
                    model=DEMO_MODEL, input="Weather?", tools=[TOOL]
                )
                assert reply.headers["x-meridian-region"] in {"onprem:fra1", "gcp:europe-west4"}
                assert reply.parse().output[0].type == "function_call"
    finally:
        await demo.stop()
