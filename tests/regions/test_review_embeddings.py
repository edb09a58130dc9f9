"""Hostile embedding backends (review of issue 17): what TEI on SageMaker and Google's
``:predict`` may answer, and what the gateway must make of it.

A number beyond float32, vectors of mixed sizes or not the size asked, an answer
without statistics, and a batch whose answers together exceed the cap: each is a
clear failure class or an honest usage, never a traceback nor a silent half-truth.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from emulators import embeddings as emulated
from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from regions import embeddings, sagemaker_tei, vertex_embeddings
from regions.errors import BackendError, FailureClass
from regions.events import TokenDelta
from regions.request import GenerationRequest, Kind
from regions.sagemaker import SageMakerProvider
from tests.conftest import wait_for
from tests.regions.test_sagemaker_adapter import spec


def predictions(*vectors: list[float], stats: bool = True) -> bytes:
    found: list[dict[str, Any]] = []
    for v in vectors:
        got: dict[str, Any] = {"values": v}
        if stats:
            got["statistics"] = {"token_count": 7.0, "truncated": False}
        found.append({"embeddings": got})
    return orjson.dumps({"predictions": found})


@pytest.mark.parametrize("fmt", ["base64", "float"])
def test_a_number_beyond_float32_is_a_broken_answer_not_a_crash(fmt: str) -> None:
    with pytest.raises(BackendError) as caught:
        sagemaker_tei.answer([(b"[[1e39, 0.5]]", 1)], {"input": "x", "encoding_format": fmt})
    assert caught.value.failure is FailureClass.STREAM_BROKEN
    with pytest.raises(BackendError) as caught:
        vertex_embeddings.answer([(predictions([0.5, -1e39]), 1)], {"input": "x"})
    assert caught.value.failure is FailureClass.STREAM_BROKEN


def test_tei_vectors_of_mixed_sizes_across_batches_are_refused() -> None:
    # two calls of one batch reached two variants serving different models
    parts = [(b"[[0.1, 0.2]]", 1), (b"[[0.1, 0.2, 0.3]]", 1)]
    with pytest.raises(BackendError, match="different sizes") as caught:
        sagemaker_tei.answer(parts, {"input": ["a", "b"]})
    assert caught.value.failure is FailureClass.STREAM_BROKEN


def test_vectors_not_of_the_dimensions_asked_are_refused() -> None:
    with pytest.raises(BackendError, match="3 dimensions, 2 asked"):
        sagemaker_tei.answer([(b"[[0.1, 0.2, 0.3]]", 1)], {"input": "a", "dimensions": 2})
    with pytest.raises(BackendError, match="3 dimensions, 2 asked"):
        vertex_embeddings.answer(
            [(predictions([0.1, 0.2, 0.3]), 1)], {"input": "a", "dimensions": 2}
        )
    body, _ = sagemaker_tei.answer([(b"[[0.1, 0.2]]", 1)], {"input": "a", "dimensions": 2})
    assert len(orjson.loads(body)["data"][0]["embedding"]) == 2


def test_a_predict_answer_without_statistics_is_estimated_not_free() -> None:
    client = {"input": ["abcdefghijkl", "ab", "abcd"]}  # 3 + 1 + 1 tokens estimated
    parts = [(predictions([0.1], [0.2], stats=False), 2), (predictions([0.3]), 1)]
    body, tokens = vertex_embeddings.answer(parts, client)
    assert tokens == 3 + 1 + 7  # the one Google counted is Google's
    assert orjson.loads(body)["usage"] == {"prompt_tokens": 11, "total_tokens": 11}


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def tei_server(pad: int) -> web.AppRunner:
    """A TEI whose every answer is right but padded with ``pad`` bytes of whitespace."""

    async def invoke(req: web.Request) -> web.Response:
        inputs = orjson.loads(await req.read())["inputs"]
        count = len(inputs) if isinstance(inputs, list) else 1
        return web.Response(body=orjson.dumps([[0.5, 0.25]] * count) + b" " * pad)

    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner


def embedding(inputs: list[str]) -> GenerationRequest:
    return GenerationRequest(
        kind=Kind.EMBEDDING,
        model="m",
        request_id="0123456789abcdef0123456789abcdef",
        body={"model": "m", "input": inputs, "encoding_format": "float"},
        choices=len(inputs),
    )


async def test_the_answers_of_one_batch_share_one_byte_cap(
    http: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(embeddings, "MAX_EMBEDDINGS_BYTES", 1 << 20)
    runner = await tei_server(pad=400 << 10)  # each answer under the cap, three over it
    try:
        provider = SageMakerProvider(
            spec(f"http://127.0.0.1:{runner.addresses[0][1]}", "tei"), http
        )
        two = [e async for e in provider.stream(embedding(["x"] * 64))]  # 2 calls, 800 KiB
        assert [
            len(orjson.loads(e.raw or b"")["data"]) for e in two if isinstance(e, TokenDelta)
        ] == [64]
        with pytest.raises(BackendError, match="over 1048576 bytes") as caught:
            async for _ in provider.stream(embedding(["x"] * 96)):  # 3 calls, 1.2 MiB
                pass
    finally:
        await runner.cleanup()
    assert caught.value.failure is FailureClass.STREAM_BROKEN


async def test_one_failed_call_closes_the_calls_still_in_flight(
    http: aiohttp.ClientSession,
) -> None:
    """The second of three TEI calls is refused while the others stall: the attempt
    fails with TEI's words at once, and the stalled calls' connections are closed."""
    stalled: list[web.Request] = []
    never, both_stalled = asyncio.Event(), asyncio.Event()

    async def invoke(req: web.Request) -> web.StreamResponse:
        inputs = orjson.loads(await req.read())["inputs"]
        if inputs[0] == "bad":
            await both_stalled.wait()  # fail only once the others are in flight
            original = orjson.dumps({"error": "no", "error_type": "validation"}).decode()
            return web.json_response(
                {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": 422,
                 "OriginalMessage": original, "Message": "model error"},
                status=424,
                headers={"x-amzn-ErrorType": "ModelError:http://internal.amazon.com/"},
            )  # fmt: skip
        stalled.append(req)
        if len(stalled) == 2:
            both_stalled.set()
        await never.wait()
        raise AssertionError("a stalled call was answered")

    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations", invoke)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        provider = SageMakerProvider(
            spec(f"http://127.0.0.1:{runner.addresses[0][1]}", "tei"), http
        )
        inputs = ["x"] * 32 + ["bad"] * 32 + ["y"] * 32
        with pytest.raises(BackendError, match="TEI validation error") as caught:
            async for _ in provider.stream(embedding(inputs)):
                pass
        assert caught.value.failure is FailureClass.CLIENT
        assert len(stalled) == 2
        await wait_for(
            lambda: all(r.transport is None or r.transport.is_closing() for r in stalled)
        )
    finally:
        never.set()
        await runner.cleanup()


def test_joined_vectors_keep_the_inputs_order_and_base64_is_float32_exact() -> None:
    parts = [(b"[[0.1, 1.0], [0.2, 2.0]]", 2), (b"[[0.3, 3.0]]", 1)]
    body, _ = sagemaker_tei.answer(parts, {"input": ["a", "b", "c"], "encoding_format": "base64"})
    data = orjson.loads(body)["data"]
    assert [d["index"] for d in data] == [0, 1, 2]
    decoded = [struct.unpack("<2f", base64.b64decode(d["embedding"])) for d in data]
    assert decoded == [struct.unpack("<2f", struct.pack("<2f", v, w)) for v, w in
                       ((0.1, 1.0), (0.2, 2.0), (0.3, 3.0))]  # fmt: skip


def test_a_tei_batch_is_cut_within_teis_payload_limit() -> None:
    inputs = [f"{i} " + "word " * 20_000 for i in range(32)]  # 100 KB each, 3.2 MB in all
    bodies = sagemaker_tei.request_bodies({"input": inputs, "truncate": True}, "sm")
    assert len(bodies) > 1
    assert all(len(b.body) < emulated.TEI_PAYLOAD_LIMIT for b in bodies)
    assert [x for b in bodies for x in orjson.loads(b.body)["inputs"]] == inputs
    assert sum(b.inputs for b in bodies) == 32


async def test_long_documents_with_truncate_reach_tei_in_calls_it_takes(
    http: aiohttp.ClientSession,
) -> None:
    sm = SageMakerEmulator(SageMakerEmulatorConfig(endpoints={"llm-tei": "tei"}))
    await sm.start()
    try:
        provider = SageMakerProvider(spec(sm.url, "tei"), http)
        request = embedding([f"{i} " + "word " * 20_000 for i in range(32)])
        body = {**(request.body or {}), "truncate": True}
        events = [e async for e in provider.stream(dataclasses.replace(request, body=body))]
    finally:
        await sm.stop()
    answer = next(e.raw for e in events if isinstance(e, TokenDelta))
    assert [d["index"] for d in orjson.loads(answer or b"")["data"]] == list(range(32))


def test_a_null_tei_field_is_the_gateways_default_not_teis() -> None:
    """``truncate: null`` (a client serialising TEI's request with its unset fields)
    would be TEI's --auto-truncate, true: a too-long input cut in silence."""
    client = {"input": "x", "truncate": None, "normalize": None, "prompt_name": None}
    (batch,) = sagemaker_tei.request_bodies(client, "sm")
    assert orjson.loads(batch.body) == {"inputs": "x", "truncate": False}


def test_a_prediction_truncated_despite_auto_truncate_off_is_refused() -> None:
    cut = orjson.dumps(
        {
            "predictions": [
                {
                    "embeddings": {
                        "values": [0.1],
                        "statistics": {"token_count": 2048, "truncated": True},
                    }
                }
            ]
        }
    )
    with pytest.raises(BackendError, match="truncated") as caught:
        vertex_embeddings.answer([(cut, 1)], {"input": "long"})
    assert caught.value.failure is FailureClass.STREAM_BROKEN


@pytest.mark.parametrize("raw", [b"[[0.1]]", b"[[0.1], [0.2], [0.3]]", b"[]", b"{}"])
def test_a_tei_answer_with_the_wrong_number_of_vectors_is_broken(raw: bytes) -> None:
    with pytest.raises(BackendError, match="not a list of 2 vectors") as caught:
        sagemaker_tei.answer([(raw, 2)], {"input": ["a", "b"]})
    assert caught.value.failure is FailureClass.STREAM_BROKEN


def test_a_predict_answer_with_the_wrong_number_of_predictions_is_broken() -> None:
    with pytest.raises(BackendError, match="predictions is not a list of 2"):
        vertex_embeddings.answer([(predictions([0.1]), 2)], {"input": ["a", "b"]})
