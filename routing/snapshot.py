"""The immutable view of the world one routing decision reads.

A new snapshot replaces the old one whole (one attribute assignment), so a
request never sees half of a change. Nothing here does I/O. Rings for prefix
affinity are built once per snapshot, per self-hosted pool (the self-hosted
backends of one model version in one region).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from regions.inventory import BackendSpec, ProviderKind
from regions.request import Residency
from routing.affinity import Ring

SELF_HOSTED = frozenset({ProviderKind.VLLM, ProviderKind.TGI})

ReplicaKey = tuple[str, str, str]  # (model, version, region)

# Residency constraints come from clients (x-meridian-residency), so the memo of
# static filters is kept to this many entries: past it, it starts over.
MEMO_ENTRIES = 4096


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """A logical model: its version split, its backends per version, its cost weight."""

    name: str
    split: Mapping[str, int]
    backends: Mapping[str, tuple[BackendSpec, ...]]
    cost_weight: float = 0.0
    rings: Mapping[tuple[str, str], Ring] = field(default_factory=lambda: MappingProxyType({}))
    # The one version with traffic weight, when there is exactly one: every affinity
    # point picks it, so routing need not hash the request's key (computed once here,
    # as the split cannot change within a snapshot).
    sole: str | None = field(init=False, default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        weighted = [v for v, w in self.split.items() if w > 0]
        object.__setattr__(self, "sole", weighted[0] if len(weighted) == 1 else None)


Eligible = tuple[tuple[BackendSpec, float], ...]  # (backend, selection weight)
Excluded = tuple[tuple[str, str], ...]  # (backend name, why)


@dataclass(frozen=True, slots=True)
class RoutingSnapshot:
    revision: int
    models: Mapping[str, ModelRoute]
    dials: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    unready: frozenset[ReplicaKey] = frozenset()
    # Memo of the static filters per (model, version, residency): they depend on
    # nothing that changes within a snapshot, so each is computed once.
    _static: dict[tuple[str, str, Residency], tuple[Eligible, Excluded]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def static_filter(
        self, route: ModelRoute, version: str, residency: Residency
    ) -> tuple[Eligible, Excluded, bool]:
        """Backends of a version left after residency, dials and readiness.

        Returns (eligible with selection weights, exclusions with reasons,
        whether any backend was inside the residency constraint at all).
        """
        key = (route.name, version, residency)
        cached = self._static.get(key)
        if cached is None:
            eligible: list[tuple[BackendSpec, float]] = []
            excluded: list[tuple[str, str]] = []
            for b in route.backends.get(version, ()):
                if not residency.admits(b.region.tags):
                    excluded.append((b.name, "outside residency"))
                elif self.dial(b.region.name) <= 0:
                    excluded.append((b.name, "region drained"))
                elif not self.replica_ready(b):
                    excluded.append((b.name, "replica not verified"))
                else:
                    eligible.append((b, b.weight * self.dial(b.region.name) / 100.0))
            if len(self._static) >= MEMO_ENTRIES:
                self._static.clear()
            cached = self._static[key] = (tuple(eligible), tuple(excluded))
        eligible_t, excluded_t = cached
        in_residency = bool(eligible_t) or any(w != "outside residency" for _, w in excluded_t)
        return eligible_t, excluded_t, in_residency

    def dial(self, region: str) -> int:
        """The region's traffic dial, 0–100; 0 means drained."""
        return self.dials.get(region, 100)

    def replica_ready(self, backend: BackendSpec) -> bool:
        """Whether the backend's region holds verified weights for its model version."""
        return (backend.model, backend.version, backend.region.name) not in self.unready

    @classmethod
    def build(
        cls,
        revision: int,
        splits: Mapping[str, Mapping[str, int]],
        backends: tuple[BackendSpec, ...],
        dials: Mapping[str, int] | None = None,
        *,
        cost_weights: Mapping[str, float] | None = None,
        unready: frozenset[ReplicaKey] = frozenset(),
    ) -> RoutingSnapshot:
        models: dict[str, ModelRoute] = {}
        for name, split in splits.items():
            per_version: dict[str, tuple[BackendSpec, ...]] = {
                v: tuple(b for b in backends if b.model == name and b.version == v) for v in split
            }
            pools: dict[tuple[str, str], list[str]] = {}
            for version, members in per_version.items():
                for b in members:
                    if b.kind in SELF_HOSTED:
                        pools.setdefault((version, b.region.name), []).append(b.name)
            rings = {key: Ring(names) for key, names in pools.items() if len(names) > 1}
            models[name] = ModelRoute(
                name,
                MappingProxyType(dict(split)),
                MappingProxyType(per_version),
                (cost_weights or {}).get(name, 0.0),
                MappingProxyType(rings),
            )
        return cls(revision, MappingProxyType(models), MappingProxyType(dict(dials or {})), unready)
