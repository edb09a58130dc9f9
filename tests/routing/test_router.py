from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions.inventory import BackendSpec, ProviderKind, Region
from regions.request import GenerationRequest, Kind, Residency
from routing.plan import NoBackendAvailable, ResidencyViolation, UnknownModel
from routing.router import Router, affinity_point, pick_version
from routing.snapshot import RoutingSnapshot

REGIONS = {
    "aws:us-east-1": Region("aws:us-east-1", frozenset({"US"})),
    "aws:eu-west-1": Region("aws:eu-west-1", frozenset({"EU", "IE"})),
    "onprem:fra1": Region("onprem:fra1", frozenset({"EU", "DE"})),
}


def backend(name: str, region: str, version: str = "v1", weight: float = 1.0) -> BackendSpec:
    return BackendSpec(
        name, "m", version, REGIONS[region], ProviderKind.VLLM, "http://x", "s", weight=weight
    )


BACKENDS = (
    backend("us", "aws:us-east-1"),
    backend("ie", "aws:eu-west-1"),
    backend("fra", "onprem:fra1"),
    backend("us2", "aws:us-east-1", "v2"),
)


def snap(
    split: dict[str, int] | None = None, dials: dict[str, int] | None = None
) -> RoutingSnapshot:
    return RoutingSnapshot.build(1, {"m": split or {"v1": 100, "v2": 0}}, BACKENDS, dials)


def req(residency: Residency = Residency(), key: str = "k", model: str = "m") -> GenerationRequest:
    return GenerationRequest(Kind.CHAT, model, "id", residency=residency, affinity_key=key)


EU = Residency(frozenset({"EU"}))


def test_eu_request_only_gets_eu_backends() -> None:
    plan = Router(random.Random(1)).plan(snap(), req(EU))
    assert {b.name for b in plan.backends} == {"ie", "fra"}
    assert ("us", "outside residency") in plan.excluded


@given(
    tags=st.frozensets(st.sampled_from(["EU", "US", "DE", "IE", "JP"]), max_size=3),
    dials=st.dictionaries(st.sampled_from(sorted(REGIONS)), st.integers(0, 100)),
    seed=st.integers(0, 2**32),
    key=st.text(max_size=8),
)
def test_no_plan_ever_leaves_the_residency_constraint(
    tags: frozenset[str], dials: dict[str, int], seed: int, key: str
) -> None:
    residency = Residency(tags)
    try:
        plan = Router(random.Random(seed)).plan(snap(dials=dials), req(residency, key))
    except (ResidencyViolation, NoBackendAvailable):
        return
    assert plan.candidates
    assert all(residency.admits(b.region.tags) for b in plan.backends)


def test_no_allowed_region_is_403_naming_constraint_and_model() -> None:
    with pytest.raises(ResidencyViolation) as info:
        Router().plan(snap(), req(Residency(frozenset({"JP"}))))
    assert info.value.status == 403
    assert "[JP]" in info.value.message and "`m`" in info.value.message


def test_allowed_but_drained_is_503_with_retry_after() -> None:
    dials = {"aws:eu-west-1": 0, "onprem:fra1": 0}
    with pytest.raises(NoBackendAvailable) as info:
        Router().plan(snap(dials=dials), req(EU))
    assert info.value.status == 503 and info.value.retry_after


def test_narrowing_can_only_shrink() -> None:
    assert EU.narrow(frozenset({"EU", "US"})).allowed == frozenset({"EU"})
    assert Residency().narrow(frozenset({"US"})).allowed == frozenset({"US"})
    assert not any(EU.narrow(frozenset({"US"})).admits(r.tags) for r in REGIONS.values())
    assert not Residency(frozenset()).admits(frozenset({"EU"}))


def test_unknown_or_forbidden_model_is_404() -> None:
    with pytest.raises(UnknownModel):
        Router().plan(snap(), req(model="nope"))
    with pytest.raises(UnknownModel):
        Router().plan(snap(), req(), allowed_models=frozenset({"other"}))


def test_version_choice_is_sticky_per_key_and_follows_weights() -> None:
    s = snap({"v1": 90, "v2": 10})
    router = Router(random.Random(3))
    for key in ("alice", "bob", "carol"):
        versions = {router.plan(s, req(key=key)).version for _ in range(20)}
        assert len(versions) == 1
    counts = Counter(router.plan(s, req(key=str(i))).version for i in range(4000))
    assert 0.07 < counts["v2"] / 4000 < 0.13


def test_growing_a_canary_only_moves_keys_towards_it() -> None:
    keys = [str(i) for i in range(2000)]
    before = {k for k in keys if pick_version({"v1": 95, "v2": 5}, affinity_point(k, "m")) == "v2"}
    after = {k for k in keys if pick_version({"v1": 75, "v2": 25}, affinity_point(k, "m")) == "v2"}
    assert before <= after


def test_dials_shift_first_choice_and_zero_drains() -> None:
    router = Router(random.Random(7))
    s = snap(dials={"aws:eu-west-1": 100, "onprem:fra1": 25})
    firsts = Counter(router.plan(s, req(EU)).backends[0].name for _ in range(4000))
    assert 0.15 < firsts["fra"] / 4000 < 0.25
    drained = snap(dials={"onprem:fra1": 0})
    plan = router.plan(drained, req(EU))
    assert [b.name for b in plan.backends] == ["ie"]
    assert ("fra", "region drained") in plan.excluded


# -- live signals: availability, readiness, latency and cost -------------------

from regions.inventory import Price  # noqa: E402
from routing.signals import BackendSignal  # noqa: E402


