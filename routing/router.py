"""Pure routing: a request and a snapshot in, a plan out.

Order of decisions (DESIGN.md §3 step 2):

1. the model must exist and the tenant may use it;
2. the version is chosen by the weighted split, sticky per affinity key: the
   key hashes to a point u in [0, 1) and the version whose cumulative-weight
   interval holds u serves it, so a conversation stays on one version while
   the split is unchanged;
3. that version's backends outside the residency constraint are dropped —
   and if nothing is left, the error names the constraint and the model;
4. drained regions (dial 0) are dropped;
5. the rest are ordered by weighted random sampling without replacement
   (Efraimidis–Spirakis: key = u^(1/w), w = backend weight × region dial), so
   the first choice follows the weights and the rest are failover order.

Randomness is injected so tests are deterministic.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

from regions.request import GenerationRequest
from routing.plan import Candidate, NoBackendAvailable, Plan, ResidencyViolation, UnknownModel
from routing.snapshot import RoutingSnapshot


def affinity_point(key: str, model: str) -> float:
    """A stable point in [0, 1) for an affinity key (independent of PYTHONHASHSEED)."""
    digest = hashlib.blake2b(f"{model}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def pick_version(split: Mapping[str, int], point: float) -> str:
    total = sum(split.values())
    if total <= 0:
        raise NoBackendAvailable("no version of this model has traffic weight")
    edge = 0.0
    chosen = ""
    for version in sorted(split):
        weight = split[version]
        if weight <= 0:
            continue
        chosen = version
        edge += weight / total
        if point < edge:
            return version
    return chosen  # rounding at the top edge


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def plan(
        self,
        snapshot: RoutingSnapshot,
        request: GenerationRequest,
        allowed_models: frozenset[str] | None = None,
    ) -> Plan:
        route = snapshot.models.get(request.model)
        if route is None or (allowed_models is not None and request.model not in allowed_models):
            raise UnknownModel(f"The model `{request.model}` does not exist.")
        version = pick_version(route.split, affinity_point(request.affinity_key, route.name))
        excluded: list[tuple[str, str]] = []
        in_residency = []
        for backend in route.backends.get(version, ()):
            if request.residency.admits(backend.region.tags):
                in_residency.append(backend)
            else:
                excluded.append((backend.name, "outside residency"))
        if not in_residency:
            raise ResidencyViolation(
                f"no region allowed by residency constraint "
                f"[{request.residency.describe()}] serves model `{request.model}` "
                f"(version {version})"
            )
        weighted = []
        for backend in in_residency:
            dial = snapshot.dial(backend.region.name)
            if dial <= 0:
                excluded.append((backend.name, "region drained"))
                continue
            weight = backend.weight * dial / 100.0
            key = self._rng.random() ** (1.0 / weight)
            weighted.append((key, backend))
        if not weighted:
            raise NoBackendAvailable(
                f"every region allowed by [{request.residency.describe()}] that serves "
                f"`{request.model}` is drained",
                retry_after=5.0,
            )
        weighted.sort(key=lambda kb: kb[0], reverse=True)
        candidates = tuple(
            Candidate(b, "weighted choice" if i == 0 else "failover")
            for i, (_, b) in enumerate(weighted)
        )
        return Plan(request.model, version, candidates, tuple(excluded))
