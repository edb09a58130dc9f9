"""The snapshot composer: config base + discovered backends, under the store's overlay."""

from __future__ import annotations

from types import MappingProxyType

from gateway.control.snapshots import SnapshotComposer, with_backends
from gateway.store.state import ControlState
from regions.inventory import BackendSpec, ProviderKind, Region
from routing.snapshot import RoutingSnapshot

EAST = Region("aws:us-east-1", frozenset({"us"}))
WEST = Region("aws:us-west-2", frozenset({"us"}))


def spec(name: str, version: str, region: Region = EAST) -> BackendSpec:
    return BackendSpec(name, "m", version, region, ProviderKind.VLLM, f"http://{name}", "m")


def base(revision: int = 1, *backends: BackendSpec) -> RoutingSnapshot:
    return RoutingSnapshot.build(
        revision,
        {"m": {"v1": 100, "v2": 0}},
        backends or (spec("a", "v1"), spec("b", "v2")),
        {EAST.name: 100, WEST.name: 100},
        cost_weights={"m": 0.5},
    )


def names(snapshot: RoutingSnapshot, version: str) -> list[str]:
    return [b.name for b in snapshot.models["m"].backends[version]]


class Published:
    def __init__(self) -> None:
        self.values: list[RoutingSnapshot] = []

    def __call__(self, snapshot: RoutingSnapshot) -> None:
        self.values.append(snapshot)

    @property
    def last(self) -> RoutingSnapshot:
        return self.values[-1]


def drained_west(revision: int) -> ControlState:
    return ControlState(
        revision=revision,
        splits=MappingProxyType({"m": MappingProxyType({"v1": 0, "v2": 100})}),
        drains=frozenset({WEST.name}),
    )


def test_each_feed_recomposes_and_publishes() -> None:
    published = Published()
    composer = SnapshotComposer(base(), published)
    composer.discovered((spec("d", "v1", WEST),))
    composer.overlay(drained_west(7))
    composer.config(base(1, spec("a", "v1"), spec("c", "v2")))
    assert len(published.values) == 3
    assert names(published.values[0], "v1") == ["a", "d"]
    assert published.values[1].dial(WEST.name) == 0
    assert names(published.last, "v2") == ["c"]


def test_the_overlay_applies_over_config_and_discovered() -> None:
    published = Published()
    composer = SnapshotComposer(base(), published)
    composer.overlay(drained_west(3))
    composer.discovered((spec("d", "v2", WEST),))  # after the state: still under it
    snap = published.last
    assert dict(snap.models["m"].split) == {"v1": 0, "v2": 100}
    assert names(snap, "v2") == ["b", "d"]
    assert snap.dial(WEST.name) == 0 and snap.dial(EAST.name) == 100
    composer.config(base(1, spec("a", "v1")))  # a reload keeps both
    assert names(published.last, "v2") == ["d"]
    assert dict(published.last.models["m"].split) == {"v1": 0, "v2": 100}


def test_revisions_the_base_keeps_its_own_a_state_brings_its() -> None:
    published = Published()
    composer = SnapshotComposer(base(1), published)
    composer.discovered((spec("d", "v1"),))
    assert published.last.revision == 1
    composer.config(base(5))  # a reload is not a store revision
    assert published.last.revision == 1
    assert composer.base.revision == 1
    composer.overlay(drained_west(9))
    assert published.last.revision == 9
    composer.discovered(())
    assert published.last.revision == 9


def test_with_backends_routes_them_like_the_configs_own() -> None:
    extra = (spec("d", "v1"), spec("e", "v1", WEST))
    built = RoutingSnapshot.build(
        1,
        {"m": {"v1": 100, "v2": 0}},
        (spec("a", "v1"), spec("b", "v2"), *extra),
        {EAST.name: 100, WEST.name: 100},
        cost_weights={"m": 0.5},
    )
    composed = with_backends(base(), extra)
    assert composed.models["m"].backends == built.models["m"].backends
    assert composed.models["m"].cost_weight == 0.5
    assert set(composed.models["m"].rings) == set(built.models["m"].rings) == {("v1", EAST.name)}
    assert (composed.revision, composed.dials, composed.unready) == (
        built.revision,
        built.dials,
        built.unready,
    )
    assert with_backends(base(), ()) == base()
