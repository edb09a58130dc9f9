"""The whole OpenAI body reaches the backend, or is refused out loud (issue 17).

The judges are the stock ``openai`` SDK and the body the vLLM emulator recorded
(``stats.last_request``): it must equal the client's body but for the fields
the gateway owns (model, stream, stream_options, resumption).
"""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import openai
import pytest
from pydantic import BaseModel

from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)

WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}

OWNED = ("model", "stream", "stream_options")


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=GLOBAL_KEY, max_retries=0)


async def post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(url + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        return resp.status, json.loads(await resp.read())


def without_owned(body: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in body.items() if k not in OWNED}


async def test_backend_receives_the_clients_body_but_for_owned_fields(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": "be brief", "name": "ops"},
            {"role": "user", "content": "Weather in Paris?", "name": "ann"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "and this?"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
        "tools": [WEATHER],
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "response_format": {"type": "json_object"},
        "logprobs": True,
        "top_logprobs": 2,
        "top_k": 20,
        "min_p": 0.05,
        "repetition_penalty": 1.1,
        "seed": 7,
        "stop": ["\n\n"],
        "max_tokens": 8,
        "temperature": 0.3,
        "stream": False,
    }
    status, answer = await post(gw.http_url, body)
    assert status == 200, answer
    sent = em.stats.last_request
    assert sent is not None
    assert without_owned(sent) == without_owned(body)
    assert sent["model"] == SERVED and sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    # The reply keeps what the backend wrote: a new tool call (the last message is the user's).
    message = answer["choices"][0]["message"]
    assert message["tool_calls"][0]["function"]["name"] == "get_weather"
    assert answer["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("stream", [False, True])
async def test_tool_calls_reach_the_sdk(
    emulators: EmulatorFactory, gateways: GatewayFactory, stream: bool
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        messages: Any = [{"role": "user", "content": "Weather in Paris?"}]
        if stream:
            chunks = await c.chat.completions.create(
                model=MODEL,
                messages=messages,
                tools=[WEATHER],
                stream=True,
            )
            name, arguments, call_id, finish = "", "", "", None
            async for chunk in chunks:
                for choice in chunk.choices:
                    for call in choice.delta.tool_calls or ():
                        call_id = call.id or call_id
                        if call.function is not None:
                            name += call.function.name or ""
                            arguments += call.function.arguments or ""
                    finish = choice.finish_reason or finish
        else:
            reply = await c.chat.completions.create(
                model=MODEL,
                messages=messages,
                tools=[WEATHER],
            )
            calls = reply.choices[0].message.tool_calls
            assert calls is not None and len(calls) == 1
            made = calls[0]
            assert made.type == "function"
            name, arguments, call_id = made.function.name, made.function.arguments, made.id
            finish = reply.choices[0].finish_reason
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "text", "days": 1}
    assert call_id.startswith("chatcmpl-tool-")
    assert finish == "tool_calls"


class Weather(BaseModel):
    city: str
    celsius: int
    sunny: bool


async def test_parse_with_a_pydantic_schema(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        parsed = await c.chat.completions.parse(
            model=MODEL,
            messages=[{"role": "user", "content": "Weather in Paris?"}],
            response_format=Weather,
        )
    assert parsed.choices[0].message.parsed == Weather(city="text", celsius=1, sunny=True)
    sent = em.stats.last_request
    assert sent is not None and sent["response_format"]["type"] == "json_schema"


@pytest.mark.parametrize("stream", [False, True])
async def test_n_choices_and_logprobs(
    emulators: EmulatorFactory, gateways: GatewayFactory, stream: bool
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        messages: Any = [{"role": "user", "content": "Tell me about the sea"}]
        texts: dict[int, str] = {}
        logprobs: dict[int, int] = {}
        if stream:
            chunks = await c.chat.completions.create(
                model=MODEL, messages=messages, n=2, max_tokens=4, logprobs=True, stream=True
            )
            async for chunk in chunks:
                for choice in chunk.choices:
                    texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
                    if choice.logprobs and choice.logprobs.content:
                        logprobs[choice.index] = logprobs.get(choice.index, 0) + len(
                            choice.logprobs.content
                        )
        else:
            reply = await c.chat.completions.create(
                model=MODEL, messages=messages, n=2, max_tokens=4, logprobs=True
            )
            for whole in reply.choices:
                texts[whole.index] = whole.message.content or ""
                assert whole.logprobs is not None and whole.logprobs.content is not None
                logprobs[whole.index] = len(whole.logprobs.content)
                assert whole.finish_reason == "length"
    assert sorted(texts) == [0, 1] and texts[0] == texts[1] and texts[0]
    assert logprobs == {0: 4, 1: 4}


async def test_batched_completion_prompts(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        reply = await c.completions.create(
            model=MODEL, prompt=["Once upon", "In the sea"], max_tokens=3, logprobs=1
        )
    assert [ch.index for ch in reply.choices] == [0, 1]
    assert all(ch.text and ch.logprobs and ch.logprobs.tokens for ch in reply.choices)


async def test_a_backend_that_cannot_take_a_field_is_not_chosen_or_the_field_is_refused(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em_tgi = await emulators()
    em_vllm = await emulators()
    only_tgi = await gateways(
        gateway_config([("tgi", "onprem:fra1", "v1", em_tgi.url, {"provider": "tgi"})])
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": 2}
    status, err = await post(only_tgi.http_url, body)
    assert status == 400
    assert err["error"]["code"] == "unsupported_parameter"
    assert err["error"]["param"] == "n"
    assert "'n' needs several choices" in err["error"]["message"]
    assert em_tgi.stats.requests == 0
    both = await gateways(
        gateway_config(
            [
                ("tgi", "onprem:fra1", "v1", em_tgi.url, {"provider": "tgi"}),
                ("vllm", "onprem:fra1", "v1", em_vllm.url, {}),
            ]
        )
    )
    for _ in range(4):
        status, answer = await post(both.http_url, body)
        assert status == 200 and len(answer["choices"]) == 2
    assert em_tgi.stats.requests == 0 and em_vllm.stats.requests == 4


async def test_route_explain_shows_capability_filtering(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    from tests.conftest import ADMIN_TOKEN

    em = await emulators()
    gw = await gateways(
        gateway_config(
            [
                ("tgi", "onprem:fra1", "v1", em.url, {"provider": "tgi"}),
                ("vllm", "onprem:fra1", "v1", em.url, {}),
            ]
        )
    )
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with aiohttp.ClientSession() as session:
        url = gw.admin_url + "/admin/v1/route/explain"
        params = {"model": MODEL, "needs": "multiple_choices,tools"}
        async with session.get(url, params=params, headers=headers) as resp:
            assert resp.status == 200
            body = await resp.json()
        async with session.get(url, params={"model": MODEL, "needs": "x"}, headers=headers) as r:
            assert r.status == 400
    assert [c["backend"] for c in body["candidates"]] == ["vllm"]
    assert body["excluded"] == [
        {
            "backend": "tgi",
            "why": "lacks multiple_choices: 'multiple_choices' needs several "
            "choices in one request",
        }
    ]


@pytest.mark.parametrize(
    ("extra", "param", "says"),
    [
        ({"tools": [WEATHER]}, "tools", "tool calling"),
        ({"response_format": {"type": "json_object"}}, "response_format", "structured output"),
        ({"logprobs": True}, "logprobs", "log probabilities"),
        ({"top_k": 5}, "top_k", "the OpenAI request body as sent"),
    ],
)
async def test_native_sagemaker_payloads_refuse_what_they_cannot_carry(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    extra: dict[str, Any],
    param: str,
    says: str,
) -> None:
    """SageMaker's TGI container gets the gateway's own payload: a field it cannot
    carry is a 400 naming it, never a 200 without it."""
    em = await emulators()
    sagemaker = {
        "provider": "sagemaker",
        "sagemaker": {
            "endpoint_name": "e",
            "region": "eu-central-1",
            "container": "tgi",
            "credentials": "emulator",
        },
    }
    gw = await gateways(gateway_config([("sm", "onprem:fra1", "v1", em.url, sagemaker)]))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **extra}
    status, err = await post(gw.http_url, body)
    assert status == 400, err
    assert err["error"]["param"] == param and says in err["error"]["message"]
    assert em.stats.requests == 0


async def test_a_declared_capability_set_narrows_what_a_backend_gets(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """A text-only model on vLLM declares no vision: image parts go elsewhere or get a 400."""
    text_only = await emulators()
    vlm = await emulators()
    declared = {"capabilities": ["tools", "structured_output", "logprobs", "openai_body"]}
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    body = {"model": MODEL, "messages": [{"role": "user", "content": [image]}], "max_tokens": 2}
    alone = await gateways(gateway_config([("t", "onprem:fra1", "v1", text_only.url, declared)]))
    status, err = await post(alone.http_url, body)
    assert status == 400 and err["error"]["param"] == "messages.0.content.0"
    both = await gateways(
        gateway_config(
            [
                ("t", "onprem:fra1", "v1", text_only.url, declared),
                ("v", "onprem:fra1", "v1", vlm.url, {}),
            ]
        )
    )
    for _ in range(3):
        status, _ = await post(both.http_url, body)
        assert status == 200
    assert text_only.stats.requests == 0 and vlm.stats.requests == 3


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
async def test_recorded_body_equals_the_clients_streamed_or_not(
    emulators: EmulatorFactory, gateways: GatewayFactory, stream: bool, path: str
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 3,
        "top_k": 4,
        "min_p": 0.1,
        "ignore_eos": False,
        "logit_bias": {"42": -100},
        "user": "u1",
        "stream": stream,
    }
    if path == "/v1/chat/completions":
        body["messages"] = [{"role": "user", "content": "hi", "name": "ann"}]
    else:
        body |= {"prompt": "Once upon", "echo": False, "suffix": "."}
    if stream:
        body["stream_options"] = {"include_usage": False}
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.http_url + path, json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        received = await resp.read()
    sent = em.stats.last_request
    assert sent is not None and without_owned(sent) == without_owned(body)
    if stream:
        assert b'"usage"' not in received.replace(b'"usage":null', b"")  # not asked for


async def test_a_request_that_cannot_fit_a_declared_context_goes_elsewhere_or_is_a_400(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    small = await emulators()
    large = await emulators()
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
    alone = await gateways(
        gateway_config([("s", "onprem:fra1", "v1", small.url, {"context_length": 100})])
    )
    status, err = await post(alone.http_url, body)
    assert status == 400 and err["error"]["param"] == "max_tokens"
    assert "context window" in err["error"]["message"]
    both = await gateways(
        gateway_config(
            [
                ("s", "onprem:fra1", "v1", small.url, {"context_length": 100}),
                ("l", "onprem:fra1", "v1", large.url, {"context_length": 4096}),
            ]
        )
    )
    for _ in range(3):
        status, _ = await post(both.http_url, body)
        assert status == 200
    status, _ = await post(both.http_url, {**body, "max_tokens": 5})
    assert status == 200
    assert small.stats.requests <= 1 and large.stats.requests >= 3
