"""The refresher and the network policy, with scripted sources: no cloud, no network."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from types import MappingProxyType

import pytest

from regions.discovery import (
    Catalog,
    DiscoveryError,
    Found,
    Inventory,
    Listing,
    NetworkPolicy,
    Refresher,
    Refused,
)
from regions.inventory import BackendSpec, ProviderKind, Region

US = Region("gcp:us-central1", frozenset({"US"}))
CATALOG = Catalog(
    MappingProxyType({US.name: US}),
    MappingProxyType({"m": frozenset({"v1", "v2"})}),
    frozenset({"static-1"}),
)


def found(
    name: str, ip: str | None = "10.0.0.5", *, model: str = "m", version: str = "v1"
) -> Found:
    url = f"http://{ip}:8000" if ip else "https://runtime.sagemaker.us-east-1.amazonaws.com"
    spec = BackendSpec(name, model, version, US, ProviderKind.VLLM, url, "served")
    return Found(spec, address=ip)


class Scripted:
    """A source whose next answer the test sets; ``error`` makes it fail."""

    def __init__(self, name: str, items: Iterable[Found] = ()) -> None:
        self.name = name
        self.listing = Listing(tuple(items))
        self.error: Exception | None = None
        self.calls = 0

    async def discover(self) -> Listing:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return self.listing

    async def close(self) -> None:
        pass


class Sink:
    def __init__(self) -> None:
        self.applied: list[Inventory] = []

    async def __call__(self, inventory: Inventory) -> None:
        self.applied.append(inventory)

    @property
    def names(self) -> list[str]:
        return [f.spec.name for f in self.applied[-1].found]


def refresher(
    *sources: Scripted, networks: Iterable[str] = ("10.0.0.0/8",)
) -> tuple[Refresher, Sink]:
    sink = Sink()
    return Refresher(sources, CATALOG, NetworkPolicy.parse(networks), sink), sink


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("10.1.2.3", None),
        ("169.254.169.254", "link-local"),
        ("169.254.1.1", "link-local"),
        ("fd00:ec2::254", "link-local"),
        ("192.168.1.10", "outside the allowed networks"),
        ("127.0.0.1", "outside the allowed networks"),
        ("0.0.0.0", "not a unicast"),
        ("224.0.0.1", "not a unicast"),
        ("metadata.google.internal", "not an IP address"),
        ("10.0.0.1.nip.io", "not an IP address"),
    ],
)
def test_network_policy(address: str, why: str | None) -> None:
    refusal = NetworkPolicy.parse(["10.0.0.0/8", "fd00::/8"]).refusal(address)
    assert (refusal is None) if why is None else (why in (refusal or ""))


def test_network_policy_refuses_metadata_even_when_a_network_contains_it() -> None:
    policy = NetworkPolicy.parse(["0.0.0.0/0", "::/0"])
    assert policy.refusal("169.254.169.254") is not None
    assert policy.refusal("fd00:ec2::254") is not None
    assert policy.refusal("8.8.8.8") is None
    assert NetworkPolicy().refusal("10.0.0.1") is not None  # nothing configured: nothing allowed
    assert (
        NetworkPolicy.parse(["127.0.0.0/8"]).refusal("127.0.0.1") is None
    )  # loopback only when listed
    assert NetworkPolicy.parse(["127.0.0.0/8"]).refusal("::ffff:127.0.0.1") is None  # as IPv4
    assert NetworkPolicy.parse(["10.0.0.0/8"]).refusal("10.0.0.1", 0) == "port 0 is out of range"


@pytest.mark.parametrize(
    ("address", "why"),
    [
        # IPv4-mapped: judged as the IPv4 address the connection goes to
        ("::ffff:169.254.169.254", "link-local"),
        ("[::ffff:a9fe:a9fe]", "link-local"),
        ("::ffff:127.0.0.1", "outside the allowed networks"),
        ("::ffff:0.0.0.0", "not a unicast"),
        ("::ffff:10.1.2.3", None),
        # 6to4, Teredo, NAT64: the IPv4 address they carry must pass too
        ("2002:a9fe:a9fe::1", "carries IPv4 169.254.169.254"),
        ("2002:7f00:1::1", "carries IPv4 127.0.0.1"),
        ("2002:0a01:0203::1", None),
        ("2001:0:a00:1:8000:63bf:5601:fefe", "carries IPv4 169.254.1.1"),
        ("64:ff9b::169.254.169.254", "carries IPv4 169.254.169.254"),
        ("64:ff9b::10.1.2.3", None),
        # a zone names an interface of the gateway's own host
        ("fd00::1%eth0", "zone"),
        ("[fd00::1%25eth0]", "zone"),
        ("fd00::1", None),
    ],
)
def test_ipv4_in_ipv6_form_and_zones_get_no_further(address: str, why: str | None) -> None:
    # ::/0 admits every IPv6 address, ::ffff:0:0/96 and 2002::/16 included
    policy = NetworkPolicy.parse(["10.0.0.0/8", "::/0"])
    refusal = policy.refusal(address)
    assert (refusal is None) if why is None else (why in (refusal or "")), refusal


async def test_refused_addresses_and_unknown_models_never_reach_apply(
    caplog: pytest.LogCaptureFixture,
) -> None:
    source = Scripted(
        "s",
        [
            found("ok"),
            found("imds", "169.254.169.254"),
            found("outside", "192.168.0.7"),
            found("derived", None),  # a URL built from configuration: no address to vet
            found("static-1"),
            found("nomodel", model="other"),
            found("noversion", version="v9"),
        ],
    )
    r, sink = refresher(source)
    with caplog.at_level(logging.INFO, logger="meridian.discovery"):
        inventory = await r.refresh()
    assert sink.names == ["derived", "ok"]
    reasons = {x.name: x.reason for x in inventory.refused}
    assert "link-local" in reasons["imds"]
    assert "outside the allowed networks" in reasons["outside"]
    assert "configured backend" in reasons["static-1"]
    assert "not configured" in reasons["nomodel"]
    assert "no version 'v9'" in reasons["noversion"]
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any("imds" in w and "169.254.169.254" in w for w in warnings)
    # Logged once when they appear, not every round.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="meridian.discovery"):
        await r.refresh()
    assert not [rec for rec in caplog.records if "not routing" in rec.getMessage()]


async def test_a_failing_source_keeps_its_last_good_listing() -> None:
    a, b = Scripted("a", [found("a1")]), Scripted("b", [found("b1", "10.0.0.6")])
    r, sink = refresher(a, b)
    await r.refresh()
    assert sink.names == ["a1", "b1"]
    a.error = DiscoveryError("ListEndpoints: throttled")
    b.listing = Listing((found("b2", "10.0.0.7"),))
    inventory = await r.refresh()
    assert sink.names == ["a1", "b2"]  # a's part frozen, b's part moves on
    assert inventory.stale == ("a",)
    assert r.status()["errors"] == {"a": "ListEndpoints: throttled"}
    a.error = RuntimeError("a bug in a source")  # unexpected errors are contained too
    await r.refresh()
    assert sink.names == ["a1", "b2"]
    a.error = None
    a.listing = Listing()
    await r.refresh()
    assert sink.names == ["b2"]
    assert r.status()["errors"] == {}


async def test_a_source_that_never_answered_contributes_nothing() -> None:
    a = Scripted("a")
    a.error = DiscoveryError("no credentials")
    r, sink = refresher(a, Scripted("b", [found("b1")]))
    await r.refresh()
    assert sink.names == ["b1"]


async def test_first_source_wins_a_name_and_source_refusals_pass_through() -> None:
    a = Scripted("a", [found("x", "10.0.0.1")])
    b = Scripted("b", [found("x", "10.0.0.2")])
    b.listing = Listing(b.listing.found, (Refused("sagemaker/us-east-1/e", "status Updating"),))
    r, sink = refresher(a, b)
    inventory = await r.refresh()
    assert [f.spec.url for f in sink.applied[-1].found] == ["http://10.0.0.1:8000"]
    assert {x.name for x in inventory.refused} == {"x", "sagemaker/us-east-1/e"}


async def test_apply_failure_is_contained_and_retried_next_round() -> None:
    calls: list[int] = []

    async def apply(inventory: Inventory) -> None:
        calls.append(len(inventory.found))
        if len(calls) == 1:
            raise RuntimeError("provider factory exploded")

    r = Refresher(
        [Scripted("a", [found("a1")])], CATALOG, NetworkPolicy.parse(["10.0.0.0/8"]), apply
    )
    await r.refresh()
    await r.refresh()
    assert calls == [1, 1]  # apply sees every round, so it can retry what failed


async def test_periodic_loop_runs_and_stops() -> None:
    from tests.conftest import wait_for

    source = Scripted("a", [found("a1")])
    r, sink = refresher(source)
    r.interval_s = 0.01
    r.start()
    await wait_for(lambda: source.calls >= 3)
    await r.stop()
    calls = source.calls
    assert sink.names == ["a1"]
    assert r._task is None and source.calls == calls
