"""SageMaker discovery against moto's SageMaker control plane (in process, ``mock_aws``).

moto facts these tests rely on (moto 5.2): ``CreateEndpoint`` is ``InService``
at once (no ``Creating`` phase), so other statuses are set on moto's backend
directly; ``ProductionVariants`` omit ``CurrentWeight`` when the initial
weight is absent or 0; ``InstanceType`` is checked against an old list
(``ml.g4dn.*`` passes, ``ml.g5.*`` does not).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from types import MappingProxyType
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSPreparedRequest, AWSResponse
from botocore.exceptions import ClientError
from moto import mock_aws

from regions.discovery import Catalog, DiscoveryError, SageMakerSettings, SageMakerSource
from regions.inventory import ProviderKind, Region
from tests.regions import fidelity_sagemaker_control

REGION = "us-east-1"
US = Region("aws:us-east-1", frozenset({"US"}))
CATALOG = Catalog(MappingProxyType({US.name: US}))
ACCOUNT = "123456789012"


@pytest.fixture(scope="module")
def session() -> Iterator[boto3.session.Session]:
    """One moto mock and one boto3 session for the module: loading SageMaker's
    service model costs ~0.4 s per session, and the tests need many clients."""
    with pytest.MonkeyPatch.context() as mp:
        for var in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE"):
            mp.delenv(var, raising=False)
        with mock_aws():
            session = boto3.session.Session()
            fidelity_sagemaker_control.install(session.events)
            yield session


@pytest.fixture
def aws(session: boto3.session.Session) -> Iterator[Any]:
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends.reset()
    fidelity_sagemaker_control.COMPONENTS.clear()
    fidelity_sagemaker_control.DENIED.clear()
    yield session.client("sagemaker", region_name=REGION)


@pytest.fixture
def factory(session: boto3.session.Session) -> Any:
    def make(settings: SageMakerSettings) -> Any:
        return session.client("sagemaker", region_name=settings.region)

    return make


def endpoint(
    sm: Any,
    name: str,
    tags: dict[str, str],
    variants: tuple[tuple[str, float, int], ...] = (("AllTraffic", 1.0, 1),),
) -> None:
    sm.create_model(
        ModelName=f"{name}-model",
        PrimaryContainer={"Image": "763104351884.dkr.ecr.us-east-1.amazonaws.com/vllm:latest"},
        ExecutionRoleArn=f"arn:aws:iam::{ACCOUNT}:role/sagemaker",
    )
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": variant,
                "ModelName": f"{name}-model",
                "InitialInstanceCount": count,
                "InstanceType": "ml.g4dn.xlarge",
                "InitialVariantWeight": weight,
            }
            for variant, weight, count in variants
        ],
    )
    sm.create_endpoint(
        EndpointName=name,
        EndpointConfigName=f"{name}-config",
        Tags=[{"Key": k, "Value": v} for k, v in tags.items()],
    )


def set_status(name: str, status: str) -> None:
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[ACCOUNT][REGION].endpoints[name].endpoint_status = status


def set_variant(name: str, **fields: Any) -> None:
    from moto.sagemaker.models import sagemaker_backends

    sagemaker_backends[ACCOUNT][REGION].endpoints[name].production_variants[0].update(fields)


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.data


# -- inference components: see tests/regions/fidelity_sagemaker_control.py

TAGS = {
    "meridian:discover": "true",
    "meridian:model": "llama-3.1-8b-instruct",
    "meridian:version": "v1",
    "meridian:served-model": "meta-llama/Llama-3.1-8B-Instruct",
    "meridian:container": "tgi",
    "meridian:max-concurrency": "64",
    "meridian:price-input": "0.3",
    "meridian:price-output": "0.6",
}


@pytest.fixture
def source(factory: Any) -> Any:
    def make(**kwargs: Any) -> SageMakerSource:
        return SageMakerSource(SageMakerSettings(region=REGION, **kwargs), CATALOG, factory)

    return make


async def test_tagged_in_service_endpoint_becomes_a_backend(aws: Any, source: Any) -> None:
    endpoint(aws, "llama-a", TAGS, (("blue", 3.0, 2), ("green", 1.0, 1)))
    endpoint(aws, "untagged", {"team": "search"})
    endpoint(aws, "other-filter", {**TAGS, "meridian:discover": "false"})
    listing = await source().discover()
    assert listing.refused == ()
    (item,) = listing.found
    spec = item.spec
    assert spec.name == "sagemaker/us-east-1/llama-a"
    assert (spec.model, spec.version, spec.region) == ("llama-3.1-8b-instruct", "v1", US)
    assert spec.kind is ProviderKind.SAGEMAKER
    assert spec.url == "https://runtime.sagemaker.us-east-1.amazonaws.com"
    assert spec.served_model == "meta-llama/Llama-3.1-8B-Instruct"
    assert (spec.max_concurrency, spec.price.input_per_m, spec.price.output_per_m) == (64, 0.3, 0.6)
    assert spec.sagemaker is not None
    assert (spec.sagemaker.endpoint_name, spec.sagemaker.region) == ("llama-a", REGION)
    assert (spec.sagemaker.container, spec.sagemaker.target_variant) == ("tgi", None)
    assert item.address is None  # built from the configured region: nothing to vet
    assert "blue(weight=3, instances=2)" in item.detail and "green" in item.detail


async def test_every_container_the_adapter_speaks_can_be_tagged(aws: Any, source: Any) -> None:
    """The tag accepts exactly the config's containers (tei, TEI's embedding server, too)."""
    for container in ("vllm", "tgi", "lmi", "tei"):
        endpoint(aws, f"e-{container}", {**TAGS, "meridian:container": container})
    listing = await source().discover()
    assert listing.refused == ()
    found = {i.spec.name.rpartition("/")[2]: i.spec.sagemaker for i in listing.found}
    assert {n: o.container for n, o in found.items() if o is not None} == {
        f"e-{c}": c for c in ("vllm", "tgi", "lmi", "tei")
    }


async def test_per_variant_tags_give_one_backend_per_variant(aws: Any, source: Any) -> None:
    tags = {k: v for k, v in TAGS.items() if k != "meridian:version"}
    tags |= {"meridian:variant:blue": "v1", "meridian:variant:green": "v2"}
    tags["meridian:variant:gone"] = "v3"
    endpoint(aws, "llama-ab", tags, (("blue", 1.0, 1), ("green", 1.0, 1)))
    listing = await source().discover()
    got = {f.spec.name: f.spec for f in listing.found}
    assert set(got) == {"sagemaker/us-east-1/llama-ab/blue", "sagemaker/us-east-1/llama-ab/green"}
    green = got["sagemaker/us-east-1/llama-ab/green"]
    assert green.version == "v2"
    assert green.sagemaker is not None and green.sagemaker.target_variant == "green"
    assert listing.refused[0].name == "sagemaker/us-east-1/llama-ab/gone"
    assert listing.refused[0].reason == "no such production variant"


@pytest.mark.parametrize("status", ["Creating", "Updating", "Failed", "OutOfService", "Deleting"])
async def test_only_in_service_endpoints_are_routable(aws: Any, source: Any, status: str) -> None:
    endpoint(aws, "llama-a", TAGS)
    endpoint(aws, "llama-b", TAGS)
    set_status("llama-b", status)
    listing = await source().discover()
    assert [f.spec.name for f in listing.found] == ["sagemaker/us-east-1/llama-a"]
    assert [(r.name, r.reason) for r in listing.refused] == [
        ("sagemaker/us-east-1/llama-b", f"status {status}")
    ]
    set_status("llama-b", "InService")  # it finishes updating: picked up next round
    assert len((await source().discover()).found) == 2


async def test_endpoints_that_cannot_serve_are_refused_with_a_reason(aws: Any, source: Any) -> None:
    endpoint(aws, "no-model", {k: v for k, v in TAGS.items() if k != "meridian:model"})
    endpoint(aws, "no-version", {k: v for k, v in TAGS.items() if k != "meridian:version"})
    endpoint(aws, "bad-container", {**TAGS, "meridian:container": "triton"})
    endpoint(aws, "bad-number", {**TAGS, "meridian:max-concurrency": "lots"})
    endpoint(aws, "no-instances", TAGS)
    set_variant("no-instances", CurrentInstanceCount=0)  # scaled to zero
    listing = await source().discover()
    assert listing.found == ()
    reasons = {r.name.rpartition("/")[2]: r.reason for r in listing.refused}
    assert reasons["no-model"] == "no meridian:model tag"
    assert reasons["no-version"] == "no meridian:version tag"
    assert "triton" in reasons["bad-container"]
    assert reasons["bad-number"].startswith("bad tag:")
    assert reasons["no-instances"] == "no variant has instances and weight"


async def test_unconfigured_region_is_refused(session: Any, factory: Any) -> None:
    endpoint(session.client("sagemaker", region_name="eu-west-1"), "llama-eu", TAGS)
    eu = SageMakerSource(SageMakerSettings(region="eu-west-1"), CATALOG, factory)
    listing = await eu.discover()
    assert listing.found == ()
    assert listing.refused[0].reason == "region aws:eu-west-1 not configured"


async def test_deleted_endpoints_disappear_and_filters_are_configurable(
    aws: Any, source: Any
) -> None:
    endpoint(aws, "llama-a", {**TAGS, "env": "prod"})
    endpoint(aws, "llama-b", {**TAGS, "env": "staging"})
    prod = source(tags={"meridian:model": "*", "env": "prod"})
    assert [f.spec.name for f in (await prod.discover()).found] == ["sagemaker/us-east-1/llama-a"]
    assert len((await source().discover()).found) == 2
    aws.delete_endpoint(EndpointName="llama-a")
    assert [f.spec.name for f in (await source().discover()).found] == [
        "sagemaker/us-east-1/llama-b"
    ]


async def test_runtime_url_override_and_emulator_credentials(aws: Any, source: Any) -> None:
    endpoint(aws, "llama-a", TAGS)
    s = source(runtime_url="http://127.0.0.1:9999", emulator_credentials=True)
    spec = (await s.discover()).found[0].spec
    assert spec.url == "http://127.0.0.1:9999"
    assert spec.sagemaker is not None and spec.sagemaker.emulator_credentials


def deny(client: Any, operation: str, code: str, field: str, value: str, arn: str) -> None:
    """Make AWS answer ``operation`` on one resource with IAM's refusal: a real
    moto client whose request for that resource gets, instead of moto's answer,
    the HTTP 400 SageMaker sends (botocore parses it as for a real one)."""

    def refuse(request: AWSPreparedRequest, **_: Any) -> AWSResponse | None:
        if json.loads(request.body or b"{}").get(field) != value:
            return None  # moto answers
        message = (
            f"User: arn:aws:sts::{ACCOUNT}:assumed-role/meridian-gateway/task is not"
            f" authorized to perform: sagemaker:{operation} on resource: {arn}"
            f" because no identity-based policy allows the sagemaker:{operation} action"
        )
        body = json.dumps({"__type": code, "Message": message}).encode()
        headers = {"Content-Type": "application/x-amz-json-1.1", "x-amzn-RequestId": "r-1"}
        return AWSResponse(request.url, 400, headers, _Body(body))

    client.meta.events.register_first(f"before-send.sagemaker.{operation}", refuse)


@pytest.mark.parametrize(
    ("operation", "field", "code"),
    [
        ("ListTags", "ResourceArn", "AccessDeniedException"),
        ("DescribeEndpoint", "EndpointName", "AccessDeniedException"),
        ("DescribeEndpoint", "EndpointName", "AccessDenied"),
    ],
)
async def test_an_endpoint_the_role_cannot_read_is_refused_and_the_rest_discovered(
    aws: Any, session: Any, operation: str, field: str, code: str
) -> None:
    endpoint(aws, "llama-a", TAGS)
    endpoint(aws, "llama-secret", TAGS)
    endpoint(aws, "llama-z", TAGS)
    arn = aws.describe_endpoint(EndpointName="llama-secret")["EndpointArn"]
    value = arn if field == "ResourceArn" else "llama-secret"

    def least_privilege(settings: SageMakerSettings) -> Any:
        client = session.client("sagemaker", region_name=settings.region)
        deny(client, operation, code, field, value, arn)
        return client

    listing = await SageMakerSource(
        SageMakerSettings(region=REGION), CATALOG, least_privilege
    ).discover()
    assert [f.spec.name for f in listing.found] == [
        "sagemaker/us-east-1/llama-a",
        "sagemaker/us-east-1/llama-z",
    ]
    assert [(r.name, r.reason) for r in listing.refused] == [
        ("sagemaker/us-east-1/llama-secret", f"{operation} denied: {code}")
    ]


async def test_a_role_denied_on_every_endpoint_keeps_the_last_inventory(
    aws: Any, session: Any
) -> None:
    """A lost permission denies every endpoint: that is an error of the source
    (the last good inventory stays), not a region with nothing in it."""
    endpoint(aws, "llama-a", TAGS)
    arn = aws.describe_endpoint(EndpointName="llama-a")["EndpointArn"]

    def no_list_tags(settings: SageMakerSettings) -> Any:
        client = session.client("sagemaker", region_name=settings.region)
        deny(client, "ListTags", "AccessDeniedException", "ResourceArn", arn, arn)
        return client

    source = SageMakerSource(SageMakerSettings(region=REGION), CATALOG, no_list_tags)
    with pytest.raises(DiscoveryError, match="every endpoint denied"):
        await source.discover()


class _Recording:
    """A real moto-backed client that records the threads it is called on and can fail."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.threads: set[int] = set()
        self.fail = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.threads.add(threading.get_ident())
            if self.fail:
                raise ClientError(
                    {"Error": {"Code": "ThrottlingException", "Message": "Rate exceeded"}},
                    name,
                )
            return attr(*args, **kwargs)

        return call


