"""What the store's documents mean, and how they overlay the config's routing snapshot.

Keys (one JSON object each)::

    split/MODEL                      {"VERSION": weight, ...}
    dial/REGION                      {"dial": 0..100}
    drain/REGION                     {"drained": true}       (absent = not drained)
    replica/MODEL@VERSION/REGION     {"status": "verified" | ..., "detail": str, "updated": t}
    canary/MODEL                     gateway.canary.codec document

The config gives the defaults (``models[].versions``, ``regions[].dial``,
``backends[].replica_ready``); a store entry overrides its default, for
names the config knows. A drained region routes nothing whatever its dial;
undraining restores the dial it had. A replica is ready only when its status
is ``verified``. Entries for names the config does not know (a model or
region removed from the file) are ignored, and a split that would leave a
model with no weight falls back to the config's, so stale state can never
make a configured model unroutable.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from gateway.canary.codec import from_doc, to_doc
from gateway.canary.plan import Canary
from gateway.store.base import Doc, Loaded
from routing.snapshot import ReplicaKey, RoutingSnapshot

log = logging.getLogger("meridian.control")

VERIFIED = "verified"


def split_key(model: str) -> str:
    return f"split/{model}"


def dial_key(region: str) -> str:
    return f"dial/{region}"


def drain_key(region: str) -> str:
    return f"drain/{region}"


def replica_key(model: str, version: str, region: str) -> str:
    return f"replica/{model}@{version}/{region}"


def canary_key(model: str) -> str:
    return f"canary/{model}"


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    status: str
    detail: str = ""
    updated: float = 0.0

    @property
    def ready(self) -> bool:
        return self.status == VERIFIED


def _empty() -> Mapping[Any, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class ControlState:
    revision: int = 0
    splits: Mapping[str, Mapping[str, int]] = field(default_factory=_empty)
    dials: Mapping[str, int] = field(default_factory=_empty)
    drains: frozenset[str] = frozenset()
    replicas: Mapping[ReplicaKey, ReplicaStatus] = field(default_factory=_empty)
    canaries: Mapping[str, Canary] = field(default_factory=_empty)

    @classmethod
    def parse(cls, loaded: Loaded) -> ControlState:
        """Malformed documents are logged and skipped, never fatal."""
        splits: dict[str, Mapping[str, int]] = {}
        dials: dict[str, int] = {}
        drains: set[str] = set()
        replicas: dict[ReplicaKey, ReplicaStatus] = {}
        canaries: dict[str, Canary] = {}
        for key, doc in loaded.entries.items():
            kind, _, name = key.partition("/")
            try:
                if kind == "split":
                    splits[name] = MappingProxyType({str(v): int(w) for v, w in doc.items()})
                elif kind == "dial":
                    dials[name] = max(0, min(100, int(doc["dial"])))
                elif kind == "drain":
                    drains.add(name)
                elif kind == "replica":
                    replicas[_replica(name)] = ReplicaStatus(
                        str(doc["status"]), str(doc.get("detail", "")), float(doc.get("updated", 0))
                    )
                elif kind == "canary":
                    canaries[name] = from_doc(doc)
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("ignoring malformed store entry %s: %s", key, exc)
        return cls(
            loaded.revision,
            MappingProxyType(splits),
            MappingProxyType(dials),
            frozenset(drains),
            MappingProxyType(replicas),
            MappingProxyType(canaries),
        )

    def overlay(self, base: RoutingSnapshot) -> RoutingSnapshot:
        """``base`` (built from the config) with this state's overrides, as a new snapshot."""
        splits: dict[str, dict[str, int]] = {}
        for name, route in base.models.items():
            split = dict(route.split)
            override = self.splits.get(name)
            if override is not None:
                candidate = {v: override.get(v, 0) for v in split}
                if sum(candidate.values()) > 0:
                    split = candidate
            splits[name] = split
        dials = dict(base.dials)
        for region, dial in self.dials.items():
            if region in dials:
                dials[region] = dial
        for region in self.drains:
            if region in dials:
                dials[region] = 0
        unready = set(base.unready)
        for key, status in self.replicas.items():
            (unready.discard if status.ready else unready.add)(key)
        backends = {
            b.name: b
            for route in base.models.values()
            for per in route.backends.values()
            for b in per
        }
        return RoutingSnapshot.build(
            self.revision,
            splits,
            tuple(backends.values()),
            dials,
            cost_weights={name: route.cost_weight for name, route in base.models.items()},
            unready=frozenset(unready),
        )

    def canary_doc(self, model: str) -> Doc | None:
        canary = self.canaries.get(model)
        return None if canary is None else to_doc(canary)


def _replica(name: str) -> ReplicaKey:
    left, _, region = name.rpartition("/")
    model, _, version = left.rpartition("@")
    if not (model and version and region):
        raise ValueError(f"bad replica key {name!r}")
    return (model, version, region)
