"""The immutable view of the world one routing decision reads.

A new snapshot replaces the old one whole (one attribute assignment), so a
request never sees half of a change. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from regions.inventory import BackendSpec


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A logical model: its version split and its backends per version."""

    name: str
    split: Mapping[str, int]
    backends: Mapping[str, tuple[BackendSpec, ...]]


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    revision: int
    models: Mapping[str, ModelRoute]
    dials: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def dial(self, region: str) -> int:
        """The region's traffic dial, 0–100; 0 means drained."""
        return self.dials.get(region, 100)

    @classmethod
    def build(
        cls,
        revision: int,
        splits: Mapping[str, Mapping[str, int]],
        backends: tuple[BackendSpec, ...],
        dials: Mapping[str, int] | None = None,
    ) -> RoutingSnapshot:
        models: dict[str, ModelRoute] = {}
        for name, split in splits.items():
            per_version: dict[str, tuple[BackendSpec, ...]] = {
                v: tuple(b for b in backends if b.model == name and b.version == v) for v in split
            }
            models[name] = ModelRoute(
                name, MappingProxyType(dict(split)), MappingProxyType(per_version)
            )
        return cls(revision, MappingProxyType(models), MappingProxyType(dict(dials or {})))