async def test_boto3_runs_off_the_event_loop_and_errors_are_discovery_errors(
    aws: Any, session: Any
) -> None:
    endpoint(aws, "llama-a", TAGS)
    clients: list[_Recording] = []

    def recording(settings: SageMakerSettings) -> Any:
        clients.append(_Recording(session.client("sagemaker", region_name=settings.region)))
        return clients[-1]

    s = SageMakerSource(SageMakerSettings(region=REGION), CATALOG, recording)
    assert len((await s.discover()).found) == 1
    assert clients[0].threads and threading.get_ident() not in clients[0].threads
    clients[0].fail = True
    with pytest.raises(DiscoveryError, match="ThrottlingException"):
        await s.discover()
    clients[0].fail = False
    await s.close()


async def test_inference_components_become_one_backend_each(aws: Any, source: Any) -> None:
    """An endpoint hosting components is never invoked without one (AWS answers
    400 INFERENCE_COMPONENT_NAME_MISSING): each InService component is a backend
    named for it, its tags over the endpoint's."""
    endpoint(aws, "shared", {**TAGS, "meridian:variant:AllTraffic": "v9"})
    fidelity_sagemaker_control.component("shared", "llama-v1", {})
    fidelity_sagemaker_control.component(
        "shared", "llama-v2", {"meridian:version": "v2", "meridian:container": "lmi"}
    )
    fidelity_sagemaker_control.component(
        "shared", "llama-v3", {"meridian:version": "v3"}, status="Creating"
    )
    fidelity_sagemaker_control.component("shared", "bad", {"meridian:container": "triton"})
    endpoint(aws, "plain", TAGS)
    listing = await source().discover()
    got = {f.spec.name: f.spec for f in listing.found}
    assert set(got) == {
        "sagemaker/us-east-1/shared/ic/llama-v1",
        "sagemaker/us-east-1/shared/ic/llama-v2",
        "sagemaker/us-east-1/plain",
    }
    v1, v2 = (
        got["sagemaker/us-east-1/shared/ic/llama-v1"],
        got["sagemaker/us-east-1/shared/ic/llama-v2"],
    )
    assert v1.sagemaker is not None and v2.sagemaker is not None
    assert (v1.version, v1.sagemaker.container, v1.sagemaker.inference_component) == (
        "v1",
        "tgi",
        "llama-v1",
    )
    assert (v2.version, v2.sagemaker.container, v2.sagemaker.inference_component) == (
        "v2",
        "lmi",
        "llama-v2",
    )
    assert v1.sagemaker.endpoint_name == "shared" and v1.sagemaker.target_variant is None
    plain = got["sagemaker/us-east-1/plain"]
    assert plain.sagemaker is not None and plain.sagemaker.inference_component is None
    reasons = {r.name: r.reason for r in listing.refused}
    assert (
        reasons["sagemaker/us-east-1/shared/ic/llama-v3"] == "inference component status Creating"
    )
    assert "triton" in reasons["sagemaker/us-east-1/shared/ic/bad"]


