"""Narrowing a residency policy to a sub-jurisdiction: the regions the policy
admits that also carry an asked tag, never one outside the policy.

Unit tests on :class:`Residency` and the router, then one through a real
gateway with the EU key and ``x-meridian-residency: DE``.
"""

from __future__ import annotations

import random

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions.inventory import BackendSpec, ProviderKind, Region
from regions.request import GenerationRequest, Kind, Residency
from routing.plan import ResidencyViolation
from routing.router import Router
from routing.snapshot import MEMO_ENTRIES, RoutingSnapshot
from tests.conftest import (
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)

US = frozenset({"US"})
IE = frozenset({"EU", "IE"})
FRA = frozenset({"EU", "DE"})
EU = Residency(frozenset({"EU"}))


def test_a_sub_jurisdiction_narrows_an_eu_policy_to_its_regions() -> None:
    de = EU.narrow(frozenset({"DE"}))
    assert de.admits(FRA)
    assert not de.admits(IE) and not de.admits(US)
    assert not de.admits(frozenset({"DE"}))  # a DE tag alone is not inside the EU policy
    assert not de.empty and de.allowed  # the edge's "nothing left" check lets it through
    assert de.describe() == "EU & DE"


def test_narrowing_never_widens() -> None:
    # asking for a jurisdiction outside the policy admits nothing the policy refuses
    us = EU.narrow(US)
    assert not us.admits(US) and not us.admits(IE) and not us.admits(FRA)
    # asking for the policy and more is the policy
    assert EU.narrow(frozenset({"EU", "US"})) == EU
    assert EU.narrow(frozenset({"EU", "US"})).describe() == "EU"
    # either of two sub-jurisdictions
    de_or_ie = EU.narrow(frozenset({"DE", "IE"}))
    assert de_or_ie.admits(FRA) and de_or_ie.admits(IE) and not de_or_ie.admits(US)
    assert de_or_ie.describe() == "EU & (DE,IE)"
    # an unrestricted policy narrowed is the asked tags, exactly as before
    assert Residency().narrow(US) == Residency(US)
    assert Residency().narrow(US).allowed == US
    # asking for nothing admits nothing
    assert EU.narrow(frozenset()).empty and not EU.narrow(frozenset()).allowed
    assert EU.narrow(frozenset()).describe() == "none"


def test_known_regions_tell_the_edge_a_narrowing_leaves_nothing() -> None:
    policy = Residency(frozenset({"EU"}), known=frozenset({US, IE, FRA}))
    assert policy.narrow(frozenset({"DE"})).allowed == frozenset({"DE"})
    assert policy.narrow(frozenset({"DE", "US"})).allowed  # DE is reachable: served in fra1
    assert policy.narrow(US).allowed == frozenset()  # no configured region is EU and US
    assert policy.narrow(frozenset({"JP"})).allowed == frozenset()
    assert policy.narrow(US) == EU.narrow(US)  # context, not constraint


def test_a_narrowing_of_a_narrowing_keeps_both() -> None:
    de = EU.narrow(frozenset({"DE", "IE"})).narrow(frozenset({"DE"}))
    assert de == EU.narrow(frozenset({"DE"}))  # the wider clause is implied by the narrower
    assert de.admits(FRA) and not de.admits(IE)


TAGS = st.frozensets(st.sampled_from(["EU", "US", "DE", "IE", "JP"]), max_size=3)


@given(policy=st.none() | TAGS, narrowings=st.lists(TAGS, max_size=3), region=TAGS)
def test_narrowing_is_the_conjunction_of_policy_and_asked_tags(
    policy: frozenset[str] | None, narrowings: list[frozenset[str]], region: frozenset[str]
) -> None:
    residency = Residency(policy)
    expected = residency.admits(region)
    for asked in narrowings:
        residency = residency.narrow(asked)
        expected = expected and not asked.isdisjoint(region)
        assert not residency.admits(region) or Residency(policy).admits(region)  # never widens
    assert residency.admits(region) == expected


def backend(name: str, region: str, tags: frozenset[str]) -> BackendSpec:
    return BackendSpec(name, "m", "v1", Region(region, tags), ProviderKind.VLLM, "http://x", "s")


SNAP = RoutingSnapshot.build(
    1,
    {"m": {"v1": 100}},
    (
        backend("us", "aws:us-east-1", US),
        backend("ie", "aws:eu-west-1", IE),
        backend("fra", "onprem:fra1", FRA),
    ),
)


def request(residency: Residency) -> GenerationRequest:
    return GenerationRequest(Kind.CHAT, "m", "id", residency=residency, affinity_key="k")


def test_router_serves_an_eu_policy_narrowed_to_de_from_fra1_only() -> None:
    plan = Router(random.Random(1)).plan(SNAP, request(EU.narrow(frozenset({"DE"}))))
    assert [b.name for b in plan.backends] == ["fra"]
    assert dict(plan.excluded) == {"us": "outside residency", "ie": "outside residency"}


def test_router_refuses_a_narrowing_outside_the_policy_with_403() -> None:
    with pytest.raises(ResidencyViolation) as info:
        Router().plan(SNAP, request(EU.narrow(US)))
    assert info.value.status == 403 and "[EU & US]" in info.value.message


def test_the_static_filter_memo_stays_bounded_whatever_clients_narrow_to() -> None:
    snapshot = RoutingSnapshot.build(1, {"m": {"v1": 100}}, SNAP.models["m"].backends["v1"])
    router = Router(random.Random(4))
    for i in range(MEMO_ENTRIES + 500):  # a header with a new tag every time
        plan = router.plan(snapshot, request(EU.narrow(frozenset({"DE", f"X{i}"}))))
        assert [b.name for b in plan.backends] == ["fra"]
    assert len(snapshot._static) <= MEMO_ENTRIES


async def test_eu_key_narrowed_to_de_is_served_in_fra1_through_the_gateway(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    us, ie, fra = await emulators(), await emulators(), await emulators()
    gw = await gateways(
        gateway_config(
            [
                ("us", "aws:us-east-1", "v1", us.url),
                ("ie", "aws:eu-west-1", "v1", ie.url),
                ("fra", "onprem:fra1", "v1", fra.url),
            ]
        )
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}

    async def ask(s: aiohttp.ClientSession, key: str, residency: str) -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {key}", "x-meridian-residency": residency}
        async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r:
            await r.read()
            return r.status, r.headers.get("x-meridian-region", "")

    async with aiohttp.ClientSession() as s:
        served = {await ask(s, EU_KEY, "DE") for _ in range(8)}
        assert served == {(200, "onprem:fra1")}
        # either sub-jurisdiction of the policy
        both = {await ask(s, EU_KEY, "DE,IE") for _ in range(4)}
        assert both <= {(200, "onprem:fra1"), (200, "aws:eu-west-1")}
        # a jurisdiction outside the policy is refused, never served in the US
        status, region = await ask(s, EU_KEY, "US")
        assert (status, region) == (403, "")
        # an unrestricted key narrowed to DE still gets DE
        assert await ask(s, GLOBAL_KEY, "DE") == (200, "onprem:fra1")
    assert us.stats.requests == 0
    assert fra.stats.requests >= 9
