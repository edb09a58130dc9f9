"""What SageMaker's and Vertex's vLLM containers serve beyond text (issue 17): embeddings,
``n`` choices, tools, JSON output and logprobs, judged by the vendors' clients.

boto3 shows the SageMaker emulator speaks the real wire (InvokeEndpoint with an
OpenAI embeddings body, a streamed tool call in PayloadParts); the stock
``openai`` SDK shows the gateway serves them through SageMaker and Vertex
backends, fails over between an embedding SageMaker endpoint and a vLLM server,
and still refuses ``n`` where the container's format cannot carry it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
import openai
import orjson
import pytest
from aiohttp import web
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from emulators.embeddings import vector
from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from emulators.vertex import VertexEmulator, VertexEmulatorConfig
from emulators.vllm import VllmEmulator
from gateway.app.server import Gateway
from gateway.config.model import Config
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.events import Finish, TokenDelta
from regions.sagemaker_payloads import PayloadDecoder
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    GatewayFactory,
    sha,
)
from tests.gateway.test_grpc_helpers import auth, stub

US_ONLY = {"x-meridian-residency": "US"}
WEATHER: Any = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}
HELLO: Any = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
async def clouds() -> AsyncIterator[tuple[SageMakerEmulator, VertexEmulator]]:
    sm = SageMakerEmulator(SageMakerEmulatorConfig(max_part_bytes=13))
    vx = VertexEmulator(VertexEmulatorConfig(project="proj", location="europe-west4"))
    await sm.start()
    await vx.start()
    yield sm, vx
    await sm.stop()
    await vx.stop()


def close(a: list[float], b: list[float]) -> bool:
    return len(a) == len(b) and all(abs(x - y) < 1e-6 for x, y in zip(a, b, strict=True))


def config(
    sm_url: str | None,
    vx_url: str | None,
    vllm_url: str | None = None,
    container: str = "vllm",
    grpc: bool = False,
    vertex_options: dict[str, str] | None = None,
    **sagemaker_options: str,
) -> Config:
    """SageMaker in the US (cheapest), Vertex in the EU, vLLM in the US (dearest):
    with the cost weight, routing tries them in that order when all are allowed."""
    backends: list[dict[str, Any]] = []
    common = {"model": MODEL, "version": "v1", "served_model": SERVED}
    if sm_url is not None:
        sagemaker = {
            "endpoint_name": f"llm-{container}",
            "container": container,
            **sagemaker_options,
        }
        backends.append(
            {
                **common,
                "name": "sm",
                "region": "aws:us-east-1",
                "provider": "sagemaker",
                "url": sm_url,
                "price": {"input_per_m": 0.1, "output_per_m": 0.1},
                "sagemaker": {**sagemaker, "credentials": "emulator"},
            }
        )
    if vx_url is not None:
        vertex = {
            "project": "proj",
            "endpoint_id": "1234567890",
            "route": "stream_raw_predict",
            **(vertex_options or {}),
        }
        backends.append(
            {
                **common,
                "name": "vx",
                "region": "gcp:europe-west4",
                "provider": "vertex",
                "url": vx_url,
                "price": {"input_per_m": 5.0, "output_per_m": 5.0},
                "vertex": {**vertex, "credentials": "emulator"},
            }
        )
    if vllm_url is not None:
        backends.append(
            {
                **common,
                "name": "vllm",
                "region": "onprem:us1",
                "provider": "vllm",
                "url": vllm_url,
                "price": {"input_per_m": 9.0, "output_per_m": 9.0},
            }
        )
    return Config.model_validate(
        {
            "listen": {
                "http": "127.0.0.1:0",
                "admin": "127.0.0.1:0",
                "grpc": "127.0.0.1:0" if grpc else None,
            },
            "admin": {"token": sha(ADMIN_TOKEN)},
            "regions": [
                {"name": "aws:us-east-1", "tags": ["US"]},
                {"name": "gcp:europe-west4", "tags": ["EU", "NL"]},
                {"name": "onprem:us1", "tags": ["US"]},
            ],
            "models": [{"name": MODEL, "versions": {"v1": 100}, "cost_weight": 5.0}],
            "failover": {"hedge": False},
            "backends": backends,
            "tenants": [
                {"name": "global", "api_keys": [sha(GLOBAL_KEY)]},
                {"name": "eu", "api_keys": [sha(EU_KEY)], "residency": ["EU"]},
            ],
        }
    )


def client(gw: Gateway, key: str = GLOBAL_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.http_url + "/v1", api_key=key, max_retries=0, **kwargs)


def boto(url: str) -> Any:
    return boto3.client(
        "sagemaker-runtime",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id="x",
        aws_secret_access_key="y",
        config=BotoConfig(retries={"total_max_attempts": 1}),
    )


# -- the emulator as boto3 sees it --------------------------------------------------------


async def test_boto3_invoke_endpoint_takes_an_openai_embeddings_body(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
) -> None:
    sm, _ = clouds
    body = {"model": SERVED, "input": ["the sea", "the sky"], "dimensions": 8}

    def call() -> tuple[str, Any]:
        resp = boto(sm.url).invoke_endpoint(
            EndpointName="llm-vllm", Body=orjson.dumps(body), ContentType="application/json"
        )
        return resp["ContentType"], orjson.loads(resp["Body"].read())

    content_type, answer = await asyncio.to_thread(call)
    assert content_type.startswith("application/json")
    assert answer["object"] == "list" and answer["model"] == SERVED
    assert [d["index"] for d in answer["data"]] == [0, 1]
    assert close(answer["data"][1]["embedding"], vector("the sky", 8))
    assert answer["usage"]["prompt_tokens"] > 0


async def test_boto3_sees_a_generation_container_refuse_embeddings_as_model_error(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
) -> None:
    sm, _ = clouds

    def call() -> None:
        boto(sm.url).invoke_endpoint(
            EndpointName="llm-tgi",
            Body=orjson.dumps({"input": "x"}),
            ContentType="application/json",
        )

    with pytest.raises(ClientError) as caught:
        await asyncio.to_thread(call)
    error = caught.value.response
    assert error["Error"]["Code"] == "ModelError"
    assert error["OriginalStatusCode"] == 400


async def test_boto3_streams_a_tool_call_of_the_vllm_container(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
) -> None:
    """vLLM's DeltaToolCall chunks in PayloadParts: boto3 reads the frames, and the
    adapter's decoder reads the SSE inside them as one answer ending in tool_calls."""
    sm, _ = clouds
    body = {"messages": HELLO, "tools": [WEATHER], "stream": True}

    def call() -> list[bytes]:
        resp = boto(sm.url).invoke_endpoint_with_response_stream(
            EndpointName="llm-vllm", Body=orjson.dumps(body), ContentType="application/json"
        )
        assert resp["ContentType"] == "text/event-stream"
        return [event["PayloadPart"]["Bytes"] for event in resp["Body"]]

    parts = await asyncio.to_thread(call)
    assert max(len(p) for p in parts) <= 13  # split anywhere, as SageMaker may
    sse = b"".join(parts)
    chunks = [
        orjson.loads(line[6:]) for line in sse.split(b"\n\n") if line[6:] not in (b"", b"[DONE]")
    ]
    calls = [c["choices"][0]["delta"].get("tool_calls") for c in chunks if c["choices"]]
    first = next(c for c in calls if c)[0]
    assert first["function"]["name"] == "get_weather" and first["id"].startswith("chatcmpl-tool-")
    arguments = "".join(c[0]["function"]["arguments"] for c in calls if c)
    assert orjson.loads(arguments) == {"city": "text"}
    decoder = PayloadDecoder(True, passthrough=True)
    events = [e for p in parts for e in decoder.feed(p)]
    assert [e.reason for e in events if isinstance(e, Finish)] == ["tool_calls"]
    assert any(e.progress for e in events if isinstance(e, TokenDelta))


