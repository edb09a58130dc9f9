"""SageMaker and Vertex backends through the whole gateway, with the stock openai client.

One SageMaker-emulated backend (US, cheap) and one Vertex-emulated backend
(EU, expensive). With the model's cost weight, routing tries SageMaker first
when both are allowed, which makes failover from it deterministic. Also here:
the config keys of both providers, and ``meridian emulate sagemaker|vertex``.
"""

from __future__ import annotations

import asyncio
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import boto3
import openai
import orjson
import pytest
from botocore.config import Config as BotoConfig
from openai.types.chat import ChatCompletionMessageParam

from emulators import text
from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from emulators.vertex import VertexEmulator, VertexEmulatorConfig
from gateway.app.runtime import backend_specs
from gateway.app.server import Gateway
from gateway.config.model import Config, ConfigError, parse
from regions.inventory import SageMakerOptions, VertexOptions
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    SERVED,
    GatewayFactory,
    sha,
    wait_for,
)

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Tell me about the sea"}]
CHAT_CONTEXT = text.render_chat([("user", str(MESSAGES[0]["content"]))], False)
US_ONLY = {"x-meridian-residency": "US"}


def config(sm_url: str, vx_url: str, container: str = "vllm", **failover: Any) -> Config:
    backend = {"model": MODEL, "version": "v1", "served_model": SERVED}
    return Config.model_validate(
        {
            "listen": {"http": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": None},
            "admin": {"token": sha(ADMIN_TOKEN)},
            "regions": [
                {"name": "aws:us-east-1", "tags": ["US"]},
                {"name": "gcp:europe-west4", "tags": ["EU", "NL"]},
            ],
            "models": [{"name": MODEL, "versions": {"v1": 100}, "cost_weight": 5.0}],
            "failover": {"hedge": False, **failover},
            "backends": [
                {
                    **backend,
                    "name": "sm",
                    "region": "aws:us-east-1",
                    "provider": "sagemaker",
                    "url": sm_url,
                    "price": {"input_per_m": 0.1, "output_per_m": 0.1},
                    "sagemaker": {
                        "endpoint_name": f"llm-{container}",
                        "container": container,
                        "credentials": "emulator",
                    },
                },
                {
                    **backend,
                    "name": "vx",
                    "region": "gcp:europe-west4",
                    "provider": "vertex",
                    "url": vx_url,
                    "price": {"input_per_m": 9.0, "output_per_m": 9.0},
                    "vertex": {
                        "project": "proj",
                        "endpoint_id": "1234567890",
                        "route": "stream_raw_predict",
                        "credentials": "emulator",
                    },
                },
            ],
            "tenants": [
                {"name": "global", "api_keys": [sha(GLOBAL_KEY)]},
                {"name": "eu", "api_keys": [sha(EU_KEY)], "residency": ["EU"]},
            ],
        }
    )


@pytest.fixture
async def clouds() -> AsyncIterator[tuple[SageMakerEmulator, VertexEmulator]]:
    sm = SageMakerEmulator(SageMakerEmulatorConfig(max_part_bytes=11))
    vx = VertexEmulator(VertexEmulatorConfig(project="proj", location="europe-west4"))
    await sm.start()
    await vx.start()
    yield sm, vx
    await sm.stop()
    await vx.stop()


def client(gw: Gateway, key: str = GLOBAL_KEY, **kwargs: Any) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gw.http_url + "/v1", api_key=key, max_retries=0, **kwargs)


async def chat_stream(c: openai.AsyncOpenAI, max_tokens: int = 8) -> tuple[str, str | None, Any]:
    stream = await c.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=max_tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    got, finish, usage = "", None, None
    async for chunk in stream:
        assert chunk.model == MODEL
        if chunk.choices:
            got += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
        usage = chunk.usage or usage
    return got, finish, usage


