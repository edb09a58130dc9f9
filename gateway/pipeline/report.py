"""The report stage: every request counted, logged and traced once, when it ends.

:meth:`Reporter.serving` wraps an execution from admission to its end: it
tracks the stream for graceful shutdown (``gateway/app/lifecycle.py``), then
records metrics, the access-log line and the trace, and hands the execution
to the request taps (canary counters, shadow comparison). A request refused
before execution is recorded by :meth:`Reporter.refused`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from failover.executor import Execution
from gateway.app.lifecycle import Lifecycle
from gateway.observe import tracing
from gateway.observe.access_log import KEY_NAME, AccessLog
from gateway.observe.metrics import OTHER, Inc, Metrics
from gateway.observe.transfer import TransferPricing
from routing.snapshot import RoutingSnapshot

_STATUS_REASON = {499: "client_closed", 500: "internal_error", 503: "shutting_down"}

Tap = Callable[[Execution, int], None]


class Mirror(Protocol):
    """The shadow mirror, as the report stage sees it (``gateway/shadow/mirror.py``)."""

    def offer(self, execution: Execution) -> None: ...


@dataclass(slots=True)
class Outcome:
    """What a front end tells the pipeline about how the request ended."""

    status: int = 200
    reason: str = ""  # the error code the client got, when it is not a 200
    # Bytes of the request body and the response, for cross-region transfer (config cost)
    request_bytes: int = 0
    response_bytes: int = 0


class Reporter:
    __slots__ = (
        "_access",
        "_clock",
        "_lifecycle",
        "_metrics",
        "_shadow",
        "_snapshot",
        "_taps",
        "_transfer",
    )

    def __init__(
        self,
        metrics: Metrics,
        access_log: AccessLog | None,
        lifecycle: Lifecycle,
        *,
        taps: Sequence[Tap],
        shadow: Callable[[], Mirror | None],
        snapshot: Callable[[], RoutingSnapshot],
        clock: Callable[[], float],
        transfer: TransferPricing | None = None,
    ) -> None:
        self._metrics = metrics
        self._transfer = transfer  # None: the gateway's region is unknown, nothing counted
        self._access = access_log
        self._lifecycle = lifecycle
        self._taps = taps  # the control plane appends its taps after build
        self._shadow = shadow
        self._snapshot = snapshot
        self._clock = clock

    def model_label(self, model: str) -> str:
        """A model name as a metric label: configured names only (bounded)."""
        return model if model in self._snapshot().models else OTHER

    def refused(
        self,
        request_id: str,
        status: int,
        reason: str,
        *,
        tenant: str = "",
        model: str = "",
        client: str = "",
        arrived: float | None = None,
    ) -> None:
        """A request answered before execution (400, 401, 403, 404, 413, 503...):
        counted and logged like every other."""
        model = self.model_label(model) if model else ""
        self._metrics.refused(model=model, status=status, reason=reason, tenant=tenant)
        access = self._access
        logged = access is not None and access.wants(tenant, status)
        if not (logged or tracing.active()):
            return
        duration = 0.0 if arrived is None else self._clock() - arrived
        record: dict[str, object] = {
            "request_id": request_id,
            "tenant": tenant,
            "key": KEY_NAME.get() if tenant else "",
            "model": model,
            "status": status,
            "reason": reason,
            "duration_ms": round(duration * 1000, 3),
            "client": client,
        }
        tracing.finish(record, None)
        if logged and access is not None:
            access.write(record)

    def serving(
        self, execution: Execution, *, client: str = "", arrived: float | None = None
    ) -> _Serving:
        """Track the request for shutdown and record its metrics and access-log line
        when it ends; then end its serving attempt if the front end never streamed
        it to the end (the client left, or a write failed, between the first token
        and the stream). ``arrived``: when the request came in (default: now)."""
        model = execution.request.model
        in_flight = self._metrics.in_flight_of(model)
        started = self._clock() if arrived is None else arrived
        return _Serving(
            execution,
            in_flight,
            self._lifecycle.tracking(),
            self._record,
            self._taps,
            started,
            client,
        )

    def first_token(self, execution: Execution, elapsed: float) -> None:
        serving = execution.serving
        if serving is None:
            return
        shadow = self._shadow()
        if shadow is not None:
            shadow.offer(execution)  # admitted: a copy may go (never awaited)
        # Overhead: the part of the TTFT not spent waiting for the serving backend.
        backend_wait = (serving.first_token or serving.started) - serving.started
        self._metrics.first_token(execution, serving, elapsed, elapsed - backend_wait)

    def _record(self, execution: Execution, outcome: Outcome, started: float, client: str) -> None:
        now = self._clock()
        elapsed = now - started
        status = outcome.status
        request = execution.request
        attempts = execution.attempts
        serving = execution.serving or (attempts[-1] if attempts else None)
        failure = ""
        hedged = False
        for attempt in attempts:  # one pass: the last failure, and whether it hedged
            if attempt.failure:
                failure = attempt.failure.failure.value
            hedged = hedged or attempt.kind == "hedge"
        reason = (
            "ok" if status == 200 else outcome.reason or failure or _STATUS_REASON.get(status, "")
        )
        usage = execution.usage
        price = serving.backend.price if serving is not None else None
        cost = 0.0
        if usage is not None and price is not None:
            meter = price.meter
            if meter is not None and execution.serving is not None:
                # A per-hour price's capacity (regions.throughput): before the cost, so
                # this request's spend and the usage tap's agree.
                meter.observe(usage.completion_tokens, execution.serving.started, now)
                if meter.capacity is not None:
                    self._metrics.measured(execution.serving.backend, meter.capacity)
            cost = price.cost(usage.prompt_tokens, usage.completion_tokens)
        transfer = None
        if self._transfer is not None and execution.serving is not None:  # a backend answered
            transfer = self._transfer.price(
                execution.serving.backend.region, outcome.request_bytes, outcome.response_bytes
            )
            if transfer is not None:
                self._metrics.transferred(request.tenant, transfer)
        self._metrics.finished(
            execution,
            status=status,
            reason=reason,
            tenant=request.tenant,
            elapsed=elapsed,
            cost=cost,
        )
        ttft: float | None = None
        if serving is not None and serving.first_token is not None and execution.serving:
            ttft = serving.first_token - started
            completion = usage.completion_tokens if usage is not None else 0
            if status == 200 and completion > 1:
                pace = (now - serving.first_token) / (completion - 1)
                self._metrics.output_pace(request.model, serving.backend, pace)
        access = self._access
        logged = access is not None and access.wants(request.tenant, status)
        if not (logged or tracing.active()):
            return
        record: dict[str, object] = {
            "request_id": request.request_id,
            "tenant": request.tenant,
            "key": KEY_NAME.get(),
            "model": request.model,
            "version": execution.plan.version,
            "backend": serving.backend.name if serving else "",
            "region": serving.backend.region.name if serving else "",
            "status": status,
            "reason": reason,
            "failure": failure,
            "attempts": len(attempts),
            "hedged": hedged,
            "resumed": execution.resumptions,
            "stream": request.stream,
            "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "duration_ms": round(elapsed * 1000, 3),
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "cost_usd": round(cost, 9),
            "residency": request.residency.describe(),
            "client": client,
        }
        if transfer is not None:
            record["transfer_bytes"] = transfer.request_bytes + transfer.response_bytes
            record["transfer_usd"] = round(transfer.usd, 9)
        tracing.finish(record, execution, request.kind.value)
        if logged and access is not None:
            access.write(record)


class _Serving:
    """:meth:`Reporter.serving`'s context: a class, not ``@asynccontextmanager``, whose
    async generator and wrappers cost a dozen Python calls on every request."""

    __slots__ = (
        "_client",
        "_execution",
        "_in_flight",
        "_record",
        "_started",
        "_taps",
        "_tracking",
        "outcome",
    )

    def __init__(
        self,
        execution: Execution,
        in_flight: Inc,
        tracking: AbstractContextManager[object],
        record: Callable[[Execution, Outcome, float, str], None],
        taps: Sequence[Tap],
        started: float,
        client: str,
    ) -> None:
        self._execution = execution
        self._in_flight = in_flight
        self._tracking = tracking
        self._record = record
        self._taps = taps
        self._started = started
        self._client = client
        self.outcome = Outcome()

    async def __aenter__(self) -> Outcome:
        self._tracking.__enter__()
        self._in_flight(1)
        return self.outcome

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome = self.outcome
        execution = self._execution
        try:
            self._tracking.__exit__(kind, exc, tb)
            if exc is not None and outcome.status == 200:
                # the client went away; else a fault: the edge answers 500 (or INTERNAL)
                gone = isinstance(exc, (asyncio.CancelledError, ConnectionResetError))
                outcome.status = 499 if gone else 500
        finally:
            self._in_flight(-1)
            self._record(execution, outcome, self._started, self._client)
            for tap in self._taps:
                tap(execution, outcome.status)
            await execution.aclose()
