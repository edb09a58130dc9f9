"""The version split chooses only among versions that can serve this request here.

With v1=90/v2=10 and v2's only EU replica unverified, an EU session whose key
falls in v2's tenth is served by v1, not refused; keys of servable versions
never move, and the keys that fall back are sticky too. Unit tests on the
router, then one through a real gateway where replication status (the admin
API's replica rows) gates v2 in the EU.
"""

from __future__ import annotations

import random
from collections import Counter

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions.inventory import BackendSpec, ProviderKind, Region
from regions.request import GenerationRequest, Kind, Residency
from routing.plan import NoBackendAvailable, ResidencyViolation
from routing.router import Router, affinity_point, pick_servable, pick_version
from routing.signals import BackendSignal
from routing.snapshot import RoutingSnapshot
from tests.conftest import (
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)
from tests.gateway.control_kit import admin

US = Region("aws:us-east-1", frozenset({"US"}))
FRA = Region("onprem:fra1", frozenset({"EU", "DE"}))
EU = Residency(frozenset({"EU"}))
SPLIT = {"v1": 90, "v2": 10}
KEYS = [f"session-{i}" for i in range(600)]


def backend(name: str, region: Region, version: str) -> BackendSpec:
    return BackendSpec(name, "m", version, region, ProviderKind.VLLM, "http://x", "s")


BACKENDS = (
    backend("fra-v1", FRA, "v1"),
    backend("us-v2", US, "v2"),
    backend("fra-v2", FRA, "v2"),
)


def snap(unready: frozenset[tuple[str, str, str]] = frozenset()) -> RoutingSnapshot:
    return RoutingSnapshot.build(1, {"m": SPLIT}, BACKENDS, unready=unready)


def req(key: str, residency: Residency = EU) -> GenerationRequest:
    return GenerationRequest(Kind.CHAT, "m", "id", residency=residency, affinity_key=key)


def on_v2(key: str) -> bool:
    return pick_version(SPLIT, affinity_point(key, "m")) == "v2"


class Down:
    """Live signals with some backends unavailable (an open breaker)."""

    def __init__(self, *names: str) -> None:
        self.names = names

    def signal(self, name: str, now: float) -> BackendSignal:
        if name in self.names:
            return BackendSignal(available=False, why_unavailable="breaker open")
        return BackendSignal()


UNVERIFIED = frozenset({("m", "v2", "onprem:fra1")})


def test_eu_keys_of_v2_are_served_by_v1_while_v2_has_no_verified_eu_replica() -> None:
    router = Router(random.Random(1))
    assert sum(on_v2(k) for k in KEYS) > 30  # the tenth that used to get a 503
    plans = {k: router.plan(snap(UNVERIFIED), req(k)) for k in KEYS}
    assert {p.version for p in plans.values()} == {"v1"}
    assert all(b.name == "fra-v1" for p in plans.values() for b in p.backends)
    # route explain says why v2 was passed over
    skipped = dict(plans[next(k for k in KEYS if on_v2(k))].excluded)
    assert skipped["fra-v2"] == "version v2 cannot serve: replica not verified"
    assert skipped["us-v2"] == "version v2 cannot serve: outside residency"
    # the unrestricted tenant still gets v2 in the US: the split applies to what can serve
    assert {router.plan(snap(UNVERIFIED), req(k, Residency())).version for k in KEYS} == {
        "v1",
        "v2",
    }


def test_once_v2_is_verified_its_keys_return_and_the_others_never_moved() -> None:
    router = Router(random.Random(2))
    before = {k: router.plan(snap(UNVERIFIED), req(k)).version for k in KEYS}
    after = {k: router.plan(snap(), req(k)).version for k in KEYS}
    assert {k for k, v in after.items() if v == "v2"} == {k for k in KEYS if on_v2(k)}
    assert all(before[k] == "v1" for k in KEYS)


def test_an_unavailable_version_falls_back_by_live_health_too() -> None:
    router = Router(random.Random(3))
    plans = [router.plan(snap(), req(k), signals=Down("fra-v2")) for k in KEYS]
    assert {p.version for p in plans} == {"v1"}
    # and the other way round: v1's keys go to v2 while v1 is down, sticky per key
    down = Down("fra-v1")
    first = {k: router.plan(snap(), req(k), signals=down).version for k in KEYS}
    assert set(first.values()) == {"v2"}
    assert first == {k: router.plan(snap(), req(k), signals=down).version for k in KEYS}