@pytest.mark.parametrize("container", ["vllm", "tgi", "lmi"])
async def test_openai_client_through_sagemaker(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory, container: str
) -> None:
    sm, vx = clouds
    gw = await gateways(config(sm.url, vx.url, container))
    async with client(gw, default_headers=US_ONLY) as c:
        got, finish, usage = await chat_stream(c)
        whole = await c.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=5,
        )
        completion = await c.completions.create(model=MODEL, prompt="Once upon", max_tokens=7)
    assert (got, finish) == (text.expected_text(CHAT_CONTEXT, 8), "length")
    if container != "lmi":  # LMI's chat stream carries no usage
        assert usage is not None and usage.completion_tokens == 8
    parsed = whole.parse()
    assert parsed.choices[0].message.content == text.expected_text(CHAT_CONTEXT, 5)
    assert whole.headers["x-meridian-backend"] == "sm"
    assert whole.headers["x-meridian-region"] == "aws:us-east-1"
    assert completion.choices[0].text == text.expected_text("Once upon", 7)
    assert vx.stats.requests == 0


async def test_openai_client_through_vertex(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    sm, vx = clouds
    gw = await gateways(config(sm.url, vx.url))
    async with client(gw, EU_KEY) as c:
        got, finish, usage = await chat_stream(c)
        whole = await c.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=5,
        )
        streamed = await c.completions.create(
            model=MODEL, prompt="Once upon", max_tokens=7, stream=True
        )
        completion = "".join([ch.choices[0].text async for ch in streamed if ch.choices])
    assert (got, finish) == (text.expected_text(CHAT_CONTEXT, 8), "length")
    assert usage is not None and usage.completion_tokens == 8
    assert whole.parse().choices[0].message.content == text.expected_text(CHAT_CONTEXT, 5)
    assert whole.headers["x-meridian-backend"] == "vx"
    assert completion == text.expected_text("Once upon", 7)
    assert sm.stats.requests == 0  # an EU-only key never reaches the US backend
    assert vx.stats.last_token  # a bearer token was sent


@pytest.mark.parametrize(
    "faults",
    [
        {"status": 429},  # ModelNotReadyException
        {"status": 503},  # ServiceUnavailable
        {"error_code": "ThrottlingException"},
        {"error_code": "ModelError", "original_status": 500},
        {"stream_error": "ModelStreamError", "stream_error_after_tokens": 0},
    ],
)
async def test_failover_from_sagemaker_to_vertex_before_the_first_token(
    clouds: tuple[SageMakerEmulator, VertexEmulator],
    gateways: GatewayFactory,
    faults: dict[str, Any],
) -> None:
    sm, vx = clouds
    sm.faults.update({**faults, "times": 1})
    gw = await gateways(config(sm.url, vx.url))
    async with client(gw) as c:
        raw = await c.chat.completions.with_raw_response.create(
            model=MODEL,
            messages=MESSAGES,
            max_tokens=6,
            stream=True,
        )
        got = "".join([ch.choices[0].delta.content or "" async for ch in raw.parse() if ch.choices])
    assert got == text.expected_text(CHAT_CONTEXT, 6)
    assert raw.headers["x-meridian-backend"] == "vx"
    assert raw.headers["x-meridian-attempts"] == "2"
    assert sm.stats.requests == 1 and vx.stats.requests == 1


async def test_model_stream_error_mid_stream_resumes_on_vertex(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    sm, vx = clouds
    sm.faults.update({"stream_error": "ModelStreamError", "stream_error_after_tokens": 3})
    gw = await gateways(config(sm.url, vx.url))
    async with client(gw) as c:
        got, finish, _ = await chat_stream(c, max_tokens=10)
    assert (got, finish) == (text.expected_text(CHAT_CONTEXT, 10), "length")
    resumed = vx.stats.last_request
    assert resumed is not None and resumed["continue_final_message"] is True
    assert resumed["messages"][-1]["content"] == text.expected_text(CHAT_CONTEXT, 3)


async def test_validation_error_is_the_clients_400(
    clouds: tuple[SageMakerEmulator, VertexEmulator], gateways: GatewayFactory
) -> None:
    sm, vx = clouds
    sm.faults.update({"error_code": "ValidationError"})
    gw = await gateways(config(sm.url, vx.url))
    async with client(gw, default_headers=US_ONLY) as c:
        with pytest.raises(openai.BadRequestError, match="emulated fault"):
            await c.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=3)
    assert vx.stats.requests == 0


