"""Other real clients as judges (issue 17): LangChain's ChatOpenAI, and vision parts
through the openai SDK."""

from __future__ import annotations

from typing import Any

import openai
from langchain_core.tools import tool
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


class Forecast(BaseModel):
    city: str
    celsius: int


def chat_model(url: str) -> ChatOpenAI:
    return ChatOpenAI(
        model=MODEL,
        base_url=url + "/v1",
        api_key=GLOBAL_KEY,
        max_retries=0,
    )


async def test_langchain_bind_tools_and_structured_output(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    llm = chat_model(gw.http_url)
    message = await llm.bind_tools([get_weather]).ainvoke("Weather in Paris?")
    assert [c["name"] for c in message.tool_calls] == ["get_weather"]
    assert message.tool_calls[0]["args"] == {"city": "text"}
    streamed: Any = None
    async for piece in llm.bind_tools([get_weather]).astream("Weather in Paris?"):
        streamed = piece if streamed is None else streamed + piece
    assert [c["name"] for c in streamed.tool_calls] == ["get_weather"]
    forecast = await llm.with_structured_output(Forecast).ainvoke("Weather in Paris?")
    assert forecast == Forecast(city="text", celsius=1)


async def test_image_parts_reach_the_backend(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    image: Any = {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "What?"}, image]}]
    async with openai.AsyncOpenAI(
        base_url=gw.http_url + "/v1", api_key=GLOBAL_KEY, max_retries=0
    ) as c:
        reply = await c.chat.completions.create(
            model=MODEL,
            messages=messages,
            max_tokens=3,
        )
    assert reply.choices[0].message.content
    sent = em.stats.last_request
    assert sent is not None and sent["messages"][0]["content"][1] == image
