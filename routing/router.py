"""Pure routing: a request, a snapshot and live signals in, a plan out.

Order of decisions (docs/design.md §3 step 2):

1. the model must exist and the tenant may use it;
2. the version is chosen by the weighted split, sticky per affinity key: the
   key hashes to a point u in [0, 1) and the version whose cumulative-weight
   interval holds u serves it, so a conversation stays on one version while
   the split is unchanged, and growing a version's weight only moves keys to
   it. The split only chooses among versions that can serve *this* request
   here (steps 3 and 4 leave a backend): a key whose version cannot is
   placed among the servable ones by where u falls within its version's
   interval, weighted by their weights, so it too is sticky while the set of
   servable versions is unchanged, and keys of servable versions never move;
3. backends outside the residency constraint are dropped — if no version has
   one left the error (403) names the constraint and the model;
4. regions without a verified replica of the version, drained regions
   (dial 0), and backends the failover layer reports unavailable (open
   breaker, ejected, failing health checks) are dropped — if no version has
   one left the error is 503 with Retry-After;
5. the rest are scored (``routing.score``) and ordered by power of two
   choices; when the winner is a self-hosted server in a pool, prefix
   affinity (``routing.affinity``) picks the pool member that likely holds the
   prompt's KV cache, within the bounded load.

Randomness and time are passed in.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Callable, Mapping
from typing import NamedTuple

from regions.inventory import BackendSpec
from regions.request import GenerationRequest, Kind
from routing.affinity import pick_bounded, prefix_key
from routing.capabilities import MissingCapability, explain, field_of, missing, too_long
from routing.plan import (
    Candidate,
    NoBackendAvailable,
    Plan,
    ResidencyViolation,
    RoutingError,
    UnknownModel,
)
from routing.score import Scored, rank
from routing.signals import BackendSignal, NoSignals, Signals
from routing.snapshot import SELF_HOSTED, ModelRoute, RoutingSnapshot

DEFAULT_EXPECTED_TOKENS = 128
AFFINITY_LOAD_FACTOR = 1.25


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


def version_interval(split: Mapping[str, int], version: str) -> tuple[float, float]:
    """The part of [0, 1) whose points :func:`pick_version` gives ``version``."""
    total = sum(w for w in split.values() if w > 0)
    weighted = [v for v in sorted(split) if split[v] > 0]
    edge = 0.0
    for v in weighted:
        low, edge = edge, edge + split[v] / total
        if v == version:
            return low, 1.0 if v == weighted[-1] else edge
    raise KeyError(version)


def pick_servable(
    split: Mapping[str, int], point: float, servable: Callable[[str], bool]
) -> str | None:
    """The version for ``point`` among those ``servable`` says can serve; None if none.

    The sticky choice when it can serve; otherwise ``point`` is rescaled within
    its version's interval and placed over the servable versions' weights, so
    the keys of an unservable version spread over the others by weight, each
    key to the same one every time.
    """
    sticky = pick_version(split, point)
    if servable(sticky):
        return sticky
    rest = {v: w for v, w in split.items() if v != sticky and w > 0 and servable(v)}
    if not rest:
        return None
    low, high = version_interval(split, sticky)
    inner = (point - low) / (high - low) if high > low else 0.0
    return pick_version(rest, min(max(inner, 0.0), 1.0))


def prompt_chars(request: GenerationRequest) -> int:
    if request.kind is Kind.CHAT:
        return sum([len(m.content) for m in request.messages])
    return len(request.prompt)


def prompt_text(request: GenerationRequest) -> str:
    if request.kind is Kind.CHAT:
        return "\n".join(f"{m.role}: {m.content}" for m in request.messages)
    return request.prompt


class Router:
    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng or random.Random()

    def plan(
        self,
        snapshot: RoutingSnapshot,
        request: GenerationRequest,
        allowed_models: frozenset[str] | None = None,
        *,
        signals: Signals | None = None,
        now: float = 0.0,
        cost_weight: float | None = None,
        version: str | None = None,
    ) -> Plan:
        """``version`` overrides the split (a shadow copy goes to its candidate)."""
        route = snapshot.models.get(request.model)
        if route is None or (allowed_models is not None and request.model not in allowed_models):
            raise UnknownModel(f"The model `{request.model}` does not exist.")
        live = signals or NoSignals()
        seen: dict[str, _Filtered] = {}
        if version is None and route.sole is not None:
            version = route.sole  # what pick_servable picks for any point, servable or not
            chosen = seen[version] = _filter(snapshot, route, version, request, live, now)
        else:

            def filtered(v: str) -> _Filtered:
                found = seen.get(v)
                if found is None:
                    found = seen[v] = _filter(snapshot, route, v, request, live, now)
                return found

            if version is None:
                point = affinity_point(request.affinity_key, route.name)
                picked = pick_servable(route.split, point, lambda v: bool(filtered(v).eligible))
                if picked is None:
                    raise _refusal(request, pick_version(route.split, point), seen)
                version = picked
            elif version not in route.backends:
                raise NoBackendAvailable(f"model `{request.model}` has no version {version}")
            chosen = filtered(version)
        if not chosen.eligible:
            raise _refusal(request, version, seen)
        eligible = chosen.eligible
        excluded = list(chosen.excluded)
        if len(seen) > 1:
            for other, skipped in seen.items():
                if other != version:
                    excluded += [
                        (n, f"version {other} cannot serve: {why}") for n, why in skipped.excluded
                    ]
        ordered = rank(
            eligible,
            prompt_tokens=max(1, prompt_chars(request) // 4),
            expected_tokens=request.sampling.max_tokens or DEFAULT_EXPECTED_TOKENS,
            cost_weight=route.cost_weight if cost_weight is None else cost_weight,
            rng=self._rng,
        )
        winner = ordered[0]
        affine = self._prefix_affinity(route, version, ordered, request, live, now)
        if affine is not None:
            ordered = [affine, *(s for s in ordered if s is not affine)]
        candidates = tuple(
            [
                Candidate(
                    s.backend,
                    "p2c pick"
                    if s is winner
                    else "prefix affinity in pool"
                    if s is affine
                    else "failover",
                    s.score,
                    s.latency,
                    s.price,
                    s.cold,
                )
                for s in ordered
            ]
        )
        return Plan(request.model, version, candidates, tuple(excluded))

    def _prefix_affinity(
        self,
        route: ModelRoute,
        version: str,
        ordered: list[Scored],
        request: GenerationRequest,
        signals: Signals,
        now: float,
    ) -> Scored | None:
        """Within the winner's self-hosted pool, the KV-affine member when it is not the
        winner (the plan puts it first), else None."""
        winner = ordered[0].backend
        if len(ordered) < 2 or winner.kind not in SELF_HOSTED:
            return None  # a pool of one is the winner alone
        ring = route.rings.get((version, winner.region.name))
        if ring is None:
            return None
        pool = {s.backend.name: s for s in ordered if _same_pool(s.backend, winner)}
        if len(pool) < 2:
            return None
        chosen = pick_bounded(
            ring,
            prefix_key(prompt_text(request), route.name),
            list(pool),
            lambda name: signals.signal(name, now).in_flight,
            AFFINITY_LOAD_FACTOR,
        )
        if chosen is None or chosen == winner.name:
            return None
        return pool[chosen]


class _Filtered(NamedTuple):
    """One version's backends for one request: those that may serve, and the rest."""

    eligible: list[tuple[BackendSpec, float, BackendSignal]]
    excluded: list[tuple[str, str]]
    in_residency: bool
    lacking: str | None = None  # a capability every backend in the residency lacks


