"""SageMaker endpoints found by tag, one AWS region per source.

One refresh is ``ListEndpoints`` (paged), ``ListTags`` for each endpoint, and
``DescribeEndpoint`` for those whose tags match the filter; boto3 is
blocking, so the whole round runs in one worker thread
(``asyncio.to_thread``), never on the event loop. The tagging API
(``resourcegroupstaggingapi:GetResources``) would save the per-endpoint
``ListTags`` calls, but it is eventually consistent and its IAM permission is
one more thing to grant; a region rarely holds more than a few dozen
endpoints.

Only ``InService`` endpoints are routable: ``Creating``, ``Updating`` (still
serving, but its variants are changing under us), ``Failed`` and the rest are
reported as refused with their status, and picked up on a later refresh.
An endpoint the role may not read (``AccessDeniedException`` on ``ListTags``
or ``DescribeEndpoint``: least-privilege IAM) is refused with that reason; the
region's other endpoints are still discovered.

Tag schema (documented for operators in ``docs/deploy.md``)::

    meridian:discover        = true        the default filter; configurable
    meridian:model           = llama-3.1-8b-instruct   (required)
    meridian:version         = v1          (required, unless per-variant tags)
    meridian:variant:<NAME>  = v2          one backend per tagged production
                                           variant (TargetVariant=<NAME>)
    meridian:served-model    = <name the container expects>  (default: model)
    meridian:container       = vllm | tgi | lmi | tei         (default: vllm)
    meridian:max-concurrency = 64
    meridian:weight          = 1.0         selection weight among peers
    meridian:price-input     = 0.30        USD per 1M input tokens
    meridian:price-output    = 0.60        USD per 1M output tokens

Without per-variant tags an endpoint is one backend and SageMaker splits its
traffic between the variants by their weights; it is routable when some
variant has instances and a weight above zero.

Inference components: each matching ``InService`` endpoint is asked for its
components (``ListInferenceComponents``, ``EndpointNameEquals``, paged). An
endpoint that hosts any is not a backend itself — AWS refuses a request
without the component header (400 ``INFERENCE_COMPONENT_NAME_MISSING``) — so
each ``InService`` component becomes one backend,
``sagemaker/<region>/<endpoint>/ic/<component>``, invoked with
``InferenceComponentName``. Its tags are the endpoint's overlaid with the
component's own (``ListTags`` on the component's ARN), so one endpoint can
host several models or versions: tag each component with ``meridian:model``
and ``meridian:version`` (per-variant tags do not apply). A component in any
other status is refused with it. A role without
``sagemaker:ListInferenceComponents`` (policies written before components
existed) discovers the endpoint as before, the denial noted in its detail.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, get_args

from regions.discovery.base import (
    Catalog,
    DiscoveryError,
    Found,
    Listing,
    Refused,
    parse_float,
    parse_int,
)
from regions.inventory import (
    BackendSpec,
    Container,
    Price,
    ProviderKind,
    Region,
    SageMakerOptions,
)

TAG = "meridian:"
TAG_MODEL = TAG + "model"
TAG_VERSION = TAG + "version"
TAG_VARIANT = TAG + "variant:"
TAG_SERVED = TAG + "served-model"
TAG_CONTAINER = TAG + "container"
TAG_CONCURRENCY = TAG + "max-concurrency"
TAG_WEIGHT = TAG + "weight"
TAG_PRICE_IN = TAG + "price-input"
TAG_PRICE_OUT = TAG + "price-output"
DEFAULT_FILTER: Mapping[str, str] = MappingProxyType({TAG + "discover": "true"})

_CONTAINERS: tuple[Container, ...] = get_args(Container)  # every container the adapter speaks
_NOT_SERVING = frozenset({"Creating", "Deleting"})  # VariantStatus that carries no traffic
# Error codes of an authorisation refusal for one resource (SageMaker's own is
# AccessDeniedException; the others are what IAM, STS and EC2-style APIs use).
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


@dataclass(frozen=True, slots=True)
class SageMakerSettings:
    """One region's discovery. ``tags`` must all match (value ``*``: the key
    exists). ``control_url`` overrides the control-plane endpoint (a moto
    server), ``runtime_url`` the data plane (an emulator); ``emulator_credentials``
    signs both with fixed fake keys, for ``http://`` emulators only."""

    region: str
    tags: Mapping[str, str] = field(default_factory=lambda: DEFAULT_FILTER)
    profile: str | None = None
    control_url: str | None = None
    runtime_url: str | None = None
    emulator_credentials: bool = False
    timeout_s: float = 20.0

    @property
    def url(self) -> str:
        return self.runtime_url or f"https://runtime.sagemaker.{self.region}.amazonaws.com"


ClientFactory = Callable[[SageMakerSettings], Any]


