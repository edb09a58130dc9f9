"""The one writer of the published routing snapshot.

Three inputs make the snapshot requests route on, each fed by its owner:

* the **config base** (``snapshot_from(config)``), fed at start and by a hot
  reload (``gateway/app/reload.py``);
* the **discovered backends**, fed by discovery (``gateway/control/discovery.py``);
* the **store's state** (splits, dials, drains, replica readiness), fed by the
  control plane (``gateway/control/plane.py``) at every applied revision.

Every feed recomposes: ``state.overlay(base + discovered)``, or ``base +
discovered`` while no state has been applied, and hands the new immutable value
to ``publish`` — the only assignment of the published snapshot. The base keeps
the revision it started with (a reload or a discovery round is not a store
revision); once a state is applied the snapshot carries the state's revision.
"""

from __future__ import annotations

from collections.abc import Callable

from gateway.store.state import ControlState
from regions.inventory import BackendSpec
from routing.snapshot import RoutingSnapshot


def with_backends(base: RoutingSnapshot, extra: tuple[BackendSpec, ...]) -> RoutingSnapshot:
    """``base`` with ``extra`` backends added, routed like the base's own (same revision)."""
    if not extra:
        return base
    backends = tuple(
        b for route in base.models.values() for per in route.backends.values() for b in per
    )
    return RoutingSnapshot.build(
        base.revision,
        {name: route.split for name, route in base.models.items()},
        backends + extra,
        base.dials,
        cost_weights={name: route.cost_weight for name, route in base.models.items()},
        unready=base.unready,
    )


class SnapshotComposer:
    """Holds the config base, the discovered backends and the store state; publishes their sum."""

    def __init__(self, base: RoutingSnapshot, publish: Callable[[RoutingSnapshot], None]) -> None:
        self._revision = base.revision  # the base's, whatever base a reload feeds later
        self._base = base
        self._discovered: tuple[BackendSpec, ...] = ()
        self._state: ControlState | None = None
        self._publish = publish

    @property
    def base(self) -> RoutingSnapshot:
        """The config base plus the discovered backends: what the store's state overlays."""
        return with_backends(self._base, self._discovered)

    @property
    def state(self) -> ControlState | None:
        return self._state

    def config(self, base: RoutingSnapshot) -> RoutingSnapshot:
        """A new config base (a reload); its revision is not the published one's."""
        self._base = base if base.revision == self._revision else _revised(base, self._revision)
        return self._compose()

    def discovered(self, backends: tuple[BackendSpec, ...]) -> RoutingSnapshot:
        self._discovered = backends
        return self._compose()

    def overlay(self, state: ControlState) -> RoutingSnapshot:
        self._state = state
        return self._compose()

    def _compose(self) -> RoutingSnapshot:
        base = self.base
        snapshot = base if self._state is None else self._state.overlay(base)
        self._publish(snapshot)
        return snapshot


def _revised(snapshot: RoutingSnapshot, revision: int) -> RoutingSnapshot:
    return RoutingSnapshot(revision, snapshot.models, snapshot.dials, snapshot.unready)
