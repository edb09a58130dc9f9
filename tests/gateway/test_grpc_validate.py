"""gRPC validates its own messages (gateway/grpc/validate.py): the HTTP API's rules, each
failure INVALID_ARGUMENT naming the protobuf field, never a JSON path of a restated body."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import grpc
import pytest

from gateway.app.server import Gateway
from meridian_proto.meridian.v1 import inference_pb2 as pb
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.gateway.test_grpc_helpers import auth, chat, one_backend, stub, trailers


async def rpc_error(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value


def with_parts(*parts: pb.ContentPart) -> pb.ChatRequest:
    return pb.ChatRequest(
        model=MODEL,
        messages=[pb.Message(role="user", content="look:", parts=list(parts))],
        sampling=pb.Sampling(max_tokens=4),
    )


async def test_a_content_part_is_named_by_its_index_in_parts(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """The restated body put ``content`` first, so the old path was content.1."""
    em, gw = await one_backend(emulators, gateways)
    request = with_parts(pb.ContentPart(type="text", text="a"), pb.ContentPart(type=""))
    async with stub(gw) as s:
        err = await rpc_error(s.Chat(request, metadata=auth()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(err)["meridian-error-param"] == "messages.0.parts.1.type"
    assert (err.details() or "").startswith("messages.0.parts.1.type: ")
    assert em.stats.requests == 0


async def no_vision_nor_raw_body(emulators: EmulatorFactory, gateways: GatewayFactory) -> Gateway:
    em = await emulators()
    only_tools = {"capabilities": ["tools"]}
    rows = [("fra", "onprem:fra1", "v1", em.url, only_tools)]
    return await gateways(gateway_config(rows, listen={"grpc": "127.0.0.1:0"}))


async def test_a_capability_no_backend_has_names_the_proto_field(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    gw = await no_vision_nor_raw_body(emulators, gateways)
    image = with_parts(pb.ContentPart(type="image_url", image_url="https://example.com/a.png"))
    extra = chat()
    extra.extra_json = json.dumps({"top_k": 5})
    async with stub(gw) as s:
        vision = await rpc_error(s.Chat(image, metadata=auth()))
        raw = await rpc_error(s.Chat(extra, metadata=auth()))
    assert vision.code() == raw.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(vision)["meridian-error-param"] == "messages.0.parts.0"
    assert trailers(raw)["meridian-error-param"] == "extra_json.top_k"


async def test_extra_json_may_not_restate_a_sampling_or_routing_field(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """docs/grpc.md: extra_json "may not restate a field above"; the restated body let an
    unset sampling.temperature through as extra_json.temperature."""
    em, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        for name, value in (("temperature", 0.5), ("user", "u"), ("stop", ["x"])):
            request = chat()
            request.extra_json = json.dumps({name: value})
            err = await rpc_error(s.Chat(request, metadata=auth()))
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert trailers(err)["meridian-error-param"] == f"extra_json.{name}"
    assert em.stats.requests == 0


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (pb.EmbedRequest(model=MODEL), "input"),
        (pb.EmbedRequest(model=MODEL, input=["x"] * 2049), "input"),
        (pb.EmbedRequest(model=MODEL, input=["x"], dimensions=0), "dimensions"),
        (pb.EmbedRequest(model="", input=["x"]), "model"),
        (
            pb.EmbedRequest(model=MODEL, input=["x"], routing=pb.Routing(user="u" * 257)),
            "routing.user",
        ),
    ],
)
async def test_a_bad_embed_request_names_its_field(
    emulators: EmulatorFactory, gateways: GatewayFactory, request_: pb.EmbedRequest, param: str
) -> None:
    em, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        err = await rpc_error(s.Embed(request_, metadata=auth()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(err)["meridian-error-param"] == param
    assert em.stats.requests == 0


@pytest.mark.parametrize(
    ("body", "proto", "param"),
    [
        ({"temperature": 2.5}, chat(temperature=2.5), "sampling.temperature"),
        ({"top_p": -0.5}, chat(top_p=-0.5), "sampling.top_p"),
        ({"max_tokens": 0}, chat(0), "sampling.max_tokens"),
        ({"frequency_penalty": 2.5}, chat(frequency_penalty=2.5), "sampling.frequency_penalty"),
        (
            {"stop": ["a", "b", "c", "d", "e"]},
            chat(stop=["a", "b", "c", "d", "e"]),
            "sampling.stop",
        ),
        ({"user": "u" * 257}, chat(user="u" * 257), "routing.user"),
        ({"model": "m" * 257}, chat(model="m" * 257), "model"),
    ],
)
async def test_both_front_ends_refuse_a_value_in_the_same_words(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    body: dict[str, Any],
    proto: pb.ChatRequest,
    param: str,
) -> None:
    em, gw = await one_backend(emulators, gateways)
    http_param = next(iter(body))
    sent = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], **body}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{gw.http_url}/v1/chat/completions",
            json=sent,
            headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
        ) as response,
    ):
        assert response.status == 400
        error = (await response.json())["error"]
    async with stub(gw) as s:
        err = await rpc_error(s.Chat(proto, metadata=auth()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert trailers(err)["meridian-error-param"] == param
    assert error["message"].startswith(f"{http_param}: ")  # (its param: None for stop)
    said = (err.details() or "").removeprefix(f"{param}: ")
    assert said == error["message"].removeprefix(f"{http_param}: ")
    assert em.stats.requests == 0
