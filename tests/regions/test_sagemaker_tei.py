"""Hugging Face TEI on SageMaker (issue 17 item 4): OpenAI embeddings in, TEI's native body out.

boto3 shows the emulator's ``tei`` container speaks TEI's ``/invocations``
(``EmbedRequest`` in, a bare list of vectors out, its ``ErrorResponse`` inside
SageMaker's ModelError); the ``openai`` SDK shows the gateway translates both
ways: strings, token ids, ``dimensions``, base64 (encoded by the gateway),
TEI's own extra fields, a 400 naming any other, and TEI's refusal in its words.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from botocore.exceptions import ClientError

from emulators.embeddings import vector
from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from emulators.vllm import VllmEmulator
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions import sagemaker_tei
from regions.errors import BackendError, FailureClass
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory
from tests.gateway.test_grpc_helpers import auth, stub
from tests.regions.test_sagemaker_vertex_openai import boto, client, close, config


@pytest.fixture
async def sm() -> AsyncIterator[SageMakerEmulator]:
    emulator = SageMakerEmulator(SageMakerEmulatorConfig(endpoints={"llm-tei": "tei"}))
    await emulator.start()
    yield emulator
    await emulator.stop()


def invoke(sm: SageMakerEmulator, body: Any) -> Any:
    resp = boto(sm.url).invoke_endpoint(
        EndpointName="llm-tei", Body=orjson.dumps(body), ContentType="application/json"
    )
    return orjson.loads(resp["Body"].read())


async def test_boto3_invoke_endpoint_speaks_teis_embed_request(sm: SageMakerEmulator) -> None:
    answer = await asyncio.to_thread(invoke, sm, {"inputs": ["the sea", "the sky"]})
    assert len(answer) == 2 and close(answer[1], vector("the sky"))
    cut = await asyncio.to_thread(invoke, sm, {"inputs": [1, 2, 3], "dimensions": 4})
    assert len(cut) == 1 and close(cut[0], vector([1, 2, 3], 4))


async def test_boto3_sees_teis_refusal_inside_a_model_error(sm: SageMakerEmulator) -> None:
    long = " ".join(["word"] * 600)
    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(invoke, sm, {"inputs": long, "truncate": False})
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError" and error["OriginalStatusCode"] == 422
    assert orjson.loads(error["OriginalMessage"]) == {
        "error": "Input validation error: `inputs` must have less than 512 tokens. Given: 600",
        "error_type": "validation",
    }


async def test_openai_embeddings_through_tei(
    sm: SageMakerEmulator, gateways: GatewayFactory
) -> None:
    gw = await gateways(config(sm.url, None, container="tei"))
    async with client(gw) as c:
        raw = await c.embeddings.with_raw_response.create(model=MODEL, input=["a b", "c"])
        sent_b64 = sm.stats.last_request
        floats = await c.embeddings.create(
            model=MODEL, input="a b c d e", encoding_format="float", dimensions=8
        )
        sent_dims = sm.stats.last_request
        ids = await c.embeddings.create(model=MODEL, input=[[1, 2], [3]], encoding_format="float")
        sent_ids = sm.stats.last_request
    reply = raw.parse()  # the SDK asks base64 and decodes it: the gateway encoded the floats
    assert raw.headers["x-meridian-backend"] == "sm" and reply.model == MODEL
    assert [d.index for d in reply.data] == [0, 1]
    assert close(reply.data[0].embedding, vector("a b")) and close(
        reply.data[1].embedding, vector("c")
    )
    assert sent_b64 == {"inputs": ["a b", "c"], "truncate": False}
    assert reply.usage.prompt_tokens == 2 and reply.usage.total_tokens == 2  # 3 + 1 chars, /4
    assert close(floats.data[0].embedding, vector("a b c d e", 8))
    assert sent_dims == {"inputs": "a b c d e", "truncate": False, "dimensions": 8}
    assert close(ids.data[1].embedding, vector([3]))
    assert sent_ids == {"inputs": [[1, 2], [3]], "truncate": False}
    assert ids.usage.prompt_tokens == 3  # token ids are counted


async def test_base64_is_float32_little_endian(
    sm: SageMakerEmulator, gateways: GatewayFactory
) -> None:
    gw = await gateways(config(sm.url, None, container="tei"))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.http_url + "/v1/embeddings",
            json={"model": MODEL, "input": "x", "encoding_format": "base64"},
            headers={"Authorization": "Bearer " + GLOBAL_KEY},
        ) as resp,
    ):
        assert resp.status == 200
        body = await resp.json()
    packed = base64.b64decode(body["data"][0]["embedding"])
    assert close(list(struct.unpack(f"<{len(packed) // 4}f", packed)), vector("x"))
    assert body["object"] == "list" and body["data"][0]["object"] == "embedding"


async def test_teis_own_fields_pass_and_others_are_refused_by_name(
    sm: SageMakerEmulator, gateways: GatewayFactory
) -> None:
    gw = await gateways(config(sm.url, None, container="tei"))
    async with client(gw) as c:
        await c.embeddings.create(
            model=MODEL,
            input="x",
            encoding_format="float",
            user="u1",
            extra_body={"truncate": True, "prompt_name": "query", "normalize": False},
        )
        sent = sm.stats.last_request
        before = sm.stats.requests
        with pytest.raises(openai.BadRequestError) as caught:
            await c.embeddings.create(model=MODEL, input="x", extra_body={"pooling": "mean"})
    assert sent == {"inputs": "x", "truncate": True, "prompt_name": "query", "normalize": False}
    assert "'pooling' is not a field of this backend's embeddings API" in caught.value.message
    assert sm.stats.requests == before  # refused before it was sent


async def test_teis_refusal_is_the_clients_400_in_teis_words(
    sm: SageMakerEmulator, emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """An input too long for the model: TEI's 422 inside a ModelError is the client's
    error (no failover to the vLLM server), its message TEI's text, not the
    CloudWatch pointer SageMaker wraps it in."""
    em: VllmEmulator = await emulators()
    gw = await gateways(config(sm.url, None, em.url, container="tei"))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.embeddings.create(model=MODEL, input=" ".join(["w"] * 600))
    message = caught.value.message
    assert message.endswith(
        "- Input validation error: `inputs` must have less than 512 tokens. Given: 600"
    )
    assert "cloudwatch" not in message.lower()
    assert em.stats.requests == 0


async def test_tei_serves_embeddings_only(sm: SageMakerEmulator, gateways: GatewayFactory) -> None:
    gw = await gateways(config(sm.url, None, container="tei"))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.chat.completions.create(
                model=MODEL,
                messages=[{"role": "user", "content": "hi"}],
                logprobs=True,
            )
    assert caught.value.code == "unsupported_parameter" and "logprobs" in caught.value.message
    assert sm.stats.requests == 0


# -- the translation, piece by piece ---------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [b"{", b'{"data": []}', b"[[0.1]]", b"[[0.1], [true]]", b'[[0.1], "x"]', b"[[0.1], []]"],
    ids=["not-json", "object", "one-of-two", "bool", "string", "empty"],
)
def test_a_malformed_tei_answer_is_stream_broken(raw: bytes) -> None:
    """Two inputs asked: anything but two lists of numbers fails over, never reaches
    the client half-made."""
    with pytest.raises(BackendError) as caught:
        sagemaker_tei.answer([(raw, 2)], {"input": ["a", "b"]})
    assert caught.value.failure is FailureClass.STREAM_BROKEN


def test_teis_error_text_replaces_sagemakers_wrapping() -> None:
    tei = orjson.dumps({"error": "`dimensions` should be positive", "error_type": "validation"})
    body = {
        "Message": "Received client error (422) from primary with message ... See https://...",
        "OriginalStatusCode": 422,
        "OriginalMessage": tei.decode(),
    }
    headers = {"x-amzn-ErrorType": "ModelError:http://internal.amazon.com/coral/"}
    exc = sagemaker_tei.error(424, headers, orjson.dumps(body))
    assert exc.failure is FailureClass.CLIENT and exc.status == 424
    assert exc.message == (
        "TEI validation error (container status 422): `dimensions` should be positive"
    )
    throttled = sagemaker_tei.error(
        400, {"x-amzn-ErrorType": "ThrottlingException"}, b'{"message": "slow down"}'
    )
    assert throttled.failure is FailureClass.OVERLOADED and "slow down" in throttled.message


def test_a_batch_is_split_at_teis_default_client_batch_size() -> None:
    def sent(value: Any) -> list[Any]:
        batches = sagemaker_tei.request_bodies({"input": value}, "sm")
        return [(orjson.loads(b.body)["inputs"], b.inputs) for b in batches]

    assert [n for _, n in sent(["a"] * 70)] == [32, 32, 6]
    assert sent([[1, 2]] * 33) == [([[1, 2]] * 32, 32), ([[1, 2]], 1)]
    assert sent([1, 2, 3]) == [([1, 2, 3], 1)]  # the token ids of one input
    assert sent("a") == [("a", 1)]


async def test_a_large_batch_goes_as_several_invocations_joined_in_order(
    sm: SageMakerEmulator, gateways: GatewayFactory
) -> None:
    """TEI refuses more than 32 inputs a request (the emulator too, as TEI's default):
    the SDK's batch of 70 is three InvokeEndpoint calls and one answer."""
    gw = await gateways(config(sm.url, None, container="tei"))
    words = [f"w{i}" for i in range(70)]
    async with client(gw) as c:
        reply = await c.embeddings.create(model=MODEL, input=words, encoding_format="float")
    assert sm.stats.requests == 3 and sm.stats.completed == 3
    assert [d.index for d in reply.data] == list(range(70))
    assert all(close(d.embedding, vector(w)) for d, w in zip(reply.data, words, strict=True))


async def test_grpc_embed_through_tei(sm: SageMakerEmulator, gateways: GatewayFactory) -> None:
    gw = await gateways(config(sm.url, None, container="tei", grpc=True))
    async with stub(gw) as s:
        reply = await s.Embed(pb.EmbedRequest(model=MODEL, input=["a", "b"]), metadata=auth())
    assert reply.served.backend == "sm"
    assert close(list(reply.data[1].values), vector("b"))
    assert sm.stats.last_request == {"inputs": ["a", "b"], "truncate": False}
