"""The composition root: what a gateway process is made of, and one request's path through it.

:func:`build` turns one validated config into the :class:`Runtime` (everything
a request reads: snapshot, keys, providers, breakers, budgets, metrics) and
the one :class:`Pipeline` every front end calls. ``Gateway.start``
(``gateway/app/server.py``) then attaches the control plane to that runtime
(``gateway/app/wiring.py``: store, tenant limiter, canary and shadow taps),
makes its :func:`reloader` and starts :func:`start_discovery`. Neither the
pipeline's stages nor the reloader nor discovery sees the Runtime: each is
given here the getters, setters and parts it uses.

The stages of one request, in order, and the module that owns each (the
``Pipeline``, ``gateway/pipeline/core.py``, composes them; :func:`pipeline`
below gives each stage only what it reads):

==============  =====================================================================
stage           owner
==============  =====================================================================
edge checks     the front end's wire format: ``gateway/http/api.py`` (``admit``:
                draining, one API key), body limits ``gateway/http/body.py``,
                validation ``gateway/http/schema.py``; gRPC ``gateway/grpc/service.py``.
                Shared by both:
                ``gateway/pipeline/edge.py`` (the caller behind a key or a client
                certificate, residency narrowing). A refusal is answered by
                ``gateway/http/refusal.py`` (gRPC: ``gateway/grpc/status.py``)
plan            ``gateway/pipeline/plan.py`` → ``routing/router.py`` (pure: snapshot
                + signals + request → ``Plan``)
admission       ``gateway/pipeline/admit.py`` gives the execution its tenant's
                ``failover.executor.Admission`` (``gateway/control/limits.py``,
                ``TenantAdmission``): admitted before the first attempt (429),
                released when the execution closes
execute         ``failover/executor.py`` (attempts, hedges, rounds, resumption),
                deadlines ``failover/watchdog.py``, breakers ``failover/health.py``
encode          ``gateway/pipeline/encode.py`` (pass the upstream's bytes through?);
                HTTP ``gateway/http/streaming.py`` (SSE or one JSON body) with
                ``gateway/http/chunks.py``, embeddings and responses in their own
                route modules; gRPC ``gateway/grpc/convert.py``
report          ``gateway/pipeline/report.py`` (``serving``, ``first_token``,
                ``refused``): metrics, access log, traces, then the request taps
                (canary, usage, shadow)
==============  =====================================================================
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from failover.breaker import BreakerPolicy
from failover.budget import RetryBudget
from failover.executor import Admission, Budgets
from failover.health import BackendHealth, HealthPolicy
from failover.health_check import HealthCheckPolicy
from failover.outlier import EjectionPolicy
from failover.policy import FailoverPolicy, TimeoutPolicy
from failover.probing import Prober
from gateway.app.reload import Applied, Reloader, counted
from gateway.app.runtime import Live, Runtime, backend_specs, keyring_from, snapshot_from
from gateway.config.cloud import DiscoveryConfig
from gateway.config.model import Config, ConfigError
from gateway.control.discovery import Discovery, catalog_from
from gateway.observe.access_log import AccessLog
from gateway.observe.metrics import Metrics
from gateway.observe.tracing import Tracing
from gateway.observe.transfer import TransferPricing
from gateway.pipeline.admit import Admitter
from gateway.pipeline.core import Pipeline
from gateway.pipeline.edge import Authenticator
from gateway.pipeline.plan import Planner
from gateway.pipeline.report import Reporter
from gateway.security.admin_tokens import admin_tokens_from
from regions.inventory import BackendSpec
from regions.provider import Provider
from regions.registry import SessionPool, build_provider

if TYPE_CHECKING:
    from regions.discovery.base import Source


@dataclass(frozen=True, slots=True)
class Built:
    runtime: Runtime
    pipeline: Pipeline


async def build(config: Config, environ: Mapping[str, str] | None = None) -> Built:
    """Inside the event loop that will serve (the upstream sessions bind to it)."""
    runtime = await build_runtime(config, environ)
    return Built(runtime, pipeline(runtime))


def pipeline(rt: Runtime, clock: Callable[[], float] = time.monotonic) -> Pipeline:
    """The stages over ``rt``, each given what it reads. Getters for what is swapped
    after build (a reload: key ring, providers; the composer: snapshot; the control
    plane's attach: limiter, shadow); the fixed parts themselves."""

    live = rt.live

    def admission(tenant: str) -> Admission | None:
        limiter = live.limiter
        return None if limiter is None else limiter.admission(tenant)

    return Pipeline(
        Authenticator(lambda: live.keyring),
        Planner(rt.router, lambda: live.snapshot, rt.health, clock),
        Admitter(
            lambda: live.providers,
            admission,
            policy=rt.policy,
            health=rt.health,
            budgets=rt.budgets,
        ),
        Reporter(
            rt.metrics,
            rt.access_log,
            rt.lifecycle,
            taps=rt.taps,
            shadow=lambda: live.shadow,
            snapshot=lambda: live.snapshot,
            clock=clock,
            transfer=TransferPricing(rt.config.cost) if rt.config.cost.region else None,
        ),
        rt.lifecycle,
    )


async def build_runtime(config: Config, environ: Mapping[str, str] | None = None) -> Runtime:
    """Must run inside the event loop that will serve (sessions bind to it)."""
    env = os.environ if environ is None else environ
    keyring = keyring_from(config, env)
    admin_digest = config.admin.token.digests(env) if config.admin.token else None
    admin_tokens = admin_tokens_from(config.admin, env)
    policy = failover_policy(config)
    pool = SessionPool(policy.timeouts.connect, max_event_bytes=config.limits.max_event_bytes)
    providers: dict[str, Provider] = {}
    for spec in backend_specs(config):
        try:
            providers[spec.name] = build_provider(spec, pool)
        except LookupError as exc:
            await pool.close()
            raise ConfigError(f"backend {spec.name}: {exc}") from None
    f = config.failover
    b = f.breaker
    metrics = Metrics()
    health = BackendHealth(
        HealthPolicy(
            breaker=BreakerPolicy(
                window_size=b.window_size,
                minimum_calls=b.minimum_calls,
                failure_rate=b.failure_rate,
                slow_call_s=b.slow_call_s,
                slow_call_rate=b.slow_call_rate,
                open_s=b.open_s,
                max_open_s=max(b.max_open_s, b.open_s),
                half_open_probes=b.half_open_probes,
                max_half_open_s=b.max_half_open_s,
            ),
            ejection=EjectionPolicy(**f.ejection.model_dump()),
        ),
        events=metrics,
    )
    specs = backend_specs(config)
    health.track(specs)
    metrics.track(specs, (m.name for m in config.models), config.observability)
    runtime = Runtime(
        Live(
            config=config,
            snapshot=snapshot_from(config),
            keyring=keyring,
            admin_digest=admin_digest,
            providers=providers,
            admin_tokens=admin_tokens,
        ),
        policy=policy,
        health=health,
        budgets=Budgets(
            RetryBudget(f.retry_budget_ratio, f.retry_budget_min_per_s),
            RetryBudget(f.hedge_budget_ratio, 1.0),
        ),
        metrics=metrics,
        pool=pool,
        access_log=AccessLog(
            config.observability.access_log, on_drop=metrics.access_log_dropped.inc
        ),
        tracing=Tracing(config.observability.tracing)
        if config.observability.tracing.enabled
        else None,
    )
    checks = health_checks(config)
    if checks is not None:
        runtime.live.prober = Prober(providers, health, checks)
        runtime.live.prober.start()
    return runtime


def health_checks(config: Config) -> HealthCheckPolicy | None:
    """``failover.health_checks`` as the probers' policy; None when they are off."""
    hc = config.failover.health_checks
    if not hc.enabled:
        return None
    return HealthCheckPolicy(
        interval_s=hc.interval_s,
        timeout_s=hc.timeout_s,
        unhealthy_threshold=hc.unhealthy_threshold,
        healthy_threshold=hc.healthy_threshold,
    )


def reloader(rt: Runtime, path: str, environ: Mapping[str, str] | None = None) -> Reloader:
    """The reloads of ``rt`` from the config file at ``path`` (Gateway.start)."""
    live = rt.live
    live.providers = counted(live.providers, live.config)

    def apply(new: Applied) -> None:
        live.config = new.config
        live.keyring = new.keyring
        live.admin_digest = new.admin_digest
        live.admin_tokens = new.admin_tokens
        live.providers = new.providers

    checks = health_checks(rt.config)  # a restart-only section: the same after a reload

    async def reprobe(static: Mapping[str, Provider]) -> None:
        assert checks is not None
        if live.prober is not None:
            await live.prober.stop()
        live.prober = Prober(dict(static), rt.health, checks)
        live.prober.start()

    assert rt.pool is not None, "build_runtime always makes the pool"
    return Reloader(
        path,
        environ,
        config=lambda: live.config,
        providers=lambda: live.providers,
        apply=apply,
        snapshot=rt.snapshots.config,
        pool=rt.pool,
        health=rt.health,
        retire_after_s=rt.policy.timeouts.total + 1.0,
        limiter=lambda: live.limiter,
        reprobe=reprobe if checks is not None else None,
        control=lambda: live.control,
        track=lambda added: rt.metrics.track(
            added, (m.name for m in live.config.models), live.config.observability
        ),
    )


def discovery(
    rt: Runtime, config: DiscoveryConfig, sources: Sequence[Source] | None = None
) -> Discovery:
    """Discovery over ``rt``: it swaps the providers dict and feeds the snapshot
    composer its backends, in one step."""

    live = rt.live

    def publish(providers: dict[str, Provider], found: tuple[BackendSpec, ...]) -> None:
        live.providers = providers
        rt.snapshots.discovered(found)

    return Discovery(
        config,
        catalog=catalog_from(rt.config),
        checks=health_checks(rt.config),
        timeouts=rt.policy.timeouts,
        max_event_bytes=rt.config.limits.max_event_bytes,
        health=rt.health,
        metrics=rt.metrics,
        providers=lambda: live.providers,
        publish=publish,
        sources=sources,
    )


async def start_discovery(rt: Runtime) -> Discovery | None:
    """Start discovery when the config has a ``discovery:`` section (Gateway.start,
    after the control plane is attached: discovered backends join its overlay)."""
    if rt.config.discovery is None:
        return None
    found = discovery(rt, rt.config.discovery)
    await found.start()
    return found


def failover_policy(config: Config) -> FailoverPolicy:
    t, f = config.timeouts, config.failover
    return FailoverPolicy(
        timeouts=TimeoutPolicy(t.connect_s, t.first_token_s, t.idle_s, t.total_s),
        resume=f.resume,
        max_resumptions=f.max_resumptions,
        hedge=f.hedge,
        max_retry_after_s=f.max_retry_after_s,
    )
