"""Vertex AI dedicated endpoints, as Google serves them.

Google's "Choose an endpoint type" table gives the shared regional endpoint
(``{location}-aiplatform.googleapis.com``) no streaming support; streaming
runs on dedicated public endpoints (``{endpoint}.{location}-{project_number}
.prediction.vertexai.goog``) and Private Service Connect. Once an endpoint is
dedicated the shared domain refuses it with 400 FAILED_PRECONDITION ("Dedicated
Endpoint cannot be accessed through the shared Vertex AI domain ...", quoted
from Google's API in github.com/yanolja/ogem#110; the field doc of
``dedicated_endpoint_enabled`` in google-cloud-aiplatform says the same). So
the config refuses a streaming backend on the shared host, and the emulator
answers on the dedicated host (``Host`` header) and refuses the shared one.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from emulators import text
from emulators.vertex import VertexEmulator, VertexEmulatorConfig
from gateway.app.runtime import backend_specs
from gateway.config.model import ConfigError, parse
from regions.errors import BackendError, FailureClass
from regions.events import TokenDelta
from regions.inventory import BackendSpec, ProviderKind, Region, VertexOptions
from regions.request import GenerationRequest, Kind, Sampling
from regions.vertex import VertexProvider
from tests.conftest import GLOBAL_KEY, SERVED, GatewayFactory, gateway_config

DNS = "1234567890.europe-west4-123456789012.prediction.vertexai.goog"
PATH = "/v1/projects/proj/locations/europe-west4/endpoints/1234567890:streamRawPredict"
BODY = {"prompt": "Once upon", "max_tokens": 3, "stream": True}
SHARED_TEXT = (
    "Dedicated Endpoint cannot be accessed through the shared Vertex AI domain "
    "aiplatform.googleapis.com. Please access the endpoint using its dedicated domain name "
    f"'{DNS}'"
)

# The shape of docs/providers.md's example (the page's own block: test_fidelity_docs.py).
DOCS_EXAMPLE = """
regions: [{name: "gcp:europe-west4", tags: [EU]}]
models: [{name: llama, versions: {v1: 100}}]
tenants: [{name: t, api_keys: ["sha256:%s"]}]
backends:
  - name: vertex-euw4
    model: llama
    version: v1
    region: "gcp:europe-west4"
    provider: vertex
    served_model: meta-llama/Llama-3.1-8B-Instruct
    vertex:
      project: my-project
      project_number: "123456789012"
      endpoint_id: "1234567890"
      route: stream_raw_predict
