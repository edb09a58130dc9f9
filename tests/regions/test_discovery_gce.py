"""GCE discovery through the real google-cloud-compute client, against a local
emulator of the Compute REST API (tests/terraform/compute_fake.py) reached with
``api_endpoint`` and anonymous credentials.

The fake server runs on the test's event loop and the client is blocking, so
these tests also prove the calls happen off the loop: on it, they would
deadlock.
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from types import MappingProxyType
from typing import Any

import aiohttp
import pytest

from regions.discovery import Catalog, DiscoveryError, GceSettings, GceSource, Refused
from regions.inventory import ProviderKind, Region
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)
from tests.terraform.compute_fake import FakeCompute

US = Region("gcp:us-central1", frozenset({"US"}))
EU = Region("gcp:europe-west4", frozenset({"EU", "NL"}))
CATALOG = Catalog(MappingProxyType({US.name: US, EU.name: EU}))
ROLE = {"meridian-role": "llm-backend"}
META = {"meridian-model": "llama-3.1-8b-instruct", "meridian-version": "v1"}


@pytest.fixture(autouse=True)
def compute() -> Any:
    return importlib.import_module("google.cloud.compute_v1")  # a main dependency


@pytest.fixture
async def fake() -> AsyncIterator[FakeCompute]:
    server = FakeCompute()
    await server.start()
    yield server
    await server.stop()


def source(fake: FakeCompute, **kwargs: Any) -> GceSource:
    settings = GceSettings(project=fake.project, api_endpoint=fake.url, anonymous=True, **kwargs)
    return GceSource(settings, CATALOG)


async def test_running_labelled_gpu_instances_become_backends(fake: FakeCompute) -> None:
    fake.add_instance("us-central1-a", "gpu-a", ip="10.0.0.5", labels=ROLE, metadata=META)
    fake.add_instance(
        "europe-west4-b",
        "gpu-b",
        ip="10.1.0.5",
        labels={**ROLE, "meridian-port": "8080", "meridian-provider": "tgi"},
        metadata={**META, "meridian-served-model": SERVED, "meridian-max-concurrency": "32"},
        gpu="nvidia-h100-80gb",
        gpus=8,
    )
    fake.add_instance("us-central1-a", "other-team", ip="10.0.0.6", labels={"team": "x"})
    fake.add_instance("us-central1-a", "stopped", ip="10.0.0.7", labels=ROLE, status="TERMINATED")
    fake.add_instance(
        "us-central1-a", "cpu-only", ip="10.0.0.8", labels=ROLE, metadata=META, gpu=None
    )
    fake.add_instance("asia-east1-a", "far", ip="10.2.0.5", labels=ROLE, metadata=META)
    fake.add_instance("us-central1-c", "untagged", ip="10.0.0.9", labels=ROLE)
    fake.add_instance(
        "us-central1-c",
        "bad-port",
        ip="10.0.0.10",
        labels={**ROLE, "meridian-port": "99999"},
        metadata=META,
    )
    s = source(fake, page_size=2)
    listing = await s.discover()
    await s.close()

    specs = {f.spec.name: f for f in listing.found}
    assert set(specs) == {"gce/us-central1-a/gpu-a", "gce/europe-west4-b/gpu-b"}
    a = specs["gce/us-central1-a/gpu-a"]
    assert (a.spec.url, a.address, a.spec.region) == ("http://10.0.0.5:8000", "10.0.0.5", US)
    assert (a.spec.model, a.spec.version, a.spec.served_model) == (
        META["meridian-model"],
        "v1",
        META["meridian-model"],
    )
    assert a.spec.kind is ProviderKind.VLLM and a.detail == "nvidia-l4 x1, g2-standard-8"
    b = specs["gce/europe-west4-b/gpu-b"].spec
    assert (b.url, b.kind, b.served_model, b.max_concurrency) == (
        "http://10.1.0.5:8080",
        ProviderKind.TGI,
        SERVED,
        32,
    )
    assert b.region == EU
    assert {r.name: r.reason for r in listing.refused} == {
        "gce/us-central1-a/cpu-only": "no GPU attached",
        "gce/asia-east1-a/far": "region gcp:asia-east1 is not configured",
        "gce/us-central1-c/untagged": "needs meridian-model and meridian-version (metadata or labels)",
        "gce/us-central1-c/bad-port": "bad value: '99999' is not an integer in [1, 65535]",
    }
    # The server did the status and label filtering; the pager followed every page.
    calls = [q for m, p, q in fake.requests if p.endswith("/aggregated/instances")]
    assert calls[0]["filter"] == '(status = "RUNNING") AND (labels.meridian-role = "llm-backend")'
    assert calls[0]["maxResults"] == "2"
    assert [c.get("pageToken") for c in calls] == [None, "2", "4"]


async def test_accelerator_types_and_zones_narrow_the_pool(fake: FakeCompute) -> None:
    fake.add_instance("us-central1-a", "l4", ip="10.0.0.5", labels=ROLE, metadata=META)
    fake.add_instance(
        "us-central1-b", "h100", ip="10.0.0.6", labels=ROLE, metadata=META, gpu="nvidia-h100-80gb"
    )
    h100 = await source(fake, accelerators=frozenset({"nvidia-h100-80gb"})).discover()
    assert [f.spec.name for f in h100.found] == ["gce/us-central1-b/h100"]
    assert h100.refused == (
        Refused("gce/us-central1-a/l4", "GPU nvidia-l4 is not one of ['nvidia-h100-80gb']"),
    )
    zone_a = await source(fake, zones=frozenset({"us-central1-a"})).discover()
    assert [f.spec.name for f in zone_a.found] == ["gce/us-central1-a/l4"]
    relabelled = await source(fake, labels={"meridian-role": "llm-backend", "pool": "a"}).discover()
    assert relabelled.found == ()


async def test_managed_instance_groups_drop_members_in_transition(fake: FakeCompute) -> None:
    zonal = "zones/us-central1-a/instanceGroupManagers/llm-pool"
    regional = "regions/europe-west4/instanceGroupManagers/llm-pool-eu"
    for i, name in enumerate(("m1", "m2", "m3")):
        fake.add_instance(
            "us-central1-a", name, ip=f"10.0.0.{i + 1}", labels=ROLE, metadata=META, mig=zonal
        )
    fake.add_instance(
        "europe-west4-a", "e1", ip="10.1.0.1", labels=ROLE, metadata=META, mig=regional
    )
    fake.set_action(zonal, "m2", "RECREATING")
    fake.set_action(zonal, "m3", "NONE", health="UNHEALTHY")
    listing = await source(fake).discover()
    assert sorted(f.spec.name for f in listing.found) == [
        "gce/europe-west4-a/e1",
        "gce/us-central1-a/m1",
    ]
    assert {r.name: r.reason for r in listing.refused} == {
        "gce/us-central1-a/m2": "MIG llm-pool is recreating it",
        "gce/us-central1-a/m3": "MIG llm-pool reports it UNHEALTHY",
    }
    posts = sorted(p for m, p, _ in fake.requests if m == "POST")
    assert posts == [
        "/compute/v1/projects/meridian-test/regions/europe-west4/instanceGroupManagers/llm-pool-eu/listManagedInstances",
        "/compute/v1/projects/meridian-test/zones/us-central1-a/instanceGroupManagers/llm-pool/listManagedInstances",
    ]
    unmanaged = await source(fake, managed_groups=False).discover()
    assert len(unmanaged.found) == 4


@pytest.mark.parametrize("status", [403, 500])
async def test_api_errors_are_discovery_errors(fake: FakeCompute, status: int) -> None:
    fake.add_instance("us-central1-a", "gpu-a", ip="10.0.0.5", labels=ROLE, metadata=META)
    s = source(fake)
    fake.fail_next(status, times=5)  # more than the client's own retries, if any
    with pytest.raises(DiscoveryError, match=str(status)):
        await s.discover()
    fake._failures.clear()
    assert len((await s.discover()).found) == 1  # the same client recovers


async def test_gce_discovery_in_a_serving_gateway(
    fake: FakeCompute, emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """The config path end to end: Gateway.start runs the first round; vLLM
    emulators on 127.0.0.1 are the 'instances' (their ports in a label)."""
    static, a, b = await emulators(), await emulators(itl_s=0.02), await emulators()
    meta = {"meridian-model": MODEL, "meridian-version": "v1", "meridian-served-model": SERVED}
    for name, em in (("a", a), ("b", b)):
        port = em.url.rsplit(":", 1)[1]
        fake.add_instance(
            "us-central1-a",
            name,
            ip="127.0.0.1",
            labels={**ROLE, "meridian-port": port},
            metadata=meta,
        )
    fake.add_instance("us-central1-a", "imds", ip="169.254.169.254", labels=ROLE, metadata=meta)
    discovery = {
        "refresh_s": 3600,
        "allowed_networks": ["127.0.0.0/8"],
        "gce": {"project": fake.project, "api_endpoint": fake.url, "credentials": "anonymous"},
    }
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", static.url)],
            regions={"onprem:fra1": ["EU"], "gcp:us-central1": ["US"]},
            failover={"hedge": False},
            discovery=discovery,
        )
    )
    assert gw.discovery is not None and gw.runtime is not None
    assert [s.name for s in gw.discovery.live] == ["gce/us-central1-a/a", "gce/us-central1-a/b"]
    assert "gce/us-central1-a/imds" not in gw.runtime.providers
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}", "x-meridian-residency": "US"}
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 30,
        "stream": True,
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r:
            assert r.status == 200
            served = r.headers["x-meridian-backend"]
            await r.content.readline()
            fake.remove_instance("us-central1-a", served.rpartition("/")[2])
            await gw.discovery.refresh()
            assert served not in {s.name for s in gw.discovery.live}
            rest = (await r.content.read()).decode()
        assert rest.rstrip().endswith("data: [DONE]") and '"error"' not in rest
