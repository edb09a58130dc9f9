"""Shared health holds on each replica's own clock: an ejection is shared for what
is left of it on the ejecting replica's health clock, and the peer holds the backend
for that long on its own (injected, virtual) clock."""

from __future__ import annotations

import pytest

from failover.health import BackendHealth
from gateway.control.plane import ControlPlane, SharedHealthEvents
from gateway.observe.metrics import Metrics
from gateway.store import EmbeddedStore
from regions.inventory import BackendSpec, ProviderKind, Region
from tests.conftest import wait_for

BAD = BackendSpec(
    "bad", "m", "v1", Region("aws:us-east-1", frozenset()), ProviderKind.VLLM, "http://x", "s"
)


class Quiet:
    """The runtime's own health events: nothing to do here."""

    def attempt_finished(self, attempt: object) -> None: ...
    def breaker_changed(self, backend: object, state: object) -> None: ...
    def ejected(self, backend: object, until: float) -> None: ...
    def count(self, event: str) -> None: ...


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def replica(store: EmbeddedStore, clock: Clock) -> tuple[ControlPlane, BackendHealth]:
    health = BackendHealth(clock=clock)
    health.track([BAD])
    plane = ControlPlane(store, publish=lambda state: None, health=health, metrics=Metrics())
    return plane, health


@pytest.mark.parametrize("peer_start", [0.0, 1e6])  # clocks of unrelated origins
async def test_an_ejection_is_held_by_a_peer_for_what_is_left_of_it(peer_start: float) -> None:
    store = EmbeddedStore()
    here, there = Clock(1000.0), Clock(peer_start)
    a, _ = replica(store, here)
    b, peer_health = replica(store, there)
    await a.start()
    await b.start()
    try:
        events = SharedHealthEvents(Quiet(), a, open_s=10.0)
        events.ejected(BAD, here.now + 30.0)  # ejected for 30 s of this replica's clock
        await wait_for(lambda: not peer_health.signal("bad", there.now).available)
        assert "ejected on peer" in peer_health.signal("bad", there.now).why_unavailable
        # the wall-clock trip took a moment: the hold ends within it of 30 s on the peer
        assert not peer_health.signal("bad", there.now + 29.0).available
        assert peer_health.signal("bad", there.now + 30.0).available
    finally:
        await a.stop()
        await b.stop()