def test_nothing_servable_keeps_the_error_classes() -> None:
    router = Router()
    with pytest.raises(NoBackendAvailable) as info:
        router.plan(snap(UNVERIFIED), req("k"), signals=Down("fra-v1"))
    assert info.value.status == 503 and info.value.retry_after
    with pytest.raises(ResidencyViolation):
        router.plan(snap(), req("k", Residency(frozenset({"JP"}))))
    # a forced version (a shadow copy) never falls back to another
    with pytest.raises(NoBackendAvailable):
        router.plan(snap(UNVERIFIED), req("k"), version="v2")


def test_a_zero_weight_version_is_never_a_fallback() -> None:
    split = {"v1": 100, "v2": 0}
    assert pick_servable(split, 0.5, lambda v: v == "v2") is None


@given(
    weights=st.lists(st.integers(0, 100), min_size=1, max_size=4),
    servable=st.sets(st.integers(0, 3)),
    point=st.floats(0.0, 1.0, exclude_max=True),
)
def test_pick_servable_keeps_keys_and_picks_only_servable_weighted_versions(
    weights: list[int], servable: set[int], point: float
) -> None:
    split = {f"v{i}": w for i, w in enumerate(weights)}
    if sum(weights) == 0:
        return
    can = {f"v{i}" for i in servable}
    sticky = pick_version(split, point)
    picked = pick_servable(split, point, can.__contains__)
    if sticky in can:
        assert picked == sticky  # a servable version's keys never move
    elif any(split[v] > 0 for v in can if v in split):
        assert picked in can and split[picked] > 0
    else:
        assert picked is None


def test_fallback_keys_spread_over_servable_versions_by_weight() -> None:
    split = {"v1": 50, "v2": 25, "v3": 25}
    points = [i / 4000 for i in range(4000)]
    landed = Counter(pick_servable(split, p, lambda v: v != "v1") for p in points)
    assert abs(landed["v2"] - landed["v3"]) < 40  # v1's half split evenly, the rest stay


async def test_eu_sessions_get_v1_through_the_gateway_while_v2_is_unverified_in_the_eu(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    fra1, us2, fra2 = await emulators(), await emulators(), await emulators()
    rows = [
        ("fra-v1", "onprem:fra1", "v1", fra1.url),
        ("us-v2", "aws:us-east-1", "v2", us2.url),
        ("fra-v2", "onprem:fra1", "v2", fra2.url),
    ]
    gw = await gateways(gateway_config(rows, versions=SPLIT))
    replica = f"/admin/v1/replicas/{MODEL}/v2/onprem:fra1"
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    async def versions(s: aiohttp.ClientSession, key: str, n: int) -> dict[str, tuple[int, str]]:
        seen = {}
        for i in range(n):
            headers = {"Authorization": f"Bearer {key}", "x-meridian-session": f"sess-{i}"}
            url = gw.http_url + "/v1/chat/completions"
            async with s.post(url, json=body, headers=headers) as r:
                await r.read()
                seen[f"sess-{i}"] = (r.status, r.headers.get("x-meridian-version", ""))
        return seen

    sessions = [f"sess-{i}" for i in range(60)]
    to_v2 = {s for s in sessions if pick_version(SPLIT, affinity_point(s, MODEL)) == "v2"}
    assert to_v2  # the split does send some of these sessions to v2
    async with aiohttp.ClientSession() as s:
        status, _ = await admin(s, gw, "PUT", replica, {"status": "copying", "detail": "1/2"})
        assert status == 200
        eu = await versions(s, EU_KEY, 60)
        assert set(eu.values()) == {(200, "v1")}  # no 503 while v1 serves in the EU
        assert fra2.stats.requests == 0
        # the unrestricted key's v2 sessions are served by v2 in the US
        anywhere = await versions(s, GLOBAL_KEY, 60)
        assert {k for k, v in anywhere.items() if v == (200, "v2")} == to_v2
        assert us2.stats.requests == len(to_v2)
        # verified again: exactly the v2 sessions move back to v2, in the EU
        status, _ = await admin(s, gw, "PUT", replica, {"status": "verified"})
        assert status == 200
        eu = await versions(s, EU_KEY, 60)
        assert {k for k, v in eu.items() if v == (200, "v2")} == to_v2
        assert {v for v in eu.values()} == {(200, "v1"), (200, "v2")}
    assert fra2.stats.requests == len(to_v2)
