"""What routing does not compute per request (issue 22): structural, not timed."""

from __future__ import annotations

import random

import pytest

import routing.router
from regions.request import Residency
from routing.plan import NoBackendAvailable, ResidencyViolation
from routing.router import Router
from routing.snapshot import RoutingSnapshot
from tests.routing.test_router import EU, backend, req, snap


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The affinity keys routing hashed into a split point."""
    keys: list[str] = []
    point = routing.router.affinity_point

    def counting(key: str, model: str) -> float:
        keys.append(key)
        return point(key, model)

    monkeypatch.setattr(routing.router, "affinity_point", counting)
    return keys


def test_a_split_with_one_weighted_version_needs_no_hash_of_the_key(hashed: list[str]) -> None:
    plan = Router(random.Random(1)).plan(snap({"v1": 100, "v2": 0}), req(EU, key="conv"))
    assert plan.version == "v1"
    assert hashed == []


def test_a_split_over_two_versions_still_hashes_the_key(hashed: list[str]) -> None:
    Router(random.Random(1)).plan(snap({"v1": 50, "v2": 50}), req(key="conv"))
    assert hashed == ["conv"]


def test_the_sole_version_refuses_as_the_split_did() -> None:
    # v1 has no region in JP, v2 (no weight) is not considered: the same 403 as before
    with pytest.raises(ResidencyViolation, match=r"version v1\)"):
        Router().plan(snap({"v1": 100, "v2": 0}), req(Residency(frozenset({"JP"}))))
    drained = {"aws:us-east-1": 0, "aws:eu-west-1": 0, "onprem:fra1": 0}
    with pytest.raises(NoBackendAvailable, match=r"\(version v1\) is unavailable"):
        Router().plan(snap({"v1": 100, "v2": 0}, drained), req())


def test_sole_is_the_only_version_with_weight() -> None:
    assert snap({"v1": 100, "v2": 0}).models["m"].sole == "v1"
    assert snap({"v1": 1, "v2": 1}).models["m"].sole is None
    assert snap({"v1": 0, "v2": 0}).models["m"].sole is None
    one = RoutingSnapshot.build(1, {"m": {"v2": 5}}, (backend("x", "onprem:fra1", "v2"),))
    assert one.models["m"].sole == "v2"
