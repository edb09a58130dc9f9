"""LiteLLM's SDK as a client judge (issue 17): the gateway as an ``openai/`` provider.

LiteLLM parses the replies with its own code (not the openai SDK's models for
streams), so tool calls, streamed deltas and usage must be in the shapes it
expects from an OpenAI-compatible server.
"""

from __future__ import annotations

import importlib
import os
from typing import Any

import pytest

from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config

# LiteLLM fetches its model price map from GitHub at import unless told to use its copy.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
litellm: Any = importlib.import_module("litellm")  # typed loosely: its stubs are partial

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"],
            },
        },
    }
]


def _args(url: str) -> dict[str, Any]:
    return {
        "model": f"openai/{MODEL}",
        "api_base": url + "/v1",
        "api_key": GLOBAL_KEY,
        "max_retries": 0,
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    }


async def test_litellm_text_and_tools_streamed_and_not(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))

    reply = await litellm.acompletion(**_args(gw.http_url), max_tokens=5)
    assert reply.choices[0].message.content
    assert reply.usage.completion_tokens == 5

    text = ""
    async for chunk in await litellm.acompletion(**_args(gw.http_url), max_tokens=5, stream=True):
        text += chunk.choices[0].delta.content or ""
    assert text == reply.choices[0].message.content  # the emulator's text is deterministic

    called = await litellm.acompletion(**_args(gw.http_url), tools=TOOLS, tool_choice="auto")
    calls = called.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather"]
    sent = em.stats.last_request
    assert sent is not None and sent["tools"] == TOOLS  # reached the backend as sent

    pieces = []
    async for chunk in await litellm.acompletion(
        **_args(gw.http_url), tools=TOOLS, tool_choice="auto", stream=True
    ):
        pieces.append(chunk)
    streamed = litellm.stream_chunk_builder(pieces)
    names = [c.function.name for c in streamed.choices[0].message.tool_calls]
    assert names == ["get_weather"]
    assert (
        streamed.choices[0].message.tool_calls[0].function.arguments == calls[0].function.arguments
    )


async def test_litellm_sees_the_gateways_refusal_as_a_bad_request(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    with pytest.raises(litellm.BadRequestError) as refused:
        await litellm.acompletion(**_args(gw.http_url), max_tokens=-1)
    assert "max_tokens" in str(refused.value)