async def test_a_role_without_list_inference_components_discovers_as_before(
    aws: Any, session: Any
) -> None:
    endpoint(aws, "llama-a", TAGS)

    def refuse(model: Any, **_: Any) -> Any:
        denied = {"__type": "AccessDeniedException", "Message": "not authorized"}
        return fidelity_sagemaker_control.answer(model, denied, 400)

    def old_policy(settings: SageMakerSettings) -> Any:
        client = session.client("sagemaker", region_name=settings.region)
        event = "before-call.sagemaker.ListInferenceComponents"
        client.meta.events.unregister(event, fidelity_sagemaker_control.list_components)
        client.meta.events.register_first(event, refuse)
        return client

    listing = await SageMakerSource(
        SageMakerSettings(region=REGION), CATALOG, old_policy
    ).discover()
    (item,) = listing.found
    assert item.spec.name == "sagemaker/us-east-1/llama-a"
    assert "ListInferenceComponents denied: AccessDeniedException" in item.detail


async def test_a_denied_component_is_refused_without_failing_the_region(
    aws: Any, session: Any
) -> None:
    """One endpoint the role may not tag-read and one component it may not: the
    region still lists (only endpoints count toward "every endpoint denied")."""
    endpoint(aws, "llama-secret", TAGS)
    endpoint(aws, "shared", TAGS)
    fidelity_sagemaker_control.component("shared", "ic-a", {})
    fidelity_sagemaker_control.component("shared", "ic-b", {})
    (secret_c,) = [
        c
        for c in fidelity_sagemaker_control.COMPONENTS["shared"]
        if c["InferenceComponentName"] == "ic-b"
    ]
    fidelity_sagemaker_control.DENIED.add(secret_c["InferenceComponentArn"])
    arn = aws.describe_endpoint(EndpointName="llama-secret")["EndpointArn"]

    def partial(settings: SageMakerSettings) -> Any:
        client = session.client("sagemaker", region_name=settings.region)
        deny(client, "ListTags", "AccessDeniedException", "ResourceArn", arn, arn)
        return client

    source = SageMakerSource(SageMakerSettings(region=REGION), CATALOG, partial)
    listing = await source.discover()
    assert [f.spec.name for f in listing.found] == ["sagemaker/us-east-1/shared/ic/ic-a"]
    assert sorted(r.name for r in listing.refused) == [
        "sagemaker/us-east-1/llama-secret",
        "sagemaker/us-east-1/shared/ic/ic-b",
    ]
