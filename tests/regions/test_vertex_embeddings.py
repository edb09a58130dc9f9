"""Google's embedding models on Vertex (issue 17 item 4): route ``predict_embeddings``.

The ``openai`` SDK through the gateway against the Vertex emulator's
``publishers/google/models/{model}:predict``: strings become ``instances``,
``dimensions`` ``outputDimensionality``, ``autoTruncate`` is off (a long input is
refused, not cut in silence), the token counts are the usage, token ids and
unknown fields are 400s naming them, Google's errors are classified (a 400
stays the client's, a 503 fails over). google-auth supplies the token. The
config serves this route on the shared regional host, which it refuses for
the streaming routes.
"""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import openai
import orjson
import pytest
from google.auth.credentials import Credentials
from pydantic import ValidationError

from emulators.embeddings import vector
from emulators.vertex import VertexEmulator, VertexEmulatorConfig
from emulators.vllm import VllmEmulator
from gateway.app.server import Gateway
from gateway.config.model import BackendConfig, Config
from regions import vertex_embeddings
from regions.errors import BackendError, FailureClass
from regions.inventory import BackendSpec, ProviderKind, Region, VertexOptions
from regions.request import GenerationRequest, Kind
from regions.vertex import VertexProvider
from regions.vertex_auth import GoogleCredentials
from routing.capabilities import provided
from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    sha,
)

GOOGLE_MODEL = "text-embedding-005"
PREDICT = "/v1/projects/proj/locations/europe-west4/publishers/google/models/"


@pytest.fixture
async def vx() -> AsyncIterator[VertexEmulator]:
    emulator = VertexEmulator(VertexEmulatorConfig(project="proj", location="europe-west4"))
    await emulator.start()
    yield emulator
    await emulator.stop()


def config(
    vx_url: str, vllm_url: str | None = None, served: str = GOOGLE_MODEL, **vertex: Any
) -> Config:
    backends: list[dict[str, Any]] = [
        {
            "name": "vx",
            "model": MODEL,
            "version": "v1",
            "region": "gcp:europe-west4",
            "provider": "vertex",
            "url": vx_url,
            "served_model": served,
            "price": {"input_per_m": 0.1, "output_per_m": 0.1},  # tried before vLLM
            "vertex": {
                "project": "proj",
                "route": "predict_embeddings",
                "credentials": "emulator",
                **vertex,
            },
        }
    ]
    if vllm_url is not None:
        backends.append(
            {
                "name": "vllm",
                "model": MODEL,
                "version": "v1",
                "region": "onprem:eu1",
                "provider": "vllm",
                "url": vllm_url,
                "served_model": served,
                "price": {"input_per_m": 9.0, "output_per_m": 9.0},
            }
        )
    return Config.model_validate(
        {
            "listen": {"http": "127.0.0.1:0", "admin": "127.0.0.1:0"},
            "admin": {"token": sha(ADMIN_TOKEN)},
            "regions": [
                {"name": "gcp:europe-west4", "tags": ["EU"]},
                {"name": "onprem:eu1", "tags": ["EU"]},
            ],
            "models": [{"name": MODEL, "versions": {"v1": 100}, "cost_weight": 5.0}],
            "failover": {"hedge": False},
            "backends": backends,
            "tenants": [{"name": "global", "api_keys": [sha(GLOBAL_KEY)]}],
        }
    )


def client(gw: Gateway) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.http_url + "/v1", api_key=GLOBAL_KEY, max_retries=0)


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


# -- the config --------------------------------------------------------------------------------


def backend(**vertex: Any) -> BackendConfig:
    return BackendConfig.model_validate(
        {
            "name": "vx",
            "model": "m",
            "version": "v1",
            "region": "gcp:us-central1",
            "provider": "vertex",
            "served_model": GOOGLE_MODEL,
            "vertex": {"project": "proj", **vertex},
        }
    )


def test_predict_embeddings_is_served_on_the_shared_regional_host() -> None:
    assert (
        backend(route="predict_embeddings").url == "https://us-central1-aiplatform.googleapis.com"
    )
    with pytest.raises(ValidationError, match="shared regional endpoint, which does not stream"):
        backend(route="stream_raw_predict", endpoint_id="123")


def test_only_predict_embeddings_goes_without_an_endpoint() -> None:
    with pytest.raises(ValidationError, match="route stream_raw_predict needs the endpoint's ID"):
        backend(route="stream_raw_predict", dedicated_dns="x.prediction.vertexai.goog")


def test_the_route_serves_embeddings_only() -> None:
    options = VertexOptions("proj", "europe-west4", "", "predict_embeddings")
    spec = BackendSpec(
        "vx", "m", "v1", Region("gcp:x", frozenset()), ProviderKind.VERTEX, "http://x", "s",
        vertex=options,
    )  # fmt: skip
    assert provided(spec) == frozenset({"embeddings"})


