"""POST /v1/embeddings through the gateway, judged by the stock openai SDK (issue 17 item 4)."""

from __future__ import annotations

import base64
import struct

import openai
import pytest

from emulators.embeddings import vector
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=url + "/v1", api_key=GLOBAL_KEY, max_retries=0)


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


async def test_strings_and_token_arrays_as_floats(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with client(gw.http_url) as c:
        one = await c.embeddings.create(model=MODEL, input="the sea", encoding_format="float")
        many = await c.embeddings.create(model=MODEL, input=["a", "b", "c"], dimensions=8)
        ids = await c.embeddings.create(model=MODEL, input=[[1, 2, 3], [4, 5]])
    assert one.model == MODEL and close(one.data[0].embedding, vector("the sea"))
    assert [d.index for d in many.data] == [0, 1, 2]
    assert all(close(d.embedding, vector(t, 8)) for d, t in zip(many.data, "abc", strict=True))
    assert close(ids.data[1].embedding, vector([4, 5]))
    assert one.usage.prompt_tokens > 0
    sent = em.stats.last_request
    assert sent == {"model": SERVED, "input": [[1, 2, 3], [4, 5]], "encoding_format": "base64"}


async def test_base64_is_passed_through(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """The SDK asks base64 by default and decodes it; asked explicitly, the client gets it."""
    import aiohttp

    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    body = {"model": MODEL, "input": "x", "encoding_format": "base64", "dimensions": 4}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.http_url + "/v1/embeddings", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200
        answer = await resp.json()
    packed = base64.b64decode(answer["data"][0]["embedding"])
    assert close(list(struct.unpack("<4f", packed)), vector("x", 4))
    assert answer["model"] == MODEL and answer["object"] == "list"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, "input"),
        ({"model": MODEL, "input": []}, None),
        ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ],
)
async def test_bad_bodies_are_400s_in_openais_shape(
    emulators: EmulatorFactory, gateways: GatewayFactory, body: dict[str, object], param: str | None
) -> None:
    import aiohttp

    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.http_url + "/v1/embeddings", json=body, headers=headers) as resp,
    ):
        assert resp.status == 400
        err = (await resp.json())["error"]
    assert err["type"] == "invalid_request_error" and err["param"] == param
    assert em.stats.requests == 0


async def test_failover_to_another_embedding_backend(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    broken = await emulators()
    good = await emulators()
    broken.faults.update({"status": 500})
    gw = await gateways(
        gateway_config(
            [("a", "onprem:fra1", "v1", broken.url), ("b", "onprem:fra1", "v1", good.url)]
        )
    )
    async with client(gw.http_url) as c:
        for _ in range(3):
            reply = await c.embeddings.create(model=MODEL, input="x")
            assert close(reply.data[0].embedding, vector("x"))
    assert good.stats.completed == 3


async def test_a_backend_without_embeddings_is_refused_naming_input(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    sagemaker = {  # TGI, a generation container (SageMaker's vLLM one serves embeddings)
        "provider": "sagemaker",
        "sagemaker": {
            "endpoint_name": "e",
            "region": "eu-central-1",
            "container": "tgi",
            "credentials": "emulator",
        },
    }
    gw = await gateways(gateway_config([("sm", "onprem:fra1", "v1", em.url, sagemaker)]))
    async with client(gw.http_url) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.embeddings.create(model=MODEL, input="x")
    assert caught.value.code == "unsupported_parameter"
    assert "'input' needs an embeddings endpoint" in caught.value.message


async def test_the_demo_serves_an_embedding_model_within_residency() -> None:
    from gateway.cli.demo import EMBED_MODEL, Demo

    demo = Demo("127.0.0.1:0", "127.0.0.1:0", None)
    gw = await demo.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=gw.http_url + "/v1", api_key="sk-demo-eu", max_retries=0
        ) as c:
            reply = await c.embeddings.with_raw_response.create(model=EMBED_MODEL, input="Hello")
            listed = await c.models.list()
        assert reply.headers["x-meridian-region"] == "onprem:fra1"  # the EU one
        assert close(reply.parse().data[0].embedding, vector("Hello"))
        assert EMBED_MODEL in {m.id for m in listed.data}
    finally:
        await demo.stop()
