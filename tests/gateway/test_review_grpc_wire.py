"""Bytes a gRPC client may send that no protobuf encoder writes: invalid UTF-8 in a
string field is the client's INVALID_ARGUMENT (as the HTTP API's 400 for a body that
is not UTF-8 JSON), not UNKNOWN, and no backend is asked."""

from __future__ import annotations

import grpc
import orjson
import pytest

from gateway.grpc.service import _Embeddings
from gateway.grpc.status import Refusal
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.events import TokenDelta
from tests.conftest import EmulatorFactory, GatewayFactory
from tests.gateway.test_grpc_helpers import auth, one_backend


def field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2) of fewer than 128 bytes."""
    return bytes([number << 3 | 2, len(payload)]) + payload


@pytest.mark.parametrize(
    "raw",
    [
        field(1, b"\xff\xfe"),  # model
        field(1, b"m") + field(2, field(1, b"user") + field(2, b"\xc3\x28")),  # content
    ],
    ids=["model", "messages.0.content"],
)
async def test_invalid_utf8_in_a_string_is_invalid_argument(
    raw: bytes, emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    async with grpc.aio.insecure_channel(gw.grpc_address) as channel:
        call = channel.unary_unary(
            "/meridian.v1.Inference/Chat",
            request_serializer=None,
            response_deserializer=pb.ChatResponse.FromString,
        )
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await call(raw, metadata=auth())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid meridian.v1.ChatRequest message" in (caught.value.details() or "")
    assert em.stats.requests == 0


@pytest.mark.parametrize("vector", [[1e39, 0.5], [True, 0.5], []])
async def test_an_embed_answer_protobuf_would_alter_is_refused(vector: list[object]) -> None:
    """A float32 field would turn 1e39 into inf and true into 1.0 in silence; an empty
    vector is no embedding: the reply is the 502 of a bad backend answer."""
    sink = _Embeddings()
    await sink.take(TokenDelta("", orjson.dumps({"data": [{"index": 0, "embedding": vector}]})))
    with pytest.raises(Refusal) as caught:
        sink.reply(pb.Served(), None)
    assert caught.value.status == 502
    await sink.take(TokenDelta("", orjson.dumps({"data": [{"index": 0, "embedding": [1, 0.5]}]})))
    assert list(sink.reply(pb.Served(), None).data[0].values) == [1.0, 0.5]