# -- through the gateway ---------------------------------------------------------------------


async def test_openai_embeddings_through_googles_predict(
    vx: VertexEmulator, gateways: GatewayFactory
) -> None:
    gw = await gateways(config(vx.url))
    async with client(gw) as c:
        raw = await c.embeddings.with_raw_response.create(model=MODEL, input=["a b", "c"])
        sent = vx.stats.last_request
        cut = await c.embeddings.create(
            model=MODEL,
            input="a b c",
            dimensions=8,
            encoding_format="float",
            extra_body={"task_type": "RETRIEVAL_QUERY"},
        )
        sent_cut = vx.stats.last_request
    reply = raw.parse()  # base64, encoded by the gateway from Google's floats
    assert raw.headers["x-meridian-backend"] == "vx" and reply.model == MODEL
    assert vx.stats.last_path == PREDICT + GOOGLE_MODEL + ":predict"
    assert close(reply.data[0].embedding, vector("a b")) and close(
        reply.data[1].embedding, vector("c")
    )
    assert sent == {
        "instances": [{"content": "a b"}, {"content": "c"}],
        "parameters": {"autoTruncate": False},
    }
    assert reply.usage.prompt_tokens == 3 and reply.usage.total_tokens == 3  # token_count summed
    assert close(cut.data[0].embedding, vector("a b c", 8))
    assert sent_cut == {
        "instances": [{"content": "a b c", "task_type": "RETRIEVAL_QUERY"}],
        "parameters": {"autoTruncate": False, "outputDimensionality": 8},
    }


async def test_token_ids_and_unknown_fields_are_refused_by_name(
    vx: VertexEmulator, gateways: GatewayFactory
) -> None:
    gw = await gateways(config(vx.url))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as ids:
            await c.embeddings.create(model=MODEL, input=[[1, 2]])
        with pytest.raises(openai.BadRequestError) as unknown:
            await c.embeddings.create(model=MODEL, input="x", extra_body={"title": "t"})
    assert "'input' as token ids: Google's text embedding models take text only" in (
        ids.value.message
    )
    assert "'title' is not a field of this backend's embeddings API" in unknown.value.message
    assert vx.stats.requests == 0


