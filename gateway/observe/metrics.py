"""Prometheus metrics, aggregated per request (never per chunk).

Each gateway owns its registry (no module globals), so tests and several
gateways in one process do not collide. Label values are bounded by config:
model, version, backend, region, tenant (configured tenants only, never a key)
and a small set of outcomes; a model name a client sent that the config does
not know is counted as ``other``.

With ``meridian serve --workers N`` the parent sets ``PROMETHEUS_MULTIPROC_DIR``
before it spawns the workers: every worker then writes its values to files in
that directory and any worker's scrape reads them all (prometheus-client's
multiprocess mode), so one scrape covers the node. Names follow the OTel GenAI
semantic conventions where one fits (docs/observability.md).
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from failover.breaker import BreakerState
from failover.executor import Attempt, Execution
from gateway.config.observability import TTFT_QUANTILE, ObservabilityConfig
from gateway.observe.transfer import Transfer
from regions.inventory import BackendSpec

_BREAKER_VALUE = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# TTFT also has the SLO's own bound (0.2 s) and its neighbours, so p95 < 200 ms is exact.
_TTFT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2.5, 5, 10, 30, 60)
# Per output token and gateway overhead: milliseconds matter.
_FINE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)

OTHER = "other"  # a model name the config does not know (a client's typo): one label value

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

Inc = Callable[[float], None]  # adds to one series' value (under its own lock)
Observe = Callable[[float], None]


class _Children:
    """A counter's children's increments by their label values as passed.

    ``labels()`` checks and converts the values and takes a lock on every call
    (~1.6 µs), and ``Counter.inc`` checks again that the child has its labels and
    that the amount is not negative; a request reaches a dozen series. So this
    holds each child's value's own ``inc`` (prometheus-client's value class, the
    one the exposition reads, in multiprocess mode too): one call per increment.
    The amounts are counts, tokens and dollars, never negative. It holds only
    children the metric holds too, so it is bounded as they are (label values
    come from the config, above); nothing removes a child."""

    __slots__ = ("_children", "_labels")

    def __init__(self, metric: Counter | Gauge) -> None:
        self._labels: Callable[..., Counter | Gauge] = metric.labels
        self._children: dict[tuple[str, ...], Inc] = {}

    def __call__(self, *values: str) -> Inc:
        try:
            return self._children[values]
        except KeyError:
            inc: Inc = self._labels(*values)._value.inc
            self._children[values] = inc
            return inc


class _Buckets:
    """One histogram child's observation without ``Histogram.observe``'s checks and
    its walk over the bounds: the bucket is found by bisection, and the sum and that
    bucket's count are added to as ``observe`` adds to them (identical values)."""

    __slots__ = ("_bounds", "_buckets", "_sum")

    def __init__(self, child: Histogram) -> None:
        self._sum: Inc = child._sum.inc
        self._bounds = tuple(child._upper_bounds)  # ascending, the last +Inf
        self._buckets: tuple[Inc, ...] = tuple(b.inc for b in child._buckets)

    def observe(self, amount: float) -> None:
        self._sum(amount)
        bounds = self._bounds
        i = bisect.bisect_left(bounds, amount)
        if i < len(bounds) and amount <= bounds[i]:  # NaN: no bucket, as observe()
            self._buckets[i](1)


