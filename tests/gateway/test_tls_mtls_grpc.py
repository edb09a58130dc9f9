"""mTLS identities on the gRPC listener (issue 21 item 2): a verified certificate's
SAN is a tenant; one naming no tenant is UNAUTHENTICATED, the reason only logged."""

from __future__ import annotations

import logging

import grpc
import pytest

from meridian_proto.meridian.v1 import inference_pb2_grpc as pb_grpc
from tests.gateway.test_grpc_helpers import auth, chat
from tests.gateway.test_mtls import World, _channel, _metric_tenants, world

__all__ = ["world"]  # the fixture


async def test_grpc_certificate_identities_are_tenants(
    world: World, caplog: pytest.LogCaptureFixture
) -> None:
    for who in ("spiffe", "dns"):
        async with _channel(world, who) as channel:
            reply = await pb_grpc.InferenceStub(channel).Chat(chat(2), timeout=10)
            assert reply.text
    async with _channel(world, "unknown") as channel:
        s = pb_grpc.InferenceStub(channel)
        assert (await s.Chat(chat(2), metadata=auth(), timeout=10)).text
        with caplog.at_level(logging.INFO), pytest.raises(grpc.aio.AioRpcError) as err:
            await s.Chat(chat(2), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "spiffe" not in (err.value.details() or "")
    assert any("spiffe://corp.example/x" in r.getMessage() for r in caplog.records)
    exposition = _metric_tenants(world)
    assert 'tenant="summariser"' in exposition and 'tenant="indexer"' in exposition