async def test_googles_refusal_is_the_clients_and_its_outage_fails_over(
    vx: VertexEmulator, emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """A too-long input is Google's 400 INVALID_ARGUMENT (autoTruncate off): the
    client's error, not tried elsewhere; a 503 moves the embedding to vLLM."""
    em: VllmEmulator = await emulators(served_models=(GOOGLE_MODEL,))
    gw = await gateways(config(vx.url, em.url))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as long:
            await c.embeddings.create(model=MODEL, input=" ".join(["w"] * 3000))
        assert em.stats.requests == 0
        vx.faults.update({"status": 503, "times": 1})
        raw = await c.embeddings.with_raw_response.create(model=MODEL, input="x")
    assert "longer than the maximum of 2048" in long.value.message
    assert raw.headers["x-meridian-backend"] == "vllm"
    assert close(raw.parse().data[0].embedding, vector("x"))


async def test_a_batch_goes_as_several_predicts_joined_in_order(
    vx: VertexEmulator, gateways: GatewayFactory
) -> None:
    """gemini-embedding-001 takes one instance a request (the emulator refuses two, as
    Google documents): five inputs are five concurrent :predict calls, one answer."""
    gw = await gateways(config(vx.url, served="gemini-embedding-001"))
    words = ["one", "two three", "four", "five six seven", "eight"]
    async with client(gw) as c:
        reply = await c.embeddings.create(model=MODEL, input=words, encoding_format="float")
    assert vx.stats.requests == 5 and vx.stats.completed == 5
    assert vx.stats.last_path == PREDICT + "gemini-embedding-001:predict"
    assert [d.index for d in reply.data] == [0, 1, 2, 3, 4]
    assert all(close(d.embedding, vector(w)) for d, w in zip(reply.data, words, strict=True))
    assert reply.usage.prompt_tokens == 8


async def test_one_failed_predict_fails_the_whole_embedding(
    vx: VertexEmulator, emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em: VllmEmulator = await emulators(served_models=("gemini-embedding-001",))
    gw = await gateways(config(vx.url, em.url, served="gemini-embedding-001"))
    vx.faults.update({"status": 503, "times": 1})
    async with client(gw) as c:
        raw = await c.embeddings.with_raw_response.create(model=MODEL, input=["a", "b", "c"])
    assert raw.headers["x-meridian-backend"] == "vllm"  # not a half-made answer from vx
    assert len(raw.parse().data) == 3


# -- google-auth's token on :predict ------------------------------------------------------------


class RotatingCredentials(Credentials):
    """google-auth credentials whose refresh mints ``tok-N``."""

    def __init__(self) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.refreshes = 0

    def refresh(self, request: Any) -> None:
        self.refreshes += 1
        self.token = f"tok-{self.refreshes}"
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)
        self.expiry = now + datetime.timedelta(hours=1)


async def test_google_auth_token_is_refreshed_on_a_401(vx: VertexEmulator) -> None:
    vx.config.tokens = ("tok-2",)  # tok-1 was revoked before its expiry
    fake = RotatingCredentials()
    creds = GoogleCredentials(fake, refresh=lambda c: c.refresh(None))  # type: ignore[no-untyped-call]
    options = VertexOptions("proj", "europe-west4", "", "predict_embeddings")
    spec = BackendSpec(
        "vx", "m", "v1", Region("gcp:europe-west4", frozenset()), ProviderKind.VERTEX, vx.url,
        GOOGLE_MODEL, vertex=options,
    )  # fmt: skip
    body = {"model": "m", "input": ["x"], "encoding_format": "float"}
    request = GenerationRequest(
        kind=Kind.EMBEDDING, model="m", request_id="r1", prompt="x", body=body, choices=1
    )  # fmt: skip
    async with aiohttp.ClientSession() as http:
        provider = VertexProvider(spec, http, creds)
        events = [e async for e in provider.stream(request)]
        await provider.close()
    assert fake.refreshes == 2 and vx.stats.last_token == "tok-2"
    assert events and vx.stats.completed == 1


# -- the translation, piece by piece ---------------------------------------------------------


def prediction(values: Any, token_count: Any = 2) -> dict[str, Any]:
    return {"embeddings": {"values": values, "statistics": {"token_count": token_count}}}


@pytest.mark.parametrize(
    "answer",
    [
        [],
        {"predictions": [prediction([0.1])]},
        {"predictions": [prediction([0.1]), prediction("x")]},
        {"predictions": [prediction([0.1]), {"embeddings": None}]},
        {"predictions": [prediction([0.1]), prediction([False])]},
    ],
    ids=["not-an-object", "one-of-two", "string", "no-embeddings", "bool"],
)
def test_a_malformed_predict_answer_is_stream_broken(answer: Any) -> None:
    with pytest.raises(BackendError) as caught:
        vertex_embeddings.answer([(orjson.dumps(answer), 2)], {"input": ["a", "b"]})
    assert caught.value.failure is FailureClass.STREAM_BROKEN


def test_token_counts_are_summed_whatever_number_form() -> None:
    first = orjson.dumps({"predictions": [prediction([0.5], 2)]})
    second = orjson.dumps({"predictions": [prediction([0.25], 3.0), prediction([0.125], 1)]})
    body, tokens = vertex_embeddings.answer([(first, 1), (second, 2)], {"input": ["a", "b", "c"]})
    assert tokens == 6
    assert orjson.loads(body)["usage"] == {"prompt_tokens": 6, "total_tokens": 6}
    assert orjson.loads(body)["data"][2] == {
        "index": 2,
        "object": "embedding",
        "embedding": [0.125],
    }


def test_a_batch_is_split_within_googles_per_request_limits() -> None:
    def sizes(texts: list[str], model: str = GOOGLE_MODEL) -> list[int]:
        batches = vertex_embeddings.request_bodies({"input": texts}, "vx", model)
        assert [len(orjson.loads(b.body)["instances"]) for b in batches] == [
            b.inputs for b in batches
        ]
        return [b.inputs for b in batches]

    assert sizes(["a"] * 600) == [250, 250, 100]
    assert sizes(["a", "b", "c"], "gemini-embedding-001") == [1, 1, 1]
    big = "x" * 30_000  # 40,000 characters a request: about half Google's 20,000 tokens
    assert sizes([big, big, "y"]) == [1, 2]
    assert sizes(["z" * 50_000, "y"]) == [1, 1]  # a long input goes alone


async def test_on_an_endpoint_with_its_dedicated_name_discovered(
    vx: VertexEmulator, gateways: GatewayFactory
) -> None:
    """With ``endpoint_id`` the model is one deployed to an endpoint: ``:predict`` there,
    sent to the dedicated host read from the endpoint resource (discover_dns)."""
    gw = await gateways(config(vx.url, endpoint_id="1234567890", discover_dns=True))
    async with client(gw) as c:
        reply = await c.embeddings.create(model=MODEL, input=["a", "b"], encoding_format="float")
    assert close(reply.data[1].embedding, vector("b"))
    assert (
        vx.stats.last_path
        == "/v1/projects/proj/locations/europe-west4/endpoints/1234567890:predict"
    )
    assert vx.stats.last_host == vx.dedicated_dns("1234567890", "europe-west4")
