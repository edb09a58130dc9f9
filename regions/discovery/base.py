"""What a discovery source reports, and what it may refer to.

A source (``regions.discovery.sagemaker``, ``regions.discovery.gce``) lists
one cloud's backends and returns a :class:`Listing`: the backends it could
describe (:class:`Found`) and the ones it saw but will not route to, each
with its reason (:class:`Refused`: not ``InService``, no GPU, a missing tag).
A source that cannot list at all raises :class:`DiscoveryError`; the
refresher then keeps that source's last good listing.

Sources build :class:`regions.inventory.BackendSpec` values, so they need the
configured regions (a backend's jurisdiction tags come from the config, never
from the cloud): :class:`Catalog` is that read-only view of the config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Protocol

from regions.inventory import BackendSpec, Region


class DiscoveryError(RuntimeError):
    """A source could not list its backends (API error, timeout, bad credentials)."""


@dataclass(frozen=True, slots=True)
class Found:
    """A discovered backend. ``address`` is the host the source read from the
    cloud's API (an instance's IP): the refresher vets it against the allowed
    networks. ``None`` means the URL was derived from configuration alone (a
    SageMaker runtime host built from a configured region name)."""

    spec: BackendSpec
    address: str | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class Refused:
    """A resource a source saw but will not route to, and why."""

    name: str
    reason: str


@dataclass(frozen=True, slots=True)
class Listing:
    found: tuple[Found, ...] = ()
    refused: tuple[Refused, ...] = ()


class Source(Protocol):
    """One discovery source. ``discover`` must not block the event loop: SDK
    calls go through ``asyncio.to_thread``."""

    @property
    def name(self) -> str: ...

    async def discover(self) -> Listing: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Catalog:
    """What the config defines: regions by name, and each model's versions.

    ``reserved`` holds the names of configured (static) backends, which a
    discovered backend may never replace.
    """

    regions: Mapping[str, Region] = field(default_factory=lambda: MappingProxyType({}))
    versions: Mapping[str, frozenset[str]] = field(default_factory=lambda: MappingProxyType({}))
    reserved: frozenset[str] = frozenset()

    def region(self, name: str) -> Region | None:
        return self.regions.get(name)

    def why_not(self, spec: BackendSpec) -> str | None:
        """Why ``spec`` cannot join the inventory, or None when it can."""
        if spec.name in self.reserved:
            return f"name {spec.name!r} belongs to a configured backend"
        if spec.region.name not in self.regions:
            return f"region {spec.region.name} is not configured (its jurisdiction is unknown)"
        versions = self.versions.get(spec.model)
        if versions is None:
            return f"model {spec.model!r} is not configured"
        if spec.version not in versions:
            return f"model {spec.model!r} has no version {spec.version!r}"
        return None


def parse_float(value: str | None, default: float, *, minimum: float = 0.0) -> float:
    """A tag or label value as a number; ``default`` when absent, ValueError when bad."""
    if value is None or value == "":
        return default
    number = float(value)
    if not number >= minimum or number == float("inf"):
        raise ValueError(f"{value!r} is not a number >= {minimum:g}")
    return number


def parse_int(value: str | None, default: int, *, minimum: int = 1, maximum: int = 1 << 31) -> int:
    if value is None or value == "":
        return default
    number = int(value)
    if not minimum <= number <= maximum:
        raise ValueError(f"{value!r} is not an integer in [{minimum}, {maximum}]")
    return number