""" % ("0" * 64)


def vertex_yaml(**options: Any) -> str:
    head, _, _ = DOCS_EXAMPLE.partition("    vertex:\n")
    url = options.pop("url", None)
    lines = "".join(f"      {k}: {v}\n" for k, v in options.items())
    return head + (f"    url: {url}\n" if url else "") + "    vertex:\n" + lines


BASE = {"project": "my-project", "endpoint_id": '"1234567890"', "route": "stream_raw_predict"}


def test_the_docs_example_is_a_dedicated_endpoint() -> None:
    (spec,) = backend_specs(parse(DOCS_EXAMPLE))
    assert spec.url == f"https://{DNS}"
    assert spec.vertex is not None and spec.vertex.dedicated_dns == DNS


@pytest.mark.parametrize(
    "options",
    [
        BASE,  # nothing says where the dedicated endpoint is: the shared default
        {**BASE, "url": "https://europe-west4-aiplatform.googleapis.com"},
        {**BASE, "url": "https://aiplatform.googleapis.com"},
    ],
)
def test_a_streaming_backend_on_the_shared_host_is_refused_with_the_reason(
    options: dict[str, str],
) -> None:
    with pytest.raises(ConfigError) as info:
        parse(vertex_yaml(**options))
    message = str(info.value)
    assert "aiplatform.googleapis.com" in message and "does not stream" in message
    assert "project_number" in message and "dedicated_dns" in message and "psc" in message


def test_dedicated_dns_psc_and_discovery_are_accepted() -> None:
    named = {**BASE, "dedicated_dns": "mg-endpoint-1.europe-west4-abc.prediction.vertexai.goog"}
    (spec,) = backend_specs(parse(vertex_yaml(**named)))
    assert spec.url == "https://mg-endpoint-1.europe-west4-abc.prediction.vertexai.goog"
    psc = {**BASE, "endpoint": "psc", "url": "https://10.20.0.5"}
    (spec,) = backend_specs(parse(vertex_yaml(**psc)))
    assert spec.url == "https://10.20.0.5" and spec.vertex is not None
    (spec,) = backend_specs(parse(vertex_yaml(**BASE, discover_dns="true")))
    assert spec.url == "https://europe-west4-aiplatform.googleapis.com"  # the lookup host only
    assert spec.vertex is not None and spec.vertex.discover_dns
    with pytest.raises(ConfigError, match="psc needs url"):
        parse(vertex_yaml(**BASE, endpoint="psc"))


@pytest.fixture
async def emulator() -> AsyncIterator[VertexEmulator]:
    emu = VertexEmulator(VertexEmulatorConfig(project="proj", location="europe-west4"))
    await emu.start()
    yield emu
    await emu.stop()


async def post(url: str, host: str | None) -> tuple[int, Any]:
    headers = {"Authorization": "Bearer t"}
    if host is not None:
        headers["Host"] = host
    async with (
        aiohttp.ClientSession() as http,
        http.post(url + PATH, json=BODY, headers=headers) as resp,
    ):
        if resp.content_type == "application/json":
            return resp.status, await resp.json()
        return resp.status, await resp.read()


async def test_the_emulator_streams_on_the_dedicated_host(emulator: VertexEmulator) -> None:
    status, body = await post(emulator.url, DNS)
    assert status == 200 and body.endswith(b"data: [DONE]\n\n")


@pytest.mark.parametrize(
    "host", ["europe-west4-aiplatform.googleapis.com", "aiplatform.googleapis.com"]
)
async def test_the_shared_domain_refuses_a_dedicated_endpoint_as_google_does(
    emulator: VertexEmulator, host: str
) -> None:
    status, body = await post(emulator.url, host)
    assert status == 400
    assert body == {"error": {"code": 400, "message": SHARED_TEXT, "status": "FAILED_PRECONDITION"}}


async def test_the_endpoint_resource_names_its_dedicated_dns(emulator: VertexEmulator) -> None:
    url = emulator.url + "/v1/projects/proj/locations/europe-west4/endpoints/1234567890"
    async with (
        aiohttp.ClientSession() as http,
        http.get(url, headers={"Authorization": "Bearer t"}) as resp,
    ):
        assert resp.status == 200
        resource = await resp.json()
    assert resource["dedicatedEndpointEnabled"] is True
    assert resource["dedicatedEndpointDns"] == DNS


# -- the adapter on the dedicated host -------------------------------------------------


def spec(url: str, **options: Any) -> BackendSpec:
    vertex = VertexOptions(
        project="proj",
        location="europe-west4",
        endpoint_id="1234567890",
        route="stream_raw_predict",
        emulator_credentials=True,
        **options,
    )
    region = Region("gcp:europe-west4", frozenset({"EU"}))
    return BackendSpec("vx", "m", "v1", region, ProviderKind.VERTEX, url, SERVED, vertex=vertex)


REQUEST = GenerationRequest(
    kind=Kind.COMPLETION, model="m", request_id="r1", prompt="Once upon", sampling=Sampling(3)
)


async def run(provider: VertexProvider) -> str:
    return "".join([e.text async for e in provider.stream(REQUEST) if isinstance(e, TokenDelta)])


async def test_the_adapter_sends_the_dedicated_host(emulator: VertexEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        provider = VertexProvider(spec(emulator.url, dedicated_dns=DNS), http)
        assert await run(provider) == text.expected_text("Once upon", 3)
    assert emulator.stats.last_host == DNS


async def test_the_adapter_discovers_the_dedicated_dns_once(emulator: VertexEmulator) -> None:
    async with aiohttp.ClientSession() as http:
        provider = VertexProvider(spec(emulator.url, discover_dns=True), http)
        assert await run(provider) == text.expected_text("Once upon", 3)
        assert await run(provider) == text.expected_text("Once upon", 3)
    assert emulator.stats.requests == 3  # one lookup, two predictions
    assert emulator.stats.last_host == DNS


async def test_discovery_of_a_shared_endpoint_is_a_server_failure() -> None:
    emu = VertexEmulator(
        VertexEmulatorConfig(project="proj", location="europe-west4", shared=("1234567890",))
    )
    await emu.start()
    try:
        async with aiohttp.ClientSession() as http:
            provider = VertexProvider(spec(emu.url, discover_dns=True), http)
            with pytest.raises(BackendError, match="no dedicatedEndpointDns") as info:
                await run(provider)
    finally:
        await emu.stop()
    assert info.value.failure is FailureClass.SERVER


async def test_the_shared_domains_refusal_is_a_misconfigured_backend(
    emulator: VertexEmulator,
) -> None:
    async with aiohttp.ClientSession() as http:
        shared = "europe-west4-aiplatform.googleapis.com"
        provider = VertexProvider(spec(emulator.url, dedicated_dns=shared), http)
        with pytest.raises(BackendError, match="FAILED_PRECONDITION") as info:
            await run(provider)
    assert info.value.failure is FailureClass.SERVER and info.value.status == 400
    assert "dedicated domain name" in info.value.message


async def test_the_docs_example_streams_through_the_gateway_on_the_dedicated_host(
    emulator: VertexEmulator, gateways: GatewayFactory
) -> None:
    """docs/providers.md's example, pointed at the emulator (url) with the
    emulator's token: the gateway streams through the dedicated host."""
    options = {
        "project": "proj",
        "project_number": "123456789012",
        "endpoint_id": "1234567890",
        "route": "stream_raw_predict",
        "credentials": "emulator",
    }
    row = {"provider": "vertex", "vertex": options}
    cfg = gateway_config(
        [("vx", "gcp:europe-west4", "v1", emulator.url, row)],
        regions={"gcp:europe-west4": ["EU"]},
    )
    gw = await gateways(cfg)
    body = {"model": "test-model", "prompt": "Once upon", "max_tokens": 4, "stream": True}
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.http_url + "/v1/completions", json=body, headers=headers) as resp,
    ):
        raw = await resp.read()
    assert resp.status == 200 and b"[DONE]" in raw
    assert emulator.stats.last_host == DNS
