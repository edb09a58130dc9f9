"""Hostile embedding backends (review of issue 17): what TEI on SageMaker and Google's
``:predict`` may answer, and what the gateway must make of it.

A number beyond float32, vectors of mixed sizes or not the size asked, an answer
without statistics, and a batch whose answers together exceed the cap: each is a
clear failure class or an honest usage, never a traceback nor a silent half-truth.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web

from regions import embeddings, sagemaker_tei, vertex_embeddings
from regions.errors import BackendError, FailureClass
from regions.events import TokenDelta
from regions.request import GenerationRequest, Kind
from regions.sagemaker import SageMakerProvider
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
        assert [len(orjson.loads(e.raw)["data"]) for e in two if isinstance(e, TokenDelta)] == [64]
        with pytest.raises(BackendError, match="over 1048576 bytes") as caught:
            async for _ in provider.stream(embedding(["x"] * 96)):  # 3 calls, 1.2 MiB
                pass
    finally:
        await runner.cleanup()
    assert caught.value.failure is FailureClass.STREAM_BROKEN
