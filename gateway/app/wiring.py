"""Wiring the control plane into a runtime: the one place that sees both.

:func:`attach` opens the configured store and connects the control plane
(``gateway.control.plane``), the canary tap and controller, the usage tap,
the fleet's capacity counts (``gateway.control.capacity``), the tenant limiter
and the shadow mirror to a :class:`Runtime`, each given only what it uses
(``Gateway.start`` calls it, after ``gateway.app.build``).
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from gateway.app.runtime import Runtime
from gateway.canary.controller import CanaryController
from gateway.canary.tap import CanaryTap
from gateway.control.plane import ControlPlane, SharedHealthEvents
from gateway.control.usage import UsageTap
from gateway.shadow.mirror import ShadowMirror
from gateway.store import open_store


async def attach(runtime: Runtime, environ: Mapping[str, str] | None = None) -> ControlPlane:
    """Open the configured store and connect everything that uses it to ``runtime``."""
    config = runtime.config
    store = open_store(config.store, environ)
    control = ControlPlane(
        store,
        publish=runtime.snapshots.overlay,
        health=runtime.health,
        metrics=runtime.metrics,
        revision=runtime.snapshot.revision,
        resync_s=config.store.resync_s,
        cache=config.store.snapshot_path,
        probe_s=config.store.probe_s,
        probe_timeout_s=config.store.probe_timeout_s,
    )
    runtime.live.control = control
    if runtime.health.events is not None:
        open_s = config.failover.breaker.open_s
        runtime.health.events = SharedHealthEvents(runtime.health.events, control, open_s)
    tap = CanaryTap(store, config.store.counts_flush_s)
    runtime.taps.append(tap)
    usage = UsageTap(store, config.store.counts_flush_s)
    runtime.taps.append(usage)
    # An in-memory store has one process for a fleet: its own meters say it all.
    fleet: list[Callable[[], Coroutine[Any, Any, None]]] = []  # the fleet's capacity counts
    if config.store.kind != "embedded" or config.store.path is not None:
        from gateway.control import capacity

        fleet_tap = capacity.CapacityTap(
            store, config.store.counts_flush_s, bucket_s=capacity.FLEET_BUCKET_S
        )
        fleet_feed = capacity.CapacityFeed(
            store,
            lambda: capacity.backends(runtime.snapshot),
            runtime.metrics.measured,
            bucket_s=capacity.FLEET_BUCKET_S,
            settle_s=config.store.counts_flush_s,
        )
        runtime.taps.append(fleet_tap)
        fleet += [fleet_tap.run, fleet_feed.run]
    controller = CanaryController(
        store,
        lambda: control.state,
        control.write,
        control.replica,
        lease_ttl_s=config.store.lease_ttl_s,
    )
    control.tap, control.controller = tap, controller
    control.listeners.append(lambda state: tap.watch(state.canaries))
    control.listeners.append(lambda _state: controller.wake())
    # The limiter (and its Redis lease scripts) loads only for a config that limits a
    # tenant: limits turned on by a reload need a restart (gateway.app.reload).
    if any(t.limits is not None for t in config.tenants):
        from gateway.control.limits import TenantLimiter

        limiter = TenantLimiter.from_config(
            config, store, runtime.metrics, lambda: control.degraded
        )
        if limiter is not None:
            runtime.live.limiter = control.limiter = limiter
    mirror = ShadowMirror(
        store,
        snapshot=lambda: runtime.snapshot,
        providers=lambda: runtime.providers,
        config=lambda: runtime.config,
        router=runtime.router,
        health=runtime.health,
        metrics=runtime.metrics,
        policy=runtime.policy,
        flush_s=config.store.counts_flush_s,
    )
    runtime.live.shadow = mirror
    runtime.taps.append(mirror.finished)
    control.listeners.append(lambda _state: mirror.watch(control.entries))
    await control.start()
    tap.watch(control.state.canaries)
    mirror.watch(control.entries)
    control.spawn(tap.run())
    control.spawn(controller.run())
    control.spawn(mirror.run())
    control.spawn(usage.run())  # cancelled by control.stop(), it flushes what is pending
    for run in fleet:
        control.spawn(run())
    return control
