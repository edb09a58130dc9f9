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
    assert EU.narrow(frozenset({"US"})).allowed == frozenset()
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
