"""gRPC parity (issue 17 item 7): tools, tool calls, response format, logprobs, extras
and embeddings over meridian.v1.Inference, with a real grpcio client."""

from __future__ import annotations

import json
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2

from emulators.embeddings import vector
from meridian_proto.meridian.v1 import inference_pb2 as pb
from tests.conftest import MODEL, SERVED, EmulatorFactory, GatewayFactory
from tests.gateway.test_grpc_helpers import auth, one_backend, stub, trailers

SCHEMA: Any = {"type": "object", "properties": {"city": {"type": "string"}}}


def weather_tool(as_struct: bool) -> pb.Tool:
    if as_struct:
        params = struct_pb2.Struct()
        params.update(SCHEMA)
        return pb.Tool(name="get_weather", parameters_struct=params)
    return pb.Tool(name="get_weather", parameters_json=json.dumps(SCHEMA))


@pytest.mark.parametrize("as_struct", [False, True])
async def test_tools_stream_and_unary(
    emulators: EmulatorFactory, gateways: GatewayFactory, as_struct: bool
) -> None:
    em, gw = await one_backend(emulators, gateways)
    request = pb.ChatRequest(
        model=MODEL,
        messages=[pb.Message(role="user", content="Weather?")],
        tools=[weather_tool(as_struct)],
        extra_json='{"top_k": 5}',
    )
    async with stub(gw) as s:
        chunks = [c async for c in s.StreamChat(request, metadata=auth())]
        whole = await s.Chat(request, metadata=auth())
    calls = [c for chunk in chunks for c in chunk.tool_calls]
    assert calls[0].name == "get_weather" and calls[0].id.startswith("chatcmpl-tool-")
    assert json.loads("".join(c.arguments for c in calls)) == {"city": "text"}
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["tool_calls"]
    assert whole.finish_reason == "tool_calls" and len(whole.tool_calls) == 1
    assert json.loads(whole.tool_calls[0].arguments) == {"city": "text"}
    sent = em.stats.last_request
    assert sent is not None and sent["top_k"] == 5
    assert sent["tools"][0]["function"]["parameters"] == SCHEMA


async def test_tool_history_response_format_and_logprobs(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    call = pb.ToolCall(id="call_1", type="function", name="get_weather", arguments="{}")
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}}
    request = pb.ChatRequest(
        model=MODEL,
        messages=[
            pb.Message(role="user", content="Weather?"),
            pb.Message(role="assistant", tool_calls=[call]),
            pb.Message(role="tool", tool_call_id="call_1", content="sunny"),
        ],
        response_format=pb.ResponseFormat(
            type="json_schema", name="answer", schema_json=json.dumps(schema)
        ),
        logprobs=True,
        top_logprobs=2,
    )
    async with stub(gw) as s:
        whole = await s.Chat(request, metadata=auth())
        chunks = [c async for c in s.StreamChat(request, metadata=auth())]
    assert json.loads(whole.text) == {"ok": True}
    assert whole.logprobs and len(whole.logprobs[0].top_logprobs) == 2
    assert "".join(c.text for c in chunks) == whole.text
    assert sum(len(c.logprobs) for c in chunks) == len(whole.logprobs)
    sent = em.stats.last_request
    assert sent is not None
    assert sent["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert sent["messages"][2] == {"role": "tool", "content": "sunny", "tool_call_id": "call_1"}
    assert sent["response_format"]["json_schema"]["schema"] == schema


async def test_embed(emulators: EmulatorFactory, gateways: GatewayFactory) -> None:
    em, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        reply = await s.Embed(
            pb.EmbedRequest(model=MODEL, input=["a", "b"], dimensions=4), metadata=auth()
        )
    assert [e.index for e in reply.data] == [0, 1]
    assert all(abs(x - y) < 1e-6 for x, y in zip(reply.data[1].values, vector("b", 4), strict=True))
    assert reply.usage.prompt_tokens > 0 and reply.served.backend == "fra"
    assert em.stats.last_request == {
        "model": SERVED,
        "input": ["a", "b"],
        "encoding_format": "float",
        "dimensions": 4,
    }


async def test_extra_json_may_not_restate_a_field(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    request = pb.ChatRequest(
        model=MODEL, messages=[pb.Message(role="user", content="hi")], extra_json='{"n": 2}'
    )
    async with stub(gw) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.Chat(request, metadata=auth())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(caught.value)["meridian-error-param"] == "extra_json.n"
    assert em.stats.requests == 0