# -- embeddings through the gateway ---------------------------------------------------------


async def test_openai_embeddings_through_sagemaker(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    sm, vx = clouds
    gw = await gateways(config(sm.url, vx.url))
    async with client(gw, default_headers=US_ONLY) as c:
        raw = await c.embeddings.with_raw_response.create(model=MODEL, input=["a", "b"])
        floats = await c.embeddings.create(model=MODEL, input="c", encoding_format="float")
    reply = raw.parse()
    assert raw.headers["x-meridian-backend"] == "sm"
    assert reply.model == MODEL
    assert [close(d.embedding, vector(t)) for d, t in zip(reply.data, "ab", strict=True)] == [
        True,
        True,
    ]
    assert close(floats.data[0].embedding, vector("c"))
    # the client's body, with only the model rewritten, at InvokeEndpoint
    assert sm.stats.last_request == {"model": SERVED, "input": "c", "encoding_format": "float"}
    assert sm.stats.last_headers["X-Amzn-SageMaker-Inference-Id"]
    assert vx.stats.requests == 0


async def test_openai_embeddings_through_vertex_raw_predict(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    sm, vx = clouds
    gw = await gateways(config(sm.url, vx.url))
    async with client(gw, EU_KEY) as c:
        raw = await c.embeddings.with_raw_response.create(model=MODEL, input=[[1, 2], [3]])
    assert raw.headers["x-meridian-backend"] == "vx"
    assert close(raw.parse().data[1].embedding, vector([3]))
    assert vx.stats.last_path.endswith("/endpoints/1234567890:rawPredict")
    assert vx.stats.last_request == {
        "model": SERVED,
        "input": [[1, 2], [3]],
        "encoding_format": "base64",  # the SDK's default, decoded by it
    }
    assert sm.stats.requests == 0


async def test_embeddings_fail_over_from_sagemaker_to_vllm(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
) -> None:
    """A container failure (ModelError from status 500) moves the embedding to the
    next backend, a vLLM server; the client sees only the answer."""
    sm, _ = clouds
    em: VllmEmulator = await emulators()
    sm.faults.update({"error_code": "ModelError", "original_status": 500, "times": 2})
    gw = await gateways(config(sm.url, None, em.url))
    async with client(gw) as c:
        served = []
        for word in ("one", "two", "three"):
            raw = await c.embeddings.with_raw_response.create(model=MODEL, input=word)
            assert close(raw.parse().data[0].embedding, vector(word))
            served.append(raw.headers["x-meridian-backend"])
    assert served == ["vllm", "vllm", "sm"]
    assert em.stats.completed == 2 and sm.stats.completed == 1


async def test_grpc_embed_through_sagemaker(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    sm, _ = clouds
    gw = await gateways(config(sm.url, None, grpc=True))
    async with stub(gw) as s:
        reply = await s.Embed(pb.EmbedRequest(model=MODEL, input=["a"]), metadata=auth())
    assert reply.served.backend == "sm" and close(list(reply.data[0].values), vector("a"))
    assert sm.stats.last_request == {"model": SERVED, "input": ["a"], "encoding_format": "float"}


async def test_a_container_refusal_of_an_embedding_is_the_clients_400(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
) -> None:
    """ModelError with the container's 413 (TEI's batch-size refusal): the client's
    error, not the backend's, so no failover to the vLLM server."""
    sm, _ = clouds
    em: VllmEmulator = await emulators()
    sm.faults.update({"error_code": "ModelError", "original_status": 413, "times": 1})
    gw = await gateways(config(sm.url, None, em.url))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.embeddings.create(model=MODEL, input="x")
    assert "container status 413" in caught.value.message
    assert em.stats.requests == 0


async def test_embeddings_are_not_routed_to_generation_only_containers(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    sm, _ = clouds
    gw = await gateways(config(sm.url, None, container="tgi"))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.embeddings.create(model=MODEL, input="x")
    assert caught.value.code == "unsupported_parameter"
    assert "'input' needs an embeddings endpoint" in caught.value.message
    assert sm.stats.requests == 0


# -- n > 1, tools, JSON output, logprobs through the vLLM containers ------------------------------


@pytest.mark.parametrize(("backend", "key"), [("sm", GLOBAL_KEY), ("vx", EU_KEY)])
async def test_n_choices_through_the_vllm_containers(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
    gateways: GatewayFactory,
    backend: str,
    key: str,
) -> None:
    sm, vx = clouds
    gw = await gateways(config(sm.url, vx.url))
    headers = US_ONLY if backend == "sm" else {}
    async with client(gw, key, default_headers=headers) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model=MODEL, messages=HELLO, n=2, max_tokens=3
        )
        stream = await c.chat.completions.create(
            model=MODEL, messages=HELLO, n=3, max_tokens=3, stream=True
        )
        texts = ["", "", ""]
        finishes: dict[int, str] = {}
        async for chunk in stream:
            assert chunk.model == MODEL
            for choice in chunk.choices:
                texts[choice.index] += choice.delta.content or ""
                if choice.finish_reason:
                    finishes[choice.index] = choice.finish_reason
        completions = await c.completions.create(
            model=MODEL, prompt=["Once upon", "A time"], n=2, max_tokens=2
        )
    whole = raw.parse()
    assert raw.headers["x-meridian-backend"] == backend
    assert [ch.index for ch in whole.choices] == [0, 1]
    assert all(ch.message.content and ch.finish_reason == "length" for ch in whole.choices)
    assert all(texts) and finishes == {0: "length", 1: "length", 2: "length"}
    assert [ch.index for ch in completions.choices] == [0, 1, 2, 3]
    assert (sm if backend == "sm" else vx).stats.last_request["n"] == 2


async def test_n_is_still_refused_for_tgi_on_sagemaker(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    """TGI's Messages API leaves ``n`` unused and its generate ``best_of`` returns one
    sequence (and refuses to stream): several choices cannot be carried."""
    sm, _ = clouds
    gw = await gateways(config(sm.url, None, container="tgi"))
    async with client(gw) as c:
        with pytest.raises(openai.BadRequestError) as caught:
            await c.chat.completions.create(model=MODEL, messages=HELLO, n=2)
    assert caught.value.param == "n" and "several choices" in caught.value.message
    assert sm.stats.requests == 0


@pytest.mark.parametrize(("backend", "key"), [("sm", GLOBAL_KEY), ("vx", EU_KEY)])
async def test_tools_json_and_logprobs_through_the_vllm_containers(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
    gateways: GatewayFactory,
    backend: str,
    key: str,
) -> None:
    sm, vx = clouds
    gw = await gateways(config(sm.url, vx.url))
    headers = US_ONLY if backend == "sm" else {}
    async with client(gw, key, default_headers=headers) as c:
        called = await c.chat.completions.create(model=MODEL, messages=HELLO, tools=[WEATHER])
        stream = await c.chat.completions.create(
            model=MODEL, messages=HELLO, tools=[WEATHER], stream=True
        )
        arguments, finish = "", None
        async for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or ():
                    arguments += (call.function.arguments or "") if call.function else ""
                finish = choice.finish_reason or finish
        as_json = await c.chat.completions.create(
            model=MODEL, messages=HELLO, response_format={"type": "json_object"}
        )
        probed = await c.chat.completions.create(
            model=MODEL, messages=HELLO, logprobs=True, top_logprobs=2, max_tokens=2
        )
    message = called.choices[0].message
    assert called.choices[0].finish_reason == "tool_calls" and message.tool_calls
    assert message.tool_calls[0].function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(arguments) == {"city": "text"} and finish == "tool_calls"
    assert orjson.loads(as_json.choices[0].message.content or "") == {"text": "ok"}
    logprobs = probed.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert len(logprobs.content[0].top_logprobs) == 2
    assert (vx if backend == "sm" else sm).stats.requests == 0


async def test_the_demo_serves_tools_and_n_from_its_cloud_backends() -> None:
    """The demo's SageMaker and Vertex backends are no longer declared text-only: a
    tool call kept in the Netherlands (Vertex only) and n=2 kept in the US
    (SageMaker and Vertex only) are served, not refused."""
    from gateway.cli.demo import MODEL as DEMO_MODEL
    from gateway.cli.demo import Demo

    demo = Demo("127.0.0.1:0", "127.0.0.1:0", None)
    gw = await demo.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=gw.http_url + "/v1", api_key="sk-demo-global", max_retries=0
        ) as c:
            tools = await c.chat.completions.with_raw_response.create(
                model=DEMO_MODEL,
                messages=HELLO,
                tools=[WEATHER],
                extra_headers={"x-meridian-residency": "NL"},
            )
            several = await c.chat.completions.with_raw_response.create(
                model=DEMO_MODEL, messages=HELLO, n=2, max_tokens=2, extra_headers=US_ONLY
            )
    finally:
        await demo.stop()
    assert tools.headers["x-meridian-region"] == "gcp:europe-west4"
    assert tools.parse().choices[0].message.tool_calls
    assert several.headers["x-meridian-region"] in ("aws:us-east-1", "gcp:us-central1")
    assert len(several.parse().choices) == 2


@pytest.mark.parametrize(("backend", "key"), [("sm", GLOBAL_KEY), ("vx", EU_KEY)])
async def test_the_container_gets_the_clients_body_but_what_the_gateway_owns(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
    gateways: GatewayFactory,
    backend: str,
    key: str,
) -> None:
    sm, vx = clouds
    gw = await gateways(config(sm.url, vx.url))
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [
            *HELLO,
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call-1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call-1", "content": "sunny"},
        ],
        "tools": [WEATHER],
        "tool_choice": "auto",
        "top_k": 5,
        "seed": 7,
        "n": 2,
        "logprobs": True,
        "max_tokens": 3,
    }
    headers = {"Authorization": f"Bearer {key}", **(US_ONLY if backend == "sm" else {})}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200, await resp.text()
        answer = await resp.json()
    assert len(answer["choices"]) == 2
    got = (sm if backend == "sm" else vx).stats.last_request
    assert got == {
        **body,
        "model": SERVED,
        "stream": True,
        "stream_options": {"include_usage": True},
    }


async def test_a_malformed_embedding_answer_fails_over(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """An endpoint answering InvokeEndpoint with something that is not an
    ``EmbeddingResponse`` is a broken backend: the request moves to the next one."""
    calls: list[str] = []

    async def invocations(request: web.Request) -> web.Response:
        calls.append(request.match_info["name"])
        return web.json_response({"data": [[0.1, 0.2]]})  # TEI-like vectors, no objects

    app = web.Application()
    app.router.add_post("/endpoints/{name}/invocations", invocations)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        em: VllmEmulator = await emulators()
        gw = await gateways(config(f"http://127.0.0.1:{port}", None, em.url))
        async with client(gw) as c:
            raw = await c.embeddings.with_raw_response.create(model=MODEL, input="x")
        assert raw.headers["x-meridian-backend"] == "vllm"
        assert close(raw.parse().data[0].embedding, vector("x"))
        assert calls == ["llm-vllm"]  # tried first (cheapest), then the next backend
    finally:
        await runner.cleanup()


async def test_the_demo_embeds_in_the_us_on_a_sagemaker_endpoint() -> None:
    from gateway.cli.demo import EMBED_MODEL, Demo

    demo = Demo("127.0.0.1:0", "127.0.0.1:0", None)
    gw = await demo.start()
    try:
        async with openai.AsyncOpenAI(
            base_url=gw.http_url + "/v1", api_key="sk-demo-global", max_retries=0
        ) as c:
            reply = await c.embeddings.with_raw_response.create(
                model=EMBED_MODEL, input="Hello", extra_headers=US_ONLY
            )
        sagemaker = [e for e in demo.embedders if isinstance(e, SageMakerEmulator)]
    finally:
        await demo.stop()
    assert reply.headers["x-meridian-region"] == "aws:us-east-1"
    assert close(reply.parse().data[0].embedding, vector("Hello"))
    assert [e.stats.completed for e in sagemaker] == [1]


async def test_a_broken_stream_of_several_choices_from_sagemaker_is_not_resumed(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    """A SageMaker stream of n=2 cut after its first token ends with an explicit
    error event; it is not spliced onto Vertex (issue 17 item 3)."""
    sm, vx = clouds
    sm.faults.update({"reset_after_tokens": 3, "times": 1})
    gw = await gateways(config(sm.url, vx.url))
    body = {"model": MODEL, "messages": HELLO, "n": 2, "max_tokens": 4, "stream": True}
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as resp,
    ):
        assert resp.status == 200 and resp.headers["x-meridian-backend"] == "sm"
        events = [line async for line in resp.content if line.startswith(b"data: ")]
    error = orjson.loads(events[-1].removeprefix(b"data: "))["error"]
    assert error["code"] == "stream_failed"
    assert "several choices (n) cannot be continued exactly" in error["message"]
    assert vx.stats.requests == 0


async def test_structured_output_parses_through_sagemaker(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    """The SDK's ``parse()`` with a pydantic schema: the json_schema reaches the
    vLLM container and its JSON validates."""
    from pydantic import BaseModel

    class Weather(BaseModel):
        city: str
        days: int

    sm, _ = clouds
    gw = await gateways(config(sm.url, None))
    async with client(gw) as c:
        parsed = await c.chat.completions.parse(
            model=MODEL, messages=HELLO, response_format=Weather
        )
    assert parsed.choices[0].message.parsed == Weather(city="text", days=1)
    sent = sm.stats.last_request
    assert sent is not None and sent["response_format"]["type"] == "json_schema"


async def test_embeddings_reach_an_inference_component_with_its_headers(
    gateways: GatewayFactory,
) -> None:
    sm = SageMakerEmulator(
        SageMakerEmulatorConfig(inference_components=("bge-ic",), variants=("blue",))
    )
    await sm.start()
    try:
        gw = await gateways(
            config(sm.url, None, inference_component="bge-ic", target_variant="blue")
        )
        async with client(gw) as c:
            reply = await c.embeddings.create(model=MODEL, input="x")
    finally:
        await sm.stop()
    assert close(reply.data[0].embedding, vector("x"))
    assert sm.stats.last_headers["X-Amzn-SageMaker-Inference-Component"] == "bge-ic"
    assert sm.stats.last_headers["X-Amzn-SageMaker-Target-Variant"] == "blue"


async def test_embeddings_go_to_a_dedicated_endpoints_own_host(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    """With ``project_number`` the adapter names the dedicated host (``Host``), which
    the emulator checks, for ``:rawPredict`` as for the stream."""
    _, vx = clouds
    gw = await gateways(config(None, vx.url, vertex_options={"project_number": "123456789012"}))
    async with client(gw, EU_KEY) as c:
        reply = await c.embeddings.create(model=MODEL, input="x")
    assert close(reply.data[0].embedding, vector("x"))
    assert vx.stats.last_host == "1234567890.europe-west4-123456789012.prediction.vertexai.goog"
    assert vx.stats.last_path.endswith(":rawPredict")
