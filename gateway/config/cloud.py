"""Config sections that reach cloud control planes: backend discovery and
model-weight replication (docs/configuration.md, docs/deploy.md,
docs/replication.md)."""

from __future__ import annotations

import ipaddress
import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.base import AWS_REGION, Strict, location

_GCE_LABEL_KEY = r"^[a-z][a-z0-9_-]{0,62}$"
_GCE_LABEL_VALUE = r"^[a-z0-9_-]{0,63}$"


def _emulator_url(value: str | None) -> str | None:
    if value is not None and not re.match(r"^https?://[^/\s?#]+/?$", value):
        raise ValueError("must be an http:// or https:// base URL (scheme and host only)")
    return None if value is None else value.rstrip("/")


class SageMakerDiscoveryConfig(Strict):
    """SageMaker endpoints by tag (regions.discovery.sagemaker, docs/deploy.md)."""

    regions: tuple[str, ...] = Field(min_length=1)
    tags: dict[str, str] = Field(default_factory=lambda: {"meridian:discover": "true"})
    profile: str | None = Field(None, min_length=1)
    control_url: str | None = None  # a moto server or VPC endpoint for the control plane
    runtime_url: str | None = None  # an emulator or VPC endpoint for the data plane
    credentials: Literal["chain", "emulator"] = "chain"
    timeout_s: float = Field(20.0, gt=0)

    @field_validator("regions")
    @classmethod
    def _regions(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [r for r in value if not AWS_REGION.match(r)]
        if bad:
            raise ValueError(f"not AWS region names: {bad}")
        return value

    _urls = field_validator("control_url", "runtime_url")(_emulator_url)

    @model_validator(mode="after")
    def _emulated(self) -> SageMakerDiscoveryConfig:
        """Fake keys only ever go to emulators (or, for the control plane, to an
        in-process mock when no control_url is set)."""
        urls = (self.control_url or "http://", self.runtime_url or "")
        if self.credentials == "emulator" and not all(u.startswith("http://") for u in urls):
            raise ValueError("emulator credentials need an http:// runtime_url (and control_url)")
        return self


class GceDiscoveryConfig(Strict):
    """Self-hosted GPU instances by label (regions.discovery.gce, docs/deploy.md)."""

    project: str = Field(pattern=r"^[a-z][a-z0-9-]{4,28}[a-z0-9]$")
    zones: tuple[str, ...] = ()
    labels: dict[str, str] = Field(
        default_factory=lambda: {"meridian-role": "llm-backend"}, min_length=1
    )
    port_label: str = Field("meridian-port", pattern=_GCE_LABEL_KEY)
    default_port: int = Field(8000, gt=0, lt=65536)
    accelerators: tuple[str, ...] = ()
    require_gpu: bool = True
    managed_groups: bool = True
    api_endpoint: str | None = None  # a private endpoint, or a test server
    credentials: Literal["adc", "anonymous"] = "adc"
    timeout_s: float = Field(20.0, gt=0)

    _endpoint = field_validator("api_endpoint")(_emulator_url)

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for k, v in value.items():  # they go into the API filter string unquoted
            if not re.match(_GCE_LABEL_KEY, k) or not re.match(_GCE_LABEL_VALUE, v):
                raise ValueError(f"{k}={v!r} is not a GCE label (lower case, digits, _ and -)")
        return value

    @model_validator(mode="after")
    def _anonymous(self) -> GceDiscoveryConfig:
        if self.credentials == "anonymous" and not (self.api_endpoint or "").startswith("http://"):
            raise ValueError("anonymous credentials are for an http:// api_endpoint only")
        return self


class DiscoveryConfig(Strict):
    """Backends found at run time, refreshed every ``refresh_s`` (gateway.control.discovery).

    ``allowed_networks``: CIDRs a discovered address must fall in (no SSRF
    through discovery; regions.discovery.netpolicy)."""

    refresh_s: float = Field(30.0, gt=0)
    initial_timeout_s: float = Field(20.0, ge=0)
    allowed_networks: tuple[str, ...] = ()
    sagemaker: SageMakerDiscoveryConfig | None = None
    gce: GceDiscoveryConfig | None = None

    @field_validator("allowed_networks")
    @classmethod
    def _cidrs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in value:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError as exc:
                raise ValueError(f"not a CIDR network: {exc}") from None
        return value

    @model_validator(mode="after")
    def _sources(self) -> DiscoveryConfig:
        if self.sagemaker is None and self.gce is None:
            raise ValueError("discovery needs a 'sagemaker:' or a 'gce:' section")
        if self.gce is not None and not self.allowed_networks:
            raise ValueError("gce discovery needs allowed_networks (the instances' subnets)")
        return self


class ReplicationConfig(Strict):
    """Model-weight replication (regions.replication, docs/replication.md).

    ``origin`` is where new versions are published; a job copies from it
    unless told ``--from REGION``. The endpoints are for S3-compatible stores
    and the GCS emulator; credentials always come from each SDK's chain.
    """

    origin: str | None = None
    concurrency: int = Field(4, gt=0, le=64)
    chunk_mb: int = Field(8, gt=0, le=256)
    multipart_threshold_mb: int = Field(64, ge=5)
    part_size_mb: int = Field(64, ge=5, le=5 * 1024)
    publish_every_s: float = Field(5.0, ge=0)
    s3_endpoint_url: str | None = Field(None, pattern=r"^https?://[^/\s?#]+/?$")
    gcs_endpoint: str | None = Field(None, pattern=r"^https?://[^/\s?#]+/?$")
    gcs_project: str | None = Field(None, min_length=1)
    gcs_credentials: Literal["adc", "anonymous"] = "adc"

    @field_validator("origin")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        return None if value is None else location(value)

    @model_validator(mode="after")
    def _anonymous(self) -> ReplicationConfig:
        if self.gcs_credentials == "anonymous" and not (self.gcs_endpoint or "").startswith(
            "http://"
        ):
            raise ValueError("gcs_credentials anonymous is for an http:// emulator endpoint only")
        return self