def _filter(
    snapshot: RoutingSnapshot,
    route: ModelRoute,
    version: str,
    request: GenerationRequest,
    signals: Signals,
    now: float,
) -> _Filtered:
    """Residency, dials and readiness (memoised per snapshot), then live signals."""
    static, static_excluded, in_residency = snapshot.static_filter(
        route, version, request.residency
    )
    excluded = list(static_excluded)
    eligible = []
    lacking: str | None = None
    capable = False  # a capable backend exists: any refusal is about availability
    needs = request.needs
    for backend, weight in static:
        # missing() asks nothing of a request with no needs, too_long() nothing of a
        # backend with no declared window: the common case makes neither call.
        absent = missing(backend, needs) if needs else None
        if absent is None and backend.context_length is not None:
            absent = too_long(backend, request)
        if absent is not None:
            excluded.append((backend.name, f"lacks {absent}: {explain(absent, request.needs)}"))
            lacking = lacking or absent
            continue
        capable = True
        signal = signals.signal(backend.name, now)
        if signal.available:
            eligible.append((backend, weight, signal))
        else:
            excluded.append((backend.name, signal.why_unavailable or "unavailable"))
    return _Filtered(eligible, excluded, in_residency, None if capable else lacking)


def _refusal(
    request: GenerationRequest, sticky: str, seen: Mapping[str, _Filtered]
) -> RoutingError:
    """Why no version can serve: 403 when none has a region inside the residency,
    else 503 for a version that has one (the sticky one when it does)."""
    allowed = [v for v, f in seen.items() if f.in_residency]
    if not allowed:
        return ResidencyViolation(
            f"no region allowed by residency constraint "
            f"[{request.residency.describe()}] serves model `{request.model}` "
            f"(version {sticky})"
        )
    lacking = [f.lacking for v, f in seen.items() if v in allowed]
    first = lacking[0] if lacking else None
    if first is not None and all(lacking):
        return MissingCapability(request.model, first, field_of(first, request.needs))
    version = sticky if sticky in allowed else allowed[0]
    return NoBackendAvailable(
        f"every backend allowed by [{request.residency.describe()}] for "
        f"`{request.model}` (version {version}) is unavailable: "
        + ", ".join(f"{n} {why}" for n, why in seen[version].excluded),
        retry_after=5.0,
    )


def _same_pool(a: BackendSpec, b: BackendSpec) -> bool:
    return a.region.name == b.region.name and a.kind in SELF_HOSTED and b.kind in SELF_HOSTED
