"""Discovered backends into a running gateway, without restarts or cut streams.

:class:`Discovery` owns the :class:`regions.discovery.Refresher` built from
the config's ``discovery:`` section and applies each inventory it produces
to the running gateway, through the callables the composition root gives it
(``gateway/app/build.py``, ``start_discovery``):

* **added** backends get an adapter (``regions.registry``) wrapped in a
  :class:`~regions.discovery.TrackedProvider`, on a connection pool per
  upstream host; a backend that can be probed joins only once it answers one
  health check (a GPU instance is ``RUNNING`` minutes before its server
  loads the weights), and is retried next round otherwise;
* the health registry starts tracking them, each gets its own active health
  checker (``failover.probing.Prober``);
* then, in one step on the event loop, the providers dict is replaced by a
  new one and the discovered backends go to the snapshot composer
  (``gateway.control.snapshots``), which publishes the config plus them
  under the store's overlay, so the store's splits, dials and drains keep
  applying;
* **removed** backends (and the old adapter of one whose address changed)
  are retired in the background: they take no new streams, streams already
  running finish, then the adapter closes and its host's pool with it.

Executions keep the providers dict they started with, so a request routed on
the previous snapshot still finds every backend of its plan.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from failover.health import BackendHealth
from failover.health_check import HealthCheckPolicy
from failover.policy import TimeoutPolicy
from failover.probing import Prober
from gateway.config.cloud import DiscoveryConfig
from gateway.config.model import Config
from gateway.observe.metrics import Metrics
from regions.discovery.tracked import TrackedProvider
from regions.inventory import BackendSpec, Region
from regions.provider import Provider
from regions.registry import SessionPool, build_provider
from regions.tasks import BackgroundTasks

# The sources and the refresher load with the first Discovery (a config with a
# ``discovery:`` section): the gateway server imports this module whatever its config.
if TYPE_CHECKING:
    from regions.discovery.base import Catalog, Source
    from regions.discovery.refresh import Inventory

log = logging.getLogger("meridian.discovery")


def catalog_from(config: Config) -> Catalog:
    from regions.discovery.base import Catalog

    return Catalog(
        MappingProxyType({r.name: Region(r.name, frozenset(r.tags)) for r in config.regions}),
        MappingProxyType({m.name: frozenset(m.versions) for m in config.models}),
        frozenset(b.name for b in config.backends),
    )


def sources_from(d: DiscoveryConfig, catalog: Catalog) -> list[Source]:
    sources: list[Source] = []
    if d.sagemaker is not None:
        from regions.discovery.sagemaker import SageMakerSettings, SageMakerSource

        sm = d.sagemaker
        for region in sm.regions:
            settings = SageMakerSettings(
                region=region,
                tags=MappingProxyType(dict(sm.tags)),
                profile=sm.profile,
                control_url=sm.control_url,
                runtime_url=sm.runtime_url,
                emulator_credentials=sm.credentials == "emulator",
                timeout_s=sm.timeout_s,
            )
            sources.append(SageMakerSource(settings, catalog))
    if d.gce is not None:
        from regions.discovery.gce import GceSettings, GceSource

        g = d.gce
        gce = GceSettings(
            project=g.project,
            labels=MappingProxyType(dict(g.labels)),
            zones=frozenset(g.zones),
            port_key=g.port_label,
            default_port=g.default_port,
            accelerators=frozenset(g.accelerators),
            require_gpu=g.require_gpu,
            managed_groups=g.managed_groups,
            api_endpoint=g.api_endpoint,
            anonymous=g.credentials == "anonymous",
            timeout_s=g.timeout_s,
        )
        sources.append(GceSource(gce, catalog))
    return sources


class _HostPools:
    """One connection pool per upstream host of discovered backends, closed
    with the last backend on that host (GCE addresses churn; pools must not)."""

    def __init__(self, connect_timeout: float, max_event_bytes: int) -> None:
        self._connect_timeout = connect_timeout
        self._max_event_bytes = max_event_bytes
        self._pools: dict[str, tuple[SessionPool, int]] = {}

    def acquire(self, url: str) -> SessionPool:
        host = urlsplit(url).netloc
        known = self._pools.get(host)
        pool, users = known or (
            SessionPool(self._connect_timeout, max_event_bytes=self._max_event_bytes),
            0,
        )
        self._pools[host] = (pool, users + 1)
        return pool

    async def release(self, url: str) -> None:
        host = urlsplit(url).netloc
        pool, users = self._pools[host]
        if users > 1:
            self._pools[host] = (pool, users - 1)
        else:
            del self._pools[host]
            await pool.close()

    async def close(self) -> None:
        pools = [pool for pool, _ in self._pools.values()]
        self._pools.clear()
        for pool in pools:
            await pool.close()


@dataclass(slots=True)
class _Live:
    spec: BackendSpec
    provider: TrackedProvider
    prober: Prober | None = None


class Discovery:
    """Given what it changes and reads, not the runtime: the current providers
    (``providers``) and one ``publish`` that swaps the providers dict and hands the
    discovered backends to the snapshot composer in one step; the health registry
    and metrics it extends; the gateway's catalog and health-check policy."""

    def __init__(
        self,
        config: DiscoveryConfig,
        *,
        catalog: Catalog,
        checks: HealthCheckPolicy | None,
        timeouts: TimeoutPolicy,
        max_event_bytes: int,
        health: BackendHealth,
        metrics: Metrics,
        providers: Callable[[], Mapping[str, Provider]],
        publish: Callable[[dict[str, Provider], tuple[BackendSpec, ...]], None],
        sources: Sequence[Source] | None = None,
    ) -> None:
        from regions.discovery.netpolicy import NetworkPolicy
        from regions.discovery.refresh import Refresher

        self.config = config
        self.refresher = Refresher(
            sources if sources is not None else sources_from(config, catalog),
            catalog,
            NetworkPolicy.parse(config.allowed_networks),
            self.apply,
            interval_s=config.refresh_s,
        )
        self._checks = checks
        self._health = health
        self._metrics = metrics
        self._providers = providers
        self._publish_to = publish
        self._retire_after_s = timeouts.total + 1.0
        self._pools = _HostPools(timeouts.connect, max_event_bytes)
        self._live: dict[str, _Live] = {}
        self._retiring: dict[TrackedProvider, BackendSpec] = {}
        self._owned: set[str] = set()  # names this class ever put in the providers dict
        self._tasks = BackgroundTasks()
        self.pending: dict[str, str] = {}  # discovered, not yet answering its health check

    @property
    def live(self) -> tuple[BackendSpec, ...]:
        return tuple(self._live[n].spec for n in sorted(self._live))

    # -- lifetime ----------------------------------------------------------------

    async def start(self) -> None:
        """One round first (bounded by ``initial_timeout_s``; past it the gateway
        starts on its static backends and the round finishes in the background),
        then the periodic refresh."""
        first = asyncio.ensure_future(self.refresher.refresh())
        self._tasks.add(first)
        done, _ = await asyncio.wait({first}, timeout=self.config.initial_timeout_s)
        if not done:
            log.warning("discovery: first round still running after %.0f s; starting without it",
                        self.config.initial_timeout_s)  # fmt: skip
        self.refresher.start()

    async def refresh(self) -> Inventory:
        """One round now (tests; an operator's trigger)."""
        return await self.refresher.refresh()

    async def stop(self) -> None:
        """Stop refreshing and close every adapter (Gateway.stop calls this after
        draining, so streams have ended or been cut by then)."""
        retiring = list(self._retiring)  # cancelled retirements forget theirs
        await self._tasks.stop()
        await self.refresher.stop()
        for live in self._live.values():
            if live.prober is not None:
                await live.prober.stop()
            await live.provider.close()
        for provider in retiring:
            await provider.close()
        self._live.clear()
        self._retiring.clear()
        await self._pools.close()

    # -- applying an inventory -----------------------------------------------------

    async def apply(self, inventory: Inventory) -> None:
        desired = {f.spec.name: f.spec for f in inventory.found}
        gone = [n for n, live in self._live.items() if desired.get(n) != live.spec]
        new = [s for n, s in desired.items() if n not in self._live or n in gone]
        fresh = await self._prepare(new)
        if not gone and not fresh:
            return
        retired = [self._live.pop(n) for n in gone]
        for name, provider in fresh.items():
            self._live[name] = _Live(desired[name], provider)
        for live in retired:
            self._retiring[live.provider] = live.spec
        self._health.track(desired[n] for n in fresh)
        self._metrics.track(desired[n] for n in fresh)  # their series, as at start
        self._publish()
        for name in fresh:
            if self._checks is not None and self._live[name].provider.probeable:
                prober = Prober({name: self._live[name].provider}, self._health, self._checks)
                prober.start()
                self._live[name].prober = prober
        for name in fresh:
            spec = desired[name]
            log.info("discovery: + %s %s@%s at %s", name, spec.model, spec.version, spec.url)
        for live in retired:
            log.info("discovery: - %s (%d streams in flight finish first)",
                     live.spec.name, live.provider.in_flight)  # fmt: skip
            self._tasks.spawn(self._retire(live))

    async def _prepare(self, specs: list[BackendSpec]) -> dict[str, TrackedProvider]:
        """Adapters for new backends that answer their first health check.
        Cancellation-safe: nothing is published until the caller swaps."""
        built: dict[str, TrackedProvider] = {}
        try:
            for spec in specs:
                try:
                    built[spec.name] = self._build(spec)
                except LookupError as exc:
                    self._pending(spec.name, str(exc))
            verdicts = await asyncio.gather(*(self._ready(p) for p in built.values()))
        except BaseException:
            for provider in built.values():
                await provider.close()
            raise
        ready: dict[str, TrackedProvider] = {}
        for (name, provider), why in zip(built.items(), verdicts, strict=True):
            if why is None:
                self.pending.pop(name, None)
                ready[name] = provider
            else:
                self._pending(name, why)
                await provider.close()
        for name in [n for n in self.pending if n not in {s.name for s in specs}]:
            del self.pending[name]  # no longer discovered at all
        return ready

    def _build(self, spec: BackendSpec) -> TrackedProvider:
        pool = self._pools.acquire(spec.url)
        try:
            inner: Provider = build_provider(spec, pool)
        except BaseException:
            self._tasks.spawn(self._pools.release(spec.url))
            raise
        return TrackedProvider(spec.name, inner, lambda: self._pools.release(spec.url))

    async def _ready(self, provider: TrackedProvider) -> str | None:
        if self._checks is None or not provider.probeable:
            return None
        try:
            async with asyncio.timeout(self._checks.timeout_s):
                probe = await provider.probe()
        except (TimeoutError, OSError) as exc:
            return f"health check failed: {type(exc).__name__}"
        return None if probe.healthy else "health check failed"

    def _pending(self, name: str, why: str) -> None:
        if self.pending.get(name) != why:
            log.info("discovery: %s not added yet: %s", name, why)
        self.pending[name] = why

    def _publish(self) -> None:
        """Swap in a new providers dict and routing snapshot, in one step."""
        # Others' entries (static backends) stay; ours are rebuilt: live ones,
        # and retiring ones until closed (a stale plan then fails over cleanly).
        providers: dict[str, Provider] = {
            n: p for n, p in self._providers().items() if n not in self._owned
        }
        for provider in self._retiring:
            if not provider.closed:
                providers[provider.name] = provider
        for name, live in self._live.items():
            providers[name] = live.provider
        self._owned |= set(self._live) | {p.name for p in self._retiring}
        self._publish_to(providers, self.live)

    async def _retire(self, live: _Live) -> None:
        try:
            if live.prober is not None:
                await live.prober.stop()
            cut = await live.provider.retire(self._retire_after_s)
            if cut:
                log.warning(
                    "discovery: %s closed with %d streams still running", live.spec.name, cut
                )
        finally:
            self._retiring.pop(live.provider, None)
            if live.spec.name not in self._live:
                self._publish()  # drop the closed adapter from the providers dict

    def status(self) -> dict[str, object]:
        return {
            **self.refresher.status(),
            "live": [s.name for s in self.live],
            "pending": dict(self.pending),
            "retiring": {p.name: p.in_flight for p in self._retiring},
        }
