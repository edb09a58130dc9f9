"""docs/providers.md's config examples are real: every ```yaml block starting
with ``# tested`` parses, builds the backend the page describes, and the Vertex
one streams through the gateway on the emulator's dedicated host."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from emulators.vertex import VertexEmulator, VertexEmulatorConfig
from gateway.app.runtime import backend_specs
from gateway.config.model import parse
from regions.inventory import ProviderKind
from tests.conftest import GLOBAL_KEY, MODEL, GatewayFactory, gateway_config

DOC = Path(__file__).resolve().parents[2] / "docs" / "providers.md"


def documented_examples() -> dict[ProviderKind, str]:
    blocks = re.findall(r"```yaml\n(# tested\n.*?)```", DOC.read_text(), re.S)
    out = {}
    for block in blocks:
        (spec,) = backend_specs(parse(block))
        out[spec.kind] = block
    return out


def test_every_tested_block_parses_into_the_backend_it_describes() -> None:
    blocks = documented_examples()
    assert set(blocks) == {ProviderKind.SAGEMAKER, ProviderKind.VERTEX}
    (sm,) = backend_specs(parse(blocks[ProviderKind.SAGEMAKER]))
    assert sm.url == "https://runtime.sagemaker.us-east-1.amazonaws.com"
    assert sm.sagemaker is not None
    assert (sm.sagemaker.container, sm.sagemaker.inference_component) == ("lmi", "llama-ic")
    (vx,) = backend_specs(parse(blocks[ProviderKind.VERTEX]))
    dns = "1234567890.europe-west4-123456789012.prediction.vertexai.goog"
    assert vx.url == f"https://{dns}"
    assert vx.vertex is not None and vx.vertex.dedicated_dns == dns


def local(kind: ProviderKind, url: str) -> tuple[str, str, str, str, dict[str, Any]]:
    """The documented backend, pointed at an emulator the way the page says."""
    (backend,) = yaml.safe_load(documented_examples()[kind])["backends"]
    options = {**backend[kind.value], "credentials": "emulator"}
    return (
        backend["name"],
        backend["region"],
        "v1",
        url,
        {"provider": kind.value, kind.value: options},
    )


@pytest.fixture
async def vertex() -> AsyncIterator[VertexEmulator]:
    emu = VertexEmulator(VertexEmulatorConfig(project="my-project", location="europe-west4"))
    await emu.start()
    yield emu
    await emu.stop()


async def stream(gw: Any) -> tuple[int, bytes]:
    body = {"model": MODEL, "prompt": "Once upon", "max_tokens": 4, "stream": True}
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as http,
        http.post(gw.http_url + "/v1/completions", json=body, headers=headers) as resp,
    ):
        return resp.status, await resp.read()


async def test_the_vertex_example_streams_on_the_dedicated_host(
    vertex: VertexEmulator, gateways: GatewayFactory
) -> None:
    row = local(ProviderKind.VERTEX, vertex.url)
    gw = await gateways(gateway_config([row], regions={"gcp:europe-west4": ["EU"]}))
    status, raw = await stream(gw)
    assert status == 200 and raw.rstrip().endswith(b"data: [DONE]")
    assert vertex.stats.last_host == "1234567890.europe-west4-123456789012.prediction.vertexai.goog"


async def test_the_sagemaker_example_streams_through_its_inference_component(
    gateways: GatewayFactory,
) -> None:
    emu = SageMakerEmulator(
        SageMakerEmulatorConfig(
            endpoints={"llama-31-8b": "lmi"}, inference_components=("llama-ic",)
        )
    )
    await emu.start()
    try:
        row = local(ProviderKind.SAGEMAKER, emu.url)
        gw = await gateways(gateway_config([row], regions={"aws:us-east-1": ["US"]}))
        status, raw = await stream(gw)
    finally:
        await emu.stop()
    assert status == 200 and b"[DONE]" in raw
    assert emu.stats.last_headers["X-Amzn-SageMaker-Inference-Component"] == "llama-ic"