YAML = """
regions: [{name: "aws:eu-west-1", tags: [EU]}, {name: "gcp:us-central1", tags: [US]}]
models: [{name: m, versions: {v1: 100}}]
tenants: [{name: t, api_keys: ["sha256:%s"]}]
backends:
  - name: sm
    model: m
    version: v1
    region: "aws:eu-west-1"
    provider: sagemaker
    served_model: llama
    sagemaker:
      endpoint_name: llama-31-8b
      container: tgi
      inference_component: llama-ic
  - name: vx
    model: m
    version: v1
    region: "gcp:us-central1"
    provider: vertex
    served_model: llama
    vertex: {project: my-proj, endpoint_id: "4242", route: stream_raw_predict, project_number: "12"}
""" % ("0" * 64)


def test_config_fills_regional_hosts_and_regions() -> None:
    cfg = parse(YAML)
    sm, vx = backend_specs(cfg)
    assert sm.url == "https://runtime.sagemaker.eu-west-1.amazonaws.com"
    assert sm.sagemaker == SageMakerOptions(
        endpoint_name="llama-31-8b",
        region="eu-west-1",
        container="tgi",
        inference_component="llama-ic",
    )
    dns = "4242.us-central1-12.prediction.vertexai.goog"  # dedicated: the shared host won't stream
    assert vx.url == f"https://{dns}"
    assert vx.vertex == VertexOptions(
        project="my-proj",
        location="us-central1",
        endpoint_id="4242",
        route="stream_raw_predict",
        dedicated_dns=dns,
    )


@pytest.mark.parametrize(
    ("old", "new", "error"),
    [
        (
            "    sagemaker:\n      endpoint_name",
            "    other:\n      x",
            "needs a 'sagemaker:' options",
        ),
        ("provider: vertex\n", "provider: vllm\n    url: http://h:1\n", "for provider vertex only"),
        (
            "      container: tgi\n",
            "      container: tgi\n      credentials: emulator\n",
            "http://",
        ),
        ("endpoint_name: llama-31-8b", "endpoint_name: bad_name!", "endpoint_name"),
        (
            'region: "aws:eu-west-1"\n    provider',
            'region: "gcp:us-central1"\n    provider',
            "region",
        ),
        ("route: stream_raw_predict", "route: predict", "route"),
    ],
)
def test_config_rejects_bad_cloud_options_with_a_line(old: str, new: str, error: str) -> None:
    assert old in YAML
    with pytest.raises(ConfigError, match=error) as info:
        parse(YAML.replace(old, new, 1), "m.yaml")
    assert "m.yaml:" in str(info.value)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
    except OSError:
        return False
    return True


@pytest.mark.timeout(30)
async def test_meridian_emulate_sagemaker_and_vertex() -> None:
    sm_port, vx_port = _free_port(), _free_port()
    cmd = [sys.executable, "-m", "gateway.cli.main", "emulate"]
    procs = [
        await asyncio.create_subprocess_exec(
            *cmd, "sagemaker", "--port", str(sm_port), "--endpoint", "ep=lmi"
        ),
        await asyncio.create_subprocess_exec(
            *cmd, "vertex", "--port", str(vx_port), "--endpoint", "77"
        ),
    ]
    try:
        await wait_for(lambda: _listening(sm_port) and _listening(vx_port), timeout=15)
        boto = boto3.client(
            "sagemaker-runtime",
            endpoint_url=f"http://127.0.0.1:{sm_port}",
            region_name="us-east-1",
            aws_access_key_id="x",
            aws_secret_access_key="y",
            config=BotoConfig(retries={"total_max_attempts": 1}),
        )
        body = orjson.dumps({"inputs": "Once", "parameters": {"max_new_tokens": 3}})
        resp = await asyncio.to_thread(boto.invoke_endpoint, EndpointName="ep", Body=body)
        answer = orjson.loads(await asyncio.to_thread(resp["Body"].read))
        assert answer == {"generated_text": text.expected_text("Once", 3)}
        url = f"http://127.0.0.1:{vx_port}/v1/projects/p/locations/l/endpoints/77:rawPredict"
        async with (
            aiohttp.ClientSession() as http,
            http.post(
                url, json={"prompt": "Once", "max_tokens": 3}, headers={"Authorization": "Bearer t"}
            ) as r,
        ):
            assert (await r.json())["choices"][0]["text"] == text.expected_text("Once", 3)
    finally:
        for proc in procs:
            if proc.returncode is None:
                proc.terminate()
            await proc.wait()