class _Histograms:
    """A histogram's children's observers by their label values as passed (as
    :class:`_Children`)."""

    __slots__ = ("_children", "_labels")

    def __init__(self, metric: Histogram) -> None:
        self._labels: Callable[..., Histogram] = metric.labels
        self._children: dict[tuple[str, ...], Observe] = {}

    def __call__(self, *values: str) -> Observe:
        try:
            return self._children[values]
        except KeyError:
            observe = self._children[values] = _Buckets(self._labels(*values)).observe
            return observe


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        r = self.registry
        self.requests = Counter(
            "meridian_requests",
            "Client requests by outcome, refused ones included (reason: ok, the error code "
            "or the failure class)",
            ["model", "version", "backend", "region", "status", "tenant", "reason"],
            registry=r,
        )
        self.ttft = Histogram(
            "meridian_time_to_first_token_seconds",
            "Time from request arrival to the first token sent to the client "
            "(gen_ai.server.time_to_first_token)",
            ["model", "version", "backend", "region"],
            buckets=_TTFT_BUCKETS,
            registry=r,
        )
        self.time_per_output_token = Histogram(
            "meridian_time_per_output_token_seconds",
            "Time per output token after the first (gen_ai.server.time_per_output_token)",
            ["model", "backend", "region"],
            buckets=_FINE_BUCKETS,
            registry=r,
        )
        self.overhead = Histogram(
            "meridian_gateway_overhead_seconds",
            "Time to first token not spent in the serving attempt: edge, routing, "
            "admission, failed attempts before it",
            ["model", "backend", "region"],
            buckets=_FINE_BUCKETS,
            registry=r,
        )
        self.spend = Counter(
            "meridian_spend_usd",
            "US dollars spent at the backends' configured prices",
            ["tenant", "model", "backend"],
            registry=r,
        )
        # Cross-region transfer (config cost, gateway.observe.transfer): bytes by the
        # direction they flow, spend by the gateway's and the serving backend's region.
        self.transfer_bytes = Counter(
            "meridian_transfer_bytes",
            "Request and response bytes between the gateway's region and the serving backend's",
            ["from_region", "to_region"],
            registry=r,
        )
        self.transfer_spend = Counter(
            "meridian_transfer_spend_usd",
            "US dollars of cross-region transfer at the configured price per GB",
            ["tenant", "gateway_region", "backend_region"],
            registry=r,
        )
        self.duration = Histogram(
            "meridian_request_duration_seconds",
            "Time from request arrival to the end of the response",
            ["model", "backend", "region"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.tokens = Counter(
            "meridian_tokens",
            "Tokens by direction (prompt, completion): gen_ai.client.token.usage's "
            "gen_ai.token.type input and output",
            ["model", "backend", "direction", "tenant"],
            registry=r,
        )
        self.in_flight = Gauge(
            "meridian_in_flight_requests",
            "Requests being served",
            ["model"],
            registry=r,
            multiprocess_mode="livesum",
        )
        self.attempts = Counter(
            "meridian_backend_attempts",
            "Backend attempts by outcome (ok or a failure class)",
            ["backend", "region", "outcome"],
            registry=r,
        )

        self.breaker = Gauge(
            "meridian_breaker_state",
            "Circuit breaker per backend: 0 closed, 1 half-open, 2 open",
            ["backend", "region"],
            registry=r,
            multiprocess_mode="max",
        )
        self.capacity = Gauge(
            "meridian_backend_capacity_tokens_per_second",
            "A per-hour priced backend's output capacity, its price per token's divisor: "
            "the decayed peak measured by this process, at least price.tokens_per_s",
            ["backend", "region"],
            registry=r,
            multiprocess_mode="max",
        )
        self.ejections = Counter(
            "meridian_ejections", "Outlier ejections", ["backend", "region"], registry=r
        )
        self.failover_events = Counter(
            "meridian_failover_events",
            "hedged, resumed (mid-stream), budget_exhausted (a retry refused by the budget)",
            ["event"],
            registry=r,
        )

        self.control_degraded = Gauge(
            "meridian_control_plane_degraded",
            "1 while the control-plane store is unreachable (serving on the last snapshot)",
            registry=r,
            multiprocess_mode="max",
        )
        self.control_revision = Gauge(
            "meridian_control_plane_revision",
            "Store revision of the routing snapshot",
            registry=r,
            multiprocess_mode="min",
        )
        # SLOs (docs/observability.md): the objectives from the config, and each
        # request's TTFT judged against its model's own threshold at the gateway, so
        # one set of recording rules and alerts (deploy/prometheus) serves every model.
        self.slo_objective = Gauge(
            "meridian_slo_objective",
            "A model's objective: availability (share of requests not failed by the gateway "
            "or its backends) or ttft (share of first tokens within the threshold)",
            ["model", "slo"],
            registry=r,
            multiprocess_mode="max",
        )
        self.slo_ttft_threshold = Gauge(
            "meridian_slo_ttft_threshold_seconds",
            "A model's TTFT objective threshold",
            ["model"],
            registry=r,
            multiprocess_mode="max",
        )
        self.slo_ttft = Counter(
            "meridian_slo_ttft_requests",
            "First tokens judged against the model's TTFT threshold (good: true or false)",
            ["model", "good"],
            registry=r,
        )
        self._ttft_threshold: dict[str, float] = {}
        # the series every request updates, looked up without labels() (_Children)
        self._requests = _Children(self.requests)
        self._ttft = _Histograms(self.ttft)
        self._overhead = _Histograms(self.overhead)
        self._slo_ttft = _Children(self.slo_ttft)
        self._pace = _Histograms(self.time_per_output_token)
        self._duration = _Histograms(self.duration)
        self._tokens = _Children(self.tokens)
        self._spend = _Children(self.spend)
        self._transfer_bytes = _Children(self.transfer_bytes)
        self._transfer_spend = _Children(self.transfer_spend)
        self._attempts = _Children(self.attempts)
        self._in_flight = _Children(self.in_flight)
        self.access_log_dropped = Counter(
            "meridian_access_log_dropped",
            "Access-log lines dropped because the writer fell behind",
            registry=r,
        )
        self.rate_limited = Counter(
            "meridian_rate_limited",
            "Requests refused by tenant limits (429)",
            ["tenant", "reason"],
            registry=r,
        )
        # Shadow traffic (gateway.shadow): copies sent, dropped (reason), compared pairs.
        self.shadow_mirrored = Counter(
            "meridian_shadow_mirrored",
            "Requests copied to a shadow candidate",
            ["model"],
            registry=r,
        )
        self.shadow_dropped = Counter(
            "meridian_shadow_dropped",
            "Shadow copies not sent: concurrency, queue, tokens (caps) or residency",
            ["model", "reason"],
            registry=r,
        )
        self.shadow_compared = Counter(
            "meridian_shadow_compared", "Primary/shadow pairs compared", ["model"], registry=r
        )
        self.shadow_disagreeing = Counter(
            "meridian_shadow_disagreeing",
            "Compared pairs whose texts differ or where exactly one side failed",
            ["model"],
            registry=r,
        )

    def track(
        self,
        backends: Iterable[BackendSpec],
        models: Iterable[str] = (),
        observability: ObservabilityConfig | None = None,
    ) -> None:
        """Every breaker, ejection, attempt and SLO series from the start (a closed
        breaker reads 0 before its first change), so alerts and dashboards see them.
        Also for backends discovery adds; a series already there keeps its value."""
        for b in backends:
            region = b.region.name
            self.breaker.labels(b.name, region)  # a new child reads 0: closed
            self.ejections.labels(b.name, region)
            self.attempts.labels(b.name, region, "ok")
            meter = b.price.meter
            if meter is not None and meter.capacity is not None:
                self.capacity.labels(b.name, region).set(meter.capacity)
        for event in ("hedged", "resumed", "budget_exhausted"):
            self.failover_events.labels(event)
        slos = observability or ObservabilityConfig()
        for model in models:
            self.in_flight.labels(model)
            slo = slos.slo_for(model)
            self._ttft_threshold[model] = slo.ttft_p95_s
            self.slo_objective.labels(model, "availability").set(slo.availability)
            self.slo_objective.labels(model, "ttft").set(TTFT_QUANTILE)
            self.slo_ttft_threshold.labels(model).set(slo.ttft_p95_s)
            self.slo_ttft.labels(model, "true")
            self.slo_ttft.labels(model, "false")

    def finished(
        self,
        execution: Execution,
        *,
        status: int,
        reason: str,
        tenant: str,
        elapsed: float,
        cost: float,
    ) -> None:
        """One request that reached execution, when it ends."""
        model = execution.request.model
        # The attempt that served (after a hedge, not necessarily the last one
        # started); for a request nobody served, the last attempt tried.
        serving = execution.serving or (execution.attempts[-1] if execution.attempts else None)
        name = serving.backend.name if serving else ""
        region = serving.backend.region.name if serving else ""
        self._requests(model, execution.plan.version, name, region, str(status), tenant, reason)(1)
        if serving is None:
            return
        self._duration(model, name, region)(elapsed)
        usage = execution.usage
        if usage is None:
            return
        self._tokens(model, name, "prompt", tenant)(usage.prompt_tokens)
        self._tokens(model, name, "completion", tenant)(usage.completion_tokens)
        self._spend(tenant, model, name)(cost)  # a free backend's series reads 0

    def transferred(self, tenant: str, transfer: Transfer) -> None:
        here, there = transfer.source, transfer.target
        self._transfer_bytes(here, there)(transfer.request_bytes)
        self._transfer_bytes(there, here)(transfer.response_bytes)
        self._transfer_spend(tenant, here, there)(transfer.usd)

    def first_token(
        self, execution: Execution, attempt: Attempt, ttft: float, overhead: float
    ) -> None:
        backend = attempt.backend
        model, region = execution.request.model, backend.region.name
        self._ttft(model, execution.plan.version, backend.name, region)(ttft)
        self._overhead(model, backend.name, region)(max(0.0, overhead))
        threshold = self._ttft_threshold.get(model)
        if threshold is not None:
            self._slo_ttft(model, "true" if ttft <= threshold else "false")(1)

    def output_pace(self, model: str, backend: BackendSpec, seconds_per_token: float) -> None:
        self._pace(model, backend.name, backend.region.name)(seconds_per_token)

    def in_flight_of(self, model: str) -> Inc:
        """Adds to a model's in-flight gauge: 1 when a request starts, -1 when it ends."""
        return self._in_flight(model)

    def refused(self, *, model: str, status: int, reason: str, tenant: str) -> None:
        """A request answered before any backend was tried (400, 401, 403, 404, 413...)."""
        self._requests(model, "", "", "", str(status), tenant, reason)(1)

    def attempt_finished(self, attempt: Attempt) -> None:
        self._attempts(attempt.backend.name, attempt.backend.region.name, attempt.outcome)(1)

    def breaker_changed(self, backend: BackendSpec, state: BreakerState) -> None:
        self.breaker.labels(backend.name, backend.region.name).set(_BREAKER_VALUE[state])

    def measured(self, backend: BackendSpec, tokens_per_s: float) -> None:
        self.capacity.labels(backend.name, backend.region.name).set(tokens_per_s)

    def ejected(self, backend: BackendSpec, until: float) -> None:
        self.ejections.labels(backend.name, backend.region.name).inc()

    def count(self, event: str) -> None:
        self.failover_events.labels(event).inc()

    def exposition(self) -> bytes:
        if self.multiprocess:
            # Every worker's values (files in the shared directory), not just this one's.
            node = CollectorRegistry()
            MultiProcessCollector(node)  # type: ignore[no-untyped-call]
            return generate_latest(node)
        return generate_latest(self.registry)