class Live:
    def __init__(self, **signals: BackendSignal) -> None:
        self.signals = signals

    def signal(self, backend: str, now: float) -> BackendSignal:
        return self.signals.get(backend, BackendSignal())


@given(
    unready=st.sets(st.sampled_from(sorted(REGIONS))),
    down=st.sets(st.sampled_from(["us", "ie", "fra"])),
    dials=st.dictionaries(st.sampled_from(sorted(REGIONS)), st.integers(0, 100)),
    seed=st.integers(0, 2**16),
)
def test_drained_unready_and_unavailable_never_appear(
    unready: set[str], down: set[str], dials: dict[str, int], seed: int
) -> None:
    s = RoutingSnapshot.build(
        1,
        {"m": {"v1": 100}},
        BACKENDS,
        dials,
        unready=frozenset(("m", "v1", r) for r in unready),
    )
    live = Live(**{n: BackendSignal(available=False, why_unavailable="breaker open") for n in down})
    try:
        plan = Router(random.Random(seed)).plan(s, req(), signals=live)
    except NoBackendAvailable as exc:
        assert exc.retry_after
        return
    for b in plan.backends:
        assert dials.get(b.region.name, 100) > 0
        assert b.region.name not in unready
        assert b.name not in down


def test_faster_backend_takes_most_traffic_and_loses_it_when_slow() -> None:
    router = Router(random.Random(5))
    s = snap()
    fast, slow = BackendSignal(ttft_s=0.05, itl_s=0.01), BackendSignal(ttft_s=0.5, itl_s=0.01)
    firsts = Counter(
        router.plan(s, req(EU), signals=Live(ie=fast, fra=slow)).backends[0].name
        for _ in range(2000)
    )
    assert firsts["ie"] / 2000 > 0.95  # with two candidates P2C compares both
    firsts = Counter(
        router.plan(s, req(EU), signals=Live(ie=slow, fra=fast)).backends[0].name
        for _ in range(2000)
    )
    assert firsts["fra"] / 2000 > 0.95


def test_load_spreads_requests_between_equal_backends() -> None:
    router = Router(random.Random(9))
    s = snap()
    busy = BackendSignal(ttft_s=0.1, itl_s=0.01, in_flight=9)
    idle = BackendSignal(ttft_s=0.1, itl_s=0.01, in_flight=0)
    plan = router.plan(s, req(EU), signals=Live(ie=busy, fra=idle))
    assert plan.backends[0].name == "fra"


def test_cost_weight_moves_traffic_to_the_cheaper_region() -> None:
    cheap = BackendSpec(
        "cheap",
        "m",
        "v1",
        REGIONS["onprem:fra1"],
        ProviderKind.VLLM,
        "http://x",
        "s",
        price=Price(0.1, 0.2),
    )
    dear = BackendSpec(
        "dear",
        "m",
        "v1",
        REGIONS["aws:eu-west-1"],
        ProviderKind.VLLM,
        "http://x",
        "s",
        price=Price(1.0, 2.0),
    )
    s = RoutingSnapshot.build(1, {"m": {"v1": 100}}, (cheap, dear))
    # "dear" is 30% faster: with cost ignored it wins, with cost weighted it loses
    live = Live(
        dear=BackendSignal(ttft_s=0.07, itl_s=0.007), cheap=BackendSignal(ttft_s=0.1, itl_s=0.01)
    )
    router = Router(random.Random(1))
    assert router.plan(s, req(), signals=live, cost_weight=0.0).backends[0].name == "dear"
    assert router.plan(s, req(), signals=live, cost_weight=0.5).backends[0].name == "cheap"
    plan = router.plan(s, req(), signals=live, cost_weight=0.5)
    assert "price $" in plan.candidates[0].reason and plan.candidates[0].score is not None


def test_cold_backends_get_a_fair_probe_share() -> None:
    router = Router(random.Random(11))
    s = snap()
    warm = BackendSignal(ttft_s=0.1, itl_s=0.01)
    firsts = Counter(
        router.plan(s, req(EU), signals=Live(ie=warm)).backends[0].name for _ in range(2000)
    )
    assert 0.3 < firsts["fra"] / 2000 < 0.7  # cold "fra" is assumed median-fast, not ignored


def test_prefix_affinity_pins_a_pool_member_within_the_load_bound() -> None:
    pool = tuple(
        BackendSpec(
            f"gpu{i}", "m", "v1", REGIONS["onprem:fra1"], ProviderKind.VLLM, "http://x", "s"
        )
        for i in range(4)
    )
    s = RoutingSnapshot.build(1, {"m": {"v1": 100}}, pool)
    request = GenerationRequest(Kind.COMPLETION, "m", "id", prompt="A shared system prompt. " * 20)
    router = Router(random.Random(2))
    firsts = {router.plan(s, request).backends[0].name for _ in range(50)}
    assert len(firsts) == 1
    pinned = firsts.pop()
    plan = router.plan(s, request)
    assert plan.candidates[0].reason.startswith(("prefix affinity", "p2c pick"))
    busy = Live(**{pinned: BackendSignal(in_flight=50)})
    assert router.plan(s, request, signals=busy).backends[0].name != pinned


def test_plan_explains_itself() -> None:
    plan = Router(random.Random(1)).plan(snap(dials={"onprem:fra1": 0}), req(EU))
    text = plan.explain()
    assert text.startswith("m@v1; ie: p2c pick")
    assert "fra: excluded (region drained)" in text and "us: excluded (outside residency)" in text
