"""Shared by the gRPC tests (it holds no tests): a gateway with gRPC on, stubs, requests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import grpc

from gateway.app.server import Gateway
from gateway.config.model import Config
from meridian_proto.meridian.v1 import inference_pb2 as pb
from meridian_proto.meridian.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config

PROMPT = "Tell me about the sea"


def grpc_config(backends: list[tuple[str, str, str, str]], **overrides: Any) -> Config:
    listen = {"grpc": "127.0.0.1:0", **overrides.pop("listen", {})}
    return gateway_config(backends, listen=listen, **overrides)


async def one_backend(
    emulators: EmulatorFactory, gateways: GatewayFactory, **emulator: Any
) -> tuple[Any, Gateway]:
    em = await emulators(**emulator)
    gw = await gateways(grpc_config([("fra", "onprem:fra1", "v1", em.url)]))
    return em, gw


@asynccontextmanager
async def stub(gw: Gateway) -> AsyncIterator[pb_grpc.InferenceStub]:
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        yield pb_grpc.InferenceStub(channel)


def auth(key: str = GLOBAL_KEY) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def chat(
    max_tokens: int | None = 8,
    *,
    content: str = PROMPT,
    include_usage: bool = False,
    residency: Sequence[str] = (),
    user: str = "",
    **sampling: Any,
) -> pb.ChatRequest:
    request = pb.ChatRequest(
        model=sampling.pop("model", MODEL),
        messages=[pb.Message(role="user", content=content)],
        include_usage=include_usage,
        routing=pb.Routing(residency=list(residency), user=user),
    )
    if max_tokens is not None:
        request.sampling.max_tokens = max_tokens
    for name, value in sampling.items():
        if name == "stop":
            request.sampling.stop.extend(value)
        else:
            setattr(request.sampling, name, value)
    return request


def trailers(err: grpc.aio.AioRpcError) -> dict[str, Any]:
    return dict(err.trailing_metadata() or ())
