"""Cancellation, deadlines, draining, health and reflection of the gRPC listener."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from gateway.grpc import SERVICE_NAME
from tests.conftest import EmulatorFactory, GatewayFactory, runtime_of, wait_for
from tests.gateway.test_grpc_helpers import auth, chat, one_backend, stub, trailers

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def freed(gw, em, disconnects: int = 1):  # type: ignore[no-untyped-def]
    """The upstream saw the disconnect and the gateway holds no stream for it."""
    return lambda: em.stats.disconnects == disconnects and runtime_of(gw).lifecycle.in_flight == 0


async def read_rest(call: Any) -> list[Any]:
    """The remaining chunks of a call already read with ``read()`` (the APIs don't mix)."""
    chunks: list[Any] = []
    while (chunk := await call.read()) is not grpc.aio.EOF:
        chunks.append(chunk)
    if await call.code() != grpc.StatusCode.OK:
        raise grpc.aio.AioRpcError(
            await call.code(),
            await call.initial_metadata(),
            await call.trailing_metadata(),
            await call.details(),
        )
    return chunks


async def test_client_cancel_mid_stream_cancels_the_upstream(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways, itl_s=0.01)
    async with stub(gw) as s:
        call = s.StreamChat(chat(100_000), metadata=auth())
        for _ in range(3):
            assert (await call.read()).text
        assert em.stats.running == 1
        call.cancel()
        await wait_for(freed(gw, em))
        assert await call.code() == grpc.StatusCode.CANCELLED
    assert em.stats.running == 0
    assert b'status="499"' in runtime_of(gw).metrics.exposition()


async def test_deadline_before_the_first_token_frees_the_upstream(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    em.faults.update({"stall_after_tokens": 0})  # headers, then nothing
    async with stub(gw) as s:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await s.Chat(chat(), metadata=auth(), timeout=0.3)
        await wait_for(freed(gw, em))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert b'status="504"' in runtime_of(gw).metrics.exposition()


async def test_deadline_mid_stream_ends_it_and_frees_the_upstream(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways, itl_s=0.01)
    async with stub(gw) as s:
        call = s.StreamChat(chat(100_000), metadata=auth(), timeout=0.4)
        texts = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for chunk in call:
                texts.append(chunk.text)
        await wait_for(freed(gw, em))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert texts  # tokens flowed until the deadline


async def test_drain_flips_health_refuses_new_calls_and_cuts_long_streams(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways, itl_s=0.02)
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert answer.status == SERVING
        async with stub(gw) as s:
            short = s.StreamChat(chat(10), metadata=auth())  # ~0.2 s: ends within the grace
            long = s.StreamChat(chat(100_000), metadata=auth())  # cannot finish
            assert (await short.read()).text and (await long.read()).text
            stopping = asyncio.create_task(gw.stop(grace=0.6))
            await wait_for(lambda: runtime_of(gw).lifecycle.draining)
            for service in ("", SERVICE_NAME):
                answer = await health.Check(health_pb2.HealthCheckRequest(service=service))
                assert answer.status == NOT_SERVING
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await s.Chat(chat(2), metadata=auth())
            short_rest = await read_rest(short)
            with pytest.raises(grpc.aio.AioRpcError) as cut:
                await read_rest(long)
            assert await stopping == 1
    assert await short.code() == grpc.StatusCode.OK
    assert [c.finish_reason for c in short_rest if c.finish_reason] == ["length"]
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(refused.value)["meridian-error-code"] == "shutting_down"
    assert trailers(refused.value)["retry-after"] == "1"
    assert cut.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in (cut.value.details() or "")


async def test_reflection_lists_and_describes_the_service(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        call = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        listed = await call.read()
        await call.write(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME)
        )
        described = await call.read()
        await call.done_writing()
    names = {s.name for s in listed.list_services_response.service}
    assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto  # grpcurl can call it
