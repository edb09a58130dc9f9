"""Discovery in a serving gateway: backends come and go, streams in flight survive.

Two ways in: a scripted source attached to a running gateway (vLLM
emulators standing in for discovered GPU servers on 127.0.0.1, so
``allowed_networks`` includes 127.0.0.0/8 here), and the config's
``discovery.sagemaker`` section end to end (moto's SageMaker control plane
in process, the SageMaker runtime emulator as the data plane). The GCE path
through the real google-cloud-compute client is in test_discovery_gce.py.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, cast

import aiohttp
import boto3
import orjson
import pytest
from moto import mock_aws

from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from emulators.vllm import VllmEmulator
from gateway.app.build import discovery
from gateway.app.server import Gateway
from gateway.config.cloud import DiscoveryConfig
from gateway.config.model import Config
from gateway.control.discovery import Discovery
from regions.discovery import DiscoveryError, Found, Listing
from regions.inventory import BackendSpec, ProviderKind, Region
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)
from tests.regions import fidelity_sagemaker_control

US = Region("gcp:us-central1", frozenset({"US"}))
REGIONS = {"onprem:fra1": ["EU", "DE"], "gcp:us-central1": ["US"], "aws:us-east-1": ["US"]}
US_ONLY = {"x-meridian-residency": "US", "Authorization": f"Bearer {GLOBAL_KEY}"}


class Scripted:
    """A discovery source the test scripts: the instances it 'sees' right now."""

    name = "scripted"

    def __init__(self) -> None:
        self.found: dict[str, Found] = {}
        self.error: Exception | None = None

    def instance(self, name: str, emulator: VllmEmulator | None = None, ip: str = "") -> str:
        full = f"gce/us-central1-a/{name}"
        url = emulator.url if emulator is not None else f"http://{ip}:8000"
        host = url.split("//")[1].rsplit(":", 1)[0]
        spec = BackendSpec(full, MODEL, "v1", US, ProviderKind.VLLM, url, SERVED)
        self.found[full] = Found(spec, address=host)
        return full

    async def discover(self) -> Listing:
        if self.error is not None:
            raise self.error
        return Listing(tuple(self.found.values()))

    async def close(self) -> None:
        pass


def config(static_url: str, **overrides: Any) -> Config:
    return gateway_config(
        [("fra", "onprem:fra1", "v1", static_url)],
        regions=REGIONS,
        failover={"hedge": False, "health_checks": {"interval_s": 0.5}},
        **overrides,
    )


async def attach(gw: Gateway, source: Scripted) -> Discovery:
    settings = DiscoveryConfig.model_validate(
        {
            "refresh_s": 3600,  # the test drives rounds itself
            "allowed_networks": ["127.0.0.0/8", "10.0.0.0/8"],
            "sagemaker": {"regions": ["us-east-1"]},  # unused: the source is injected
        }
    )
    assert gw.runtime is not None
    gw.discovery = discovery(gw.runtime, settings, sources=[source])
    await gw.discovery.start()
    return gw.discovery


async def chat(http: aiohttp.ClientSession, gw: Gateway, max_tokens: int = 4) -> tuple[int, str]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": max_tokens,
    }
    async with http.post(gw.http_url + "/v1/chat/completions", json=body, headers=US_ONLY) as r:
        await r.read()
        return r.status, r.headers.get("x-meridian-backend", "")


def routable(gw: Gateway) -> set[str]:
    assert gw.runtime is not None
    route = gw.runtime.snapshot.models[MODEL]
    return {b.name for per in route.backends.values() for b in per}


async def test_backends_come_and_go_without_breaking_streams(
    emulators: EmulatorFactory, gateways: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    static, a, b = await emulators(), await emulators(itl_s=0.02), await emulators()
    gw = await gateways(config(static.url))
    source = Scripted()
    discovery = await attach(gw, source)
    async with aiohttp.ClientSession() as http:
        status, _ = await chat(http, gw)
        assert status != 200  # nothing in the US yet: residency is never widened

        name_a = source.instance("a", a)
        await discovery.refresh()
        assert await chat(http, gw) == (200, name_a)

        # A long stream on a; then a disappears and b appears.
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 40,
            "stream": True,
        }
        async with http.post(
            gw.http_url + "/v1/chat/completions", json=body, headers=US_ONLY
        ) as long:
            assert long.status == 200 and long.headers["x-meridian-backend"] == name_a
            first = await long.content.readline()
            assert first.startswith(b"data: ")

            del source.found[name_a]
            name_b = source.instance("b", b)
            await discovery.refresh()
            assert a.stats.running == 1  # the removal happened mid-stream
            assert routable(gw) == {"fra", name_b}
            assert await chat(http, gw) == (200, name_b)
            assert discovery.status()["retiring"] == {name_a: 1}

            rest = (await long.content.read()).decode()
        events = [e for e in (first.decode() + rest).split("\n\n") if e.strip()]
        assert events[-1] == "data: [DONE]"
        text = [orjson.loads(e[6:]) for e in events[:-1]]
        assert all("error" not in chunk for chunk in text)
        tokens = sum(1 for c in text if c["choices"] and c["choices"][0]["delta"].get("content"))
        assert tokens == 40  # the whole stream, on the removed backend
        await wait_for(lambda: not discovery.status()["retiring"])  # closed once idle
        assert gw.runtime is not None and name_a not in gw.runtime.providers

        # An address outside the allowed networks never becomes a backend.
        with caplog.at_level(logging.WARNING, logger="meridian.discovery"):
            imds = source.instance("imds", ip="169.254.169.254")
            await discovery.refresh()
        assert imds not in routable(gw) and imds not in gw.runtime.providers
        assert any(
            imds in r.getMessage() and "link-local" in r.getMessage() for r in caplog.records
        )
        refused = {
            r["name"]: r["reason"]
            for r in cast(list[dict[str, str]], discovery.status()["refused"])
        }
        assert "link-local" in refused[imds]

        # Discovery errors keep the last good inventory.
        source.error = DiscoveryError("compute API: 503")
        await discovery.refresh()
        assert routable(gw) == {"fra", name_b}
        assert await chat(http, gw) == (200, name_b)

        # The same name at a new address: the old adapter retires, the new one serves.
        source.error = None
        source.found.pop(imds)
        source.instance("b", a)  # "b" now points at emulator a
        await discovery.refresh()
        assert await chat(http, gw) == (200, name_b)
        assert a.stats.requests == 3 and b.stats.requests == 2


async def test_a_backend_joins_once_it_answers_its_health_check(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    static, a = await emulators(), await emulators()
    gw = await gateways(config(static.url))
    source = Scripted()
    discovery = await attach(gw, source)
    a.faults.update({"status": 503})  # RUNNING, but the engine is still loading weights
    name = source.instance("a", a)
    await discovery.refresh()
    assert name not in routable(gw)
    assert "health check failed" in discovery.pending[name]
    a.faults.clear()
    await discovery.refresh()
    assert name in routable(gw) and not discovery.pending


async def test_discovered_backends_keep_the_control_planes_overlay(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """A drain written to the store still applies after discovery swaps the base."""
    static, a = await emulators(), await emulators()
    gw = await gateways(config(static.url))
    assert gw.runtime is not None and gw.runtime.control is not None
    await gw.runtime.control.write(
        {"drain/gcp:us-central1": {"drained": True}}, actor="test", action="drain"
    )
    source = Scripted()
    discovery = await attach(gw, source)
    source.instance("a", a)
    await discovery.refresh()
    assert gw.runtime.snapshot.dial("gcp:us-central1") == 0
    async with aiohttp.ClientSession() as http:
        status, _ = await chat(http, gw)
    assert status != 200 and a.stats.requests == 0


# -- the config's discovery.sagemaker section, end to end -----------------------


@pytest.fixture
def moto_sagemaker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with mock_aws(), fidelity_sagemaker_control.everywhere():
        yield boto3.client("sagemaker", region_name="us-east-1")


@pytest.fixture
async def sagemaker_runtime(request: pytest.FixtureRequest) -> AsyncIterator[SageMakerEmulator]:
    components = getattr(request, "param", ())
    emulator = SageMakerEmulator(SageMakerEmulatorConfig(inference_components=components))
    await emulator.start()
    yield emulator
    await emulator.stop()


def sagemaker_endpoint(sm: Any, name: str) -> None:
    sm.create_model(
        ModelName=name,
        PrimaryContainer={"Image": "vllm"},
        ExecutionRoleArn="arn:aws:iam::123456789012:role/sm",
    )
    sm.create_endpoint_config(
        EndpointConfigName=name,
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": name,
                "InitialInstanceCount": 1,
                "InstanceType": "ml.g4dn.xlarge",
            }
        ],
    )
    tags = {
        "meridian:discover": "true",
        "meridian:model": MODEL,
        "meridian:version": "v1",
        "meridian:served-model": SERVED,
        "meridian:container": "vllm",
    }
    sm.create_endpoint(
        EndpointName=name,
        EndpointConfigName=name,
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )


async def test_sagemaker_discovery_from_the_config(
    moto_sagemaker: Any,
    sagemaker_runtime: SageMakerEmulator,
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
) -> None:
    sagemaker_endpoint(moto_sagemaker, "llm-vllm")
    static = await emulators()
    discovery = {
        "refresh_s": 3600,
        "sagemaker": {
            "regions": ["us-east-1"],
            "runtime_url": sagemaker_runtime.url,
            "credentials": "emulator",
        },
    }
    gw = await gateways(config(static.url, discovery=discovery))
    assert gw.discovery is not None  # Gateway.start ran the first round before serving
    name = "sagemaker/us-east-1/llm-vllm"
    async with aiohttp.ClientSession() as http:
        assert await chat(http, gw) == (200, name)
        moto_sagemaker.delete_endpoint(EndpointName="llm-vllm")
        await gw.discovery.refresh()
        assert name not in routable(gw)
        status, _ = await chat(http, gw)
        assert status != 200


@pytest.mark.parametrize("sagemaker_runtime", [("llama-ic",)], indirect=True)
async def test_sagemaker_discovery_invokes_inference_components(
    moto_sagemaker: Any,
    sagemaker_runtime: SageMakerEmulator,
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
) -> None:
    """An endpoint hosting components answers 400 INFERENCE_COMPONENT_NAME_MISSING
    to a request without one: discovery finds the component, and the backend
    names it."""
    sagemaker_endpoint(moto_sagemaker, "llm-vllm")
    fidelity_sagemaker_control.component("llm-vllm", "llama-ic", {})
    static = await emulators()
    discovery = {
        "refresh_s": 3600,
        "sagemaker": {
            "regions": ["us-east-1"],
            "runtime_url": sagemaker_runtime.url,
            "credentials": "emulator",
        },
    }
    gw = await gateways(config(static.url, discovery=discovery))
    name = "sagemaker/us-east-1/llm-vllm/ic/llama-ic"
    async with aiohttp.ClientSession() as http:
        assert await chat(http, gw) == (200, name)
    assert sagemaker_runtime.stats.last_headers["X-Amzn-SageMaker-Inference-Component"] == (
        "llama-ic"
    )
