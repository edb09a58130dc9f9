"""Everything the request path needs, derived from one validated config.

:class:`Runtime` is the value; ``gateway.app.build`` (the composition root)
assembles it. The derivations here (backend specs, the routing snapshot, the
key ring) are shared with reload and discovery.

:class:`Runtime` is frozen: what changes after build (the routing snapshot,
the config, keys and providers a reload swaps, the control plane attached at
start) is in its :class:`Live` part, each value swapped whole by one
assignment. The routing snapshot is an immutable value; a request reads it
once and keeps that value for its whole life.
Adapters come from ``regions.registry``, which also owns the upstream
connection pools.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from failover.executor import Budgets, Execution
from failover.health import BackendHealth
from failover.policy import FailoverPolicy
from failover.probing import Prober
from gateway.app.lifecycle import Lifecycle
from gateway.config.model import (
    Config,
    PriceConfig,
    SageMakerBackendOptions,
    VertexBackendOptions,
)
from gateway.control.snapshots import SnapshotComposer
from gateway.observe.access_log import AccessLog
from gateway.observe.metrics import Metrics
from gateway.observe.tracing import Tracing
from gateway.security.admin_tokens import AdminTokens
from gateway.security.keys import ApiKey, KeyRing, Tenant
from gateway.security.tls import backend_tls
from regions.inventory import BackendSpec, Price, Region, SageMakerOptions, VertexOptions
from regions.provider import Provider
from regions.registry import SessionPool
from regions.request import UNRESTRICTED, Residency
from routing.router import Router
from routing.snapshot import RoutingSnapshot

if TYPE_CHECKING:
    from gateway.control.limits import TenantLimiter
    from gateway.control.plane import ControlPlane
    from gateway.shadow.mirror import ShadowMirror


@dataclass(slots=True)
class Live:
    """What changes after build, each part with its one writer: the snapshot composer
    (``snapshot``); a reload (``config``, the keys, ``providers`` and the health
    checks' ``prober``); discovery (``providers``); the control plane's attach
    (``control``, ``limiter``, ``shadow``: gateway/app/wiring.py). Each is swapped
    whole, by one assignment, so a reader sees the old value or the new one."""

    config: Config
    snapshot: RoutingSnapshot
    keyring: KeyRing
    admin_digest: str | None
    providers: dict[str, Provider]
    admin_tokens: AdminTokens = field(default_factory=AdminTokens)  # gateway.security.admin_tokens
    prober: Prober | None = None
    # The control plane (gateway.control.plane), tenant limits (gateway.control.limits)
    # and the shadow mirror (gateway.shadow), attached by the Gateway.
    control: ControlPlane | None = None
    limiter: TenantLimiter | None = None
    shadow: ShadowMirror | None = None


@dataclass(frozen=True, slots=True, eq=False)  # one process's: identity, not value
class Runtime:
    """The parts fixed at build, and ``live``: what changes after it. The live parts
    read as the Runtime's own attributes (``rt.config``, ``rt.snapshot``...); they
    are written only through ``rt.live``."""

    live: Live
    policy: FailoverPolicy
    health: BackendHealth
    budgets: Budgets
    router: Router = field(default_factory=Router)
    metrics: Metrics = field(default_factory=Metrics)
    lifecycle: Lifecycle = field(default_factory=Lifecycle)
    pool: SessionPool | None = None
    # Taps see every request once, when it ends; the control plane's attach adds them.
    taps: list[Callable[[Execution, int], None]] = field(default_factory=list)
    access_log: AccessLog | None = (
        None  # config.observability.access_log (gateway.observe.access_log)
    )
    tracing: Tracing | None = (
        None  # config.observability.tracing, when enabled (gateway.observe.tracing)
    )
    # The only writer of ``snapshot``: config, discovery and the store's state feed it.
    snapshots: SnapshotComposer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "snapshots", SnapshotComposer(self.live.snapshot, self._publish))

    def _publish(self, snapshot: RoutingSnapshot) -> None:
        self.live.snapshot = snapshot

    @property
    def config(self) -> Config:
        return self.live.config

    @property
    def snapshot(self) -> RoutingSnapshot:
        return self.live.snapshot

    @property
    def keyring(self) -> KeyRing:
        return self.live.keyring

    @property
    def admin_digest(self) -> str | None:
        return self.live.admin_digest

    @property
    def admin_tokens(self) -> AdminTokens:
        return self.live.admin_tokens

    @property
    def providers(self) -> dict[str, Provider]:
        return self.live.providers

    @property
    def prober(self) -> Prober | None:
        return self.live.prober

    @property
    def control(self) -> ControlPlane | None:
        return self.live.control

    @property
    def limiter(self) -> TenantLimiter | None:
        return self.live.limiter

    @property
    def shadow(self) -> ShadowMirror | None:
        return self.live.shadow

    async def close(self) -> None:
        if self.access_log is not None:
            self.access_log.close()
        if self.tracing is not None:
            self.tracing.shutdown()
        if self.prober is not None:
            await self.prober.stop()
        for provider in self.providers.values():
            await provider.close()
        if self.pool is not None:
            await self.pool.close()


def _sagemaker_options(o: SageMakerBackendOptions | None) -> SageMakerOptions | None:
    if o is None:
        return None
    return SageMakerOptions(
        endpoint_name=o.endpoint_name,
        region=o.region,
        container=o.container,
        target_variant=o.target_variant,
        inference_component=o.inference_component,
        custom_attributes=o.custom_attributes,
        profile=o.profile,
        emulator_credentials=o.credentials == "emulator",
    )


def _vertex_options(o: VertexBackendOptions | None) -> VertexOptions | None:
    if o is None:
        return None
    return VertexOptions(
        project=o.project,
        location=o.location,
        endpoint_id=o.endpoint_id,
        route=o.route,
        emulator_credentials=o.credentials == "emulator",
        dedicated_dns=o.dns(),
        discover_dns=o.discover_dns,
    )


def _price(p: PriceConfig) -> Price:
    if p.per_hour is not None:  # a fresh meter: a reload measures again from the seed
        return Price.hourly(p.per_hour, p.tokens_per_s, p.input_ratio)
    return Price(p.input_per_m, p.output_per_m)


def backend_specs(config: Config) -> tuple[BackendSpec, ...]:
    regions = {r.name: Region(r.name, frozenset(r.tags)) for r in config.regions}
    return tuple(
        BackendSpec(
            name=b.name,
            model=b.model,
            version=b.version,
            region=regions[b.region],
            kind=b.provider,
            url=b.url,
            served_model=b.served_model,
            price=_price(b.price),
            max_concurrency=b.max_concurrency,
            weight=b.weight,
            sagemaker=_sagemaker_options(b.sagemaker),
            vertex=_vertex_options(b.vertex),
            tls=backend_tls(b.tls),
            capabilities=None if b.capabilities is None else frozenset(b.capabilities),
            context_length=b.context_length,
        )
        for b in config.backends
    )


def snapshot_from(
    config: Config, revision: int = 1, discovered: tuple[BackendSpec, ...] = ()
) -> RoutingSnapshot:
    """The config's routing snapshot, plus any backends discovery found."""
    return RoutingSnapshot.build(
        revision,
        {m.name: m.versions for m in config.models},
        backend_specs(config) + discovered,
        {r.name: r.dial for r in config.regions},
        cost_weights={m.name: m.cost_weight for m in config.models},
        unready=frozenset(
            (b.model, b.version, b.region) for b in config.backends if not b.replica_ready
        ),
    )


def keyring_from(config: Config, environ: Mapping[str, str]) -> KeyRing:
    entries: list[ApiKey] = []
    identities: list[tuple[str, Tenant]] = []  # client-certificate SANs (gateway.security.tls)
    known = frozenset(frozenset(r.tags) for r in config.regions)  # a narrowing's reach
    for t in config.tenants:
        residency = (
            UNRESTRICTED if t.residency is None else Residency(frozenset(t.residency), known=known)
        )
        tenant = Tenant(
            t.name,
            residency,
            None if t.models is None else frozenset(t.models),
            t.cost_weight,
            t.explain,
        )
        entries.extend(
            ApiKey(key.digests(environ), tenant, key.name or "", key.expires) for key in t.api_keys
        )
        identities.extend((identity, tenant) for identity in t.identities)
    return KeyRing(entries, identities)