def boto3_client(settings: SageMakerSettings) -> Any:
    """A ``sagemaker`` control-plane client from the boto3 chain (or fake keys)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session(profile_name=settings.profile)
    fake = {"aws_access_key_id": "emulator", "aws_secret_access_key": "emulator"}
    return session.client(
        "sagemaker",
        region_name=settings.region,
        endpoint_url=settings.control_url,
        config=Config(
            connect_timeout=settings.timeout_s,
            read_timeout=settings.timeout_s,
            retries={"max_attempts": 3, "mode": "standard"},
        ),
        **(fake if settings.emulator_credentials else {}),
    )


class SageMakerSource:
    """``regions.discovery.base.Source`` for one AWS region."""

    def __init__(
        self,
        settings: SageMakerSettings,
        catalog: Catalog,
        client_factory: ClientFactory = boto3_client,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self._factory = client_factory
        self._client: Any = None

    @property
    def name(self) -> str:
        return f"sagemaker:{self.settings.region}"

    async def discover(self) -> Listing:
        return await asyncio.to_thread(self._discover)

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)

    # -- in the worker thread ------------------------------------------------

    def _discover(self) -> Listing:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            if self._client is None:
                self._client = self._factory(self.settings)
            client = self._client
            found: list[Found] = []
            refused: list[Refused] = []
            listed = 0
            for page in client.get_paginator("list_endpoints").paginate():
                for summary in page.get("Endpoints", ()):
                    listed += 1
                    self._endpoint(client, summary, found, refused)
        except (BotoCoreError, ClientError) as exc:
            raise DiscoveryError(f"{self.name}: {exc}") from None
        # endpoints denied (a component's denial is no evidence about the role)
        denied = [r for r in refused if " denied: " in r.reason and "/ic/" not in r.name]
        if listed and len(denied) == listed:
            # every endpoint denied: the role lost a permission, not one endpoint;
            # keep the last good inventory rather than drop the region's backends
            raise DiscoveryError(f"{self.name}: every endpoint denied ({denied[0].reason})")
        return Listing(tuple(found), tuple(refused))

    def _endpoint(
        self, client: Any, summary: Mapping[str, Any], found: list[Found], refused: list[Refused]
    ) -> None:
        from botocore.exceptions import ClientError

        name = str(summary["EndpointName"])
        where = self._name(name)
        try:
            tags = self._tags(client, str(summary["EndpointArn"]))
            if not self._matches(tags):
                return
            if summary.get("EndpointStatus") != "InService":
                refused.append(Refused(where, f"status {summary.get('EndpointStatus')}"))
                return
            described = client.describe_endpoint(EndpointName=name)
        except ClientError as exc:
            if _code(exc) in ("ValidationException", "ResourceNotFound"):
                return  # deleted between the listing and this call: gone, not an error
            if _code(exc) in _DENIED:
                # least-privilege IAM (say, scoped by tag) may hide single endpoints:
                # that endpoint is refused, the rest of the region is still discovered
                refused.append(Refused(where, f"{exc.operation_name} denied: {_code(exc)}"))
                return
            raise
        if described.get("EndpointStatus") != "InService":
            refused.append(Refused(where, f"status {described.get('EndpointStatus')}"))
            return
        note = ""
        try:
            components = self._components(client, name)
        except ClientError as exc:
            if _code(exc) not in _DENIED:
                raise
            components, note = [], f" (ListInferenceComponents denied: {_code(exc)})"
        if components:
            for component in components:
                self._component(client, name, component, tags, found, refused)
            return
        try:
            self._backends(described, tags, found, refused, note)
        except ValueError as exc:
            refused.append(Refused(where, f"bad tag: {exc}"))

    def _components(self, client: Any, endpoint: str) -> list[Mapping[str, Any]]:
        paginator = client.get_paginator("list_inference_components")
        return [
            summary
            for page in paginator.paginate(EndpointNameEquals=endpoint)
            for summary in page.get("InferenceComponents", ())
        ]

    def _component(
        self,
        client: Any,
        endpoint: str,
        summary: Mapping[str, Any],
        endpoint_tags: Mapping[str, str],
        found: list[Found],
        refused: list[Refused],
    ) -> None:
        from botocore.exceptions import ClientError

        component = str(summary["InferenceComponentName"])
        where = self._name(endpoint, component=component)
        status = summary.get("InferenceComponentStatus")
        if status != "InService":
            refused.append(Refused(where, f"inference component status {status}"))
            return
        try:
            own = self._tags(client, str(summary["InferenceComponentArn"]))
        except ClientError as exc:
            if _code(exc) in ("ValidationException", "ResourceNotFound"):
                return  # deleted since the listing
            if _code(exc) in _DENIED:
                refused.append(Refused(where, f"{exc.operation_name} denied: {_code(exc)}"))
                return
            raise
        tags = {**endpoint_tags, **own}
        region = self.catalog.region(f"aws:{self.settings.region}")
        if region is None:
            refused.append(Refused(where, f"region aws:{self.settings.region} not configured"))
            return
        for required in (TAG_MODEL, TAG_VERSION):
            if not tags.get(required):
                refused.append(Refused(where, f"no {required} tag"))
                return
        try:
            spec = self._spec(endpoint, None, tags[TAG_VERSION], tags, region, component)
        except ValueError as exc:
            refused.append(Refused(where, f"bad tag: {exc}"))
            return
        detail = f"inference component on variant {summary.get('VariantName')}"
        found.append(Found(spec, detail=detail))

    def _tags(self, client: Any, arn: str) -> dict[str, str]:
        tags: dict[str, str] = {}
        for page in client.get_paginator("list_tags").paginate(ResourceArn=arn):
            for tag in page.get("Tags", ()):
                tags[str(tag["Key"])] = str(tag.get("Value", ""))
        return tags

    def _matches(self, tags: Mapping[str, str]) -> bool:
        return all(
            key in tags and (want == "*" or tags[key] == want)
            for key, want in self.settings.tags.items()
        )

    def _name(self, endpoint: str, variant: str | None = None, component: str | None = None) -> str:
        base = f"sagemaker/{self.settings.region}/{endpoint}"
        if component is not None:
            return f"{base}/ic/{component}"
        return base if variant is None else f"{base}/{variant}"

    def _backends(
        self,
        described: Mapping[str, Any],
        tags: Mapping[str, str],
        found: list[Found],
        refused: list[Refused],
        note: str = "",
    ) -> None:
        endpoint = str(described["EndpointName"])
        region = self.catalog.region(f"aws:{self.settings.region}")
        if region is None:
            refused.append(
                Refused(self._name(endpoint), f"region aws:{self.settings.region} not configured")
            )
            return
        if not tags.get(TAG_MODEL):
            refused.append(Refused(self._name(endpoint), f"no {TAG_MODEL} tag"))
            return
        variants = {str(v["VariantName"]): v for v in described.get("ProductionVariants", ())}
        per_variant = {
            k[len(TAG_VARIANT) :]: v for k, v in tags.items() if k.startswith(TAG_VARIANT)
        }
        if not per_variant:
            live = [v for v in variants.values() if _serving(v) and _weight(v) > 0]
            if not tags.get(TAG_VERSION):
                refused.append(Refused(self._name(endpoint), f"no {TAG_VERSION} tag"))
            elif not live:
                refused.append(Refused(self._name(endpoint), "no variant has instances and weight"))
            else:
                detail = ", ".join(_describe(v) for v in variants.values())
                spec = self._spec(endpoint, None, tags[TAG_VERSION], tags, region)
                found.append(Found(spec, detail=f"variants {detail}{note}"))
            return
        for variant, version in sorted(per_variant.items()):
            where = self._name(endpoint, variant)
            summary = variants.get(variant)
            if summary is None:
                refused.append(Refused(where, "no such production variant"))
            elif not _serving(summary):
                refused.append(Refused(where, "variant has no serving instances"))
            elif not version:
                refused.append(Refused(where, f"empty {TAG_VARIANT}{variant} tag"))
            else:
                spec = self._spec(endpoint, variant, version, tags, region)
                found.append(Found(spec, detail=f"variant {_describe(summary)}{note}"))

    def _spec(
        self,
        endpoint: str,
        variant: str | None,
        version: str,
        tags: Mapping[str, str],
        region: Region,
        component: str | None = None,
    ) -> BackendSpec:
        container = tags.get(TAG_CONTAINER, "vllm")
        if container not in _CONTAINERS:
            raise ValueError(f"{TAG_CONTAINER}={container!r} is not one of {_CONTAINERS}")
        s = self.settings
        return BackendSpec(
            name=self._name(endpoint, variant, component),
            model=tags[TAG_MODEL],
            version=version,
            region=region,
            kind=ProviderKind.SAGEMAKER,
            url=s.url,
            served_model=tags.get(TAG_SERVED) or tags[TAG_MODEL],
            price=Price(
                parse_float(tags.get(TAG_PRICE_IN), 0.0),
                parse_float(tags.get(TAG_PRICE_OUT), 0.0),
            ),
            max_concurrency=parse_int(tags.get(TAG_CONCURRENCY), 256),
            weight=parse_float(tags.get(TAG_WEIGHT), 1.0, minimum=1e-9),
            sagemaker=SageMakerOptions(
                endpoint_name=endpoint,
                region=s.region,
                container=container,
                target_variant=variant,
                inference_component=component,
                profile=s.profile,
                emulator_credentials=s.emulator_credentials,
            ),
        )


def _serving(variant: Mapping[str, Any]) -> bool:
    """Instances up (or serverless), and not being created or deleted."""
    statuses = {str(s.get("Status")) for s in variant.get("VariantStatus", ())}
    if statuses & _NOT_SERVING:
        return False
    if "CurrentServerlessConfig" in variant:
        return True
    count = variant.get("CurrentInstanceCount")
    return count is None or int(count) > 0


def _weight(variant: Mapping[str, Any]) -> float:
    # AWS always reports CurrentWeight; moto omits it for a zero/absent initial
    # weight. Absent means the documented default, 1.0.
    return float(variant.get("CurrentWeight", 1.0))


def _describe(variant: Mapping[str, Any]) -> str:
    count = variant.get("CurrentInstanceCount", "serverless")
    return f"{variant['VariantName']}(weight={_weight(variant):g}, instances={count})"


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))
