"""Tracing: W3C trace context in and out, OpenTelemetry spans when configured.

Off (the default), the only work per request is reading the client's
``traceparent``: a valid one (and its ``tracestate``) goes to every backend
attempt unchanged, so the gateway is transparent to the client's trace. No
OpenTelemetry code is imported.

On (``observability.tracing.enabled``), each request is a SERVER span, child of
the client's ``traceparent`` when it sent one, and the backends get the request
span as their parent. When the request ends, its routing and every attempt
(primary, retry, hedge, resume) are added as child spans with the times the
executor measured, so nothing is done per attempt on the hot path. Attributes
follow the OTel GenAI semantic conventions (``gen_ai.operation.name``,
``gen_ai.request.model``, ``gen_ai.response.model``, ``gen_ai.usage.*``,
``error.type``) plus ``meridian.*`` for the gateway's own facts. Spans go to an
OTLP/HTTP collector when ``otlp_endpoint`` is set (batched, off the loop).
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gateway.config.observability import TracingConfig
from regions.trace_context import TRACE_HEADERS

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span, Tracer

    from failover.executor import Execution
    from routing.plan import Plan

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_TRACESTATE = re.compile(r"^[\x20-\x7e]{0,512}$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16

_OPERATION = {"chat": "chat", "completion": "text_completion", "embedding": "embeddings"}


def valid_traceparent(value: str | None) -> bool:
    """W3C Trace Context §3.2: version 00 exactly, a later version may add fields;
    ff and all-zero ids are invalid."""
    if value is None:
        return False
    m = _TRACEPARENT.fullmatch(value)
    if m is None or m[1] == "ff" or (m[1] == "00" and m[5]):
        return False
    return m[2] != _ZERO_TRACE and m[3] != _ZERO_SPAN


def valid_tracestate(value: str | None) -> bool:
    return value is not None and _TRACESTATE.fullmatch(value) is not None and value.count(",") < 32


@dataclass(slots=True)
class RequestTrace:
    span: Span
    tracer: Tracer
    offset_ns: int  # epoch ns minus monotonic ns, to place the executor's times
    routed: tuple[float, float] | None = None
    attributes: dict[str, Any] = field(default_factory=dict)

    def ns(self, monotonic: float) -> int:
        return int(monotonic * 1e9) + self.offset_ns


CURRENT: ContextVar[RequestTrace | None] = ContextVar("meridian_request_trace", default=None)


class Tracing:
    """The span pipeline; built only when tracing is enabled."""

    def __init__(self, config: TracingConfig) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.config = config
        self.provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": config.service_name}),
            sampler=ParentBased(TraceIdRatioBased(config.sample)),
        )
        if config.otlp_endpoint:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.trace.export import BatchSpanProcessor

            exporter = OTLPSpanExporter(endpoint=config.otlp_endpoint)
            self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer: Tracer = self.provider.get_tracer("meridian.gateway")
        self._propagator = TraceContextTextMapPropagator()

    def begin(self, traceparent: str | None, tracestate: str | None, arrived: float) -> None:
        from opentelemetry.trace import SpanKind, set_span_in_context

        carrier: dict[str, str] = {}
        if valid_traceparent(traceparent):
            assert traceparent is not None
            carrier["traceparent"] = traceparent
            if valid_tracestate(tracestate):
                assert tracestate is not None
                carrier["tracestate"] = tracestate
        parent = self._propagator.extract(carrier) if carrier else None
        offset = time.time_ns() - time.monotonic_ns()
        span = self.tracer.start_span(
            "request",
            context=parent,
            kind=SpanKind.SERVER,
            start_time=int(arrived * 1e9) + offset,
        )
        out: dict[str, str] = {}
        self._propagator.inject(out, context=set_span_in_context(span))
        TRACE_HEADERS.set(out)
        CURRENT.set(RequestTrace(span, self.tracer, offset))

    def shutdown(self) -> None:
        self.provider.shutdown()


def begin(
    tracing: Tracing | None, traceparent: str | None, tracestate: str | None, arrived: float
) -> None:
    """At the edge, in the request's task: what its backend calls carry, and its span."""
    if tracing is not None:
        tracing.begin(traceparent, tracestate, arrived)
    elif valid_traceparent(traceparent):
        assert traceparent is not None
        headers = {"traceparent": traceparent}
        if valid_tracestate(tracestate):
            assert tracestate is not None
            headers["tracestate"] = tracestate
        TRACE_HEADERS.set(headers)


def routed(started: float, ended: float) -> None:
    trace = CURRENT.get()
    if trace is not None:
        trace.routed = (started, ended)


def active() -> bool:
    return CURRENT.get() is not None


def finish(record: Mapping[str, Any], execution: Execution | None, kind: str = "chat") -> None:
    """End the request's span with the access-log facts and add its children."""
    trace = CURRENT.get()
    if trace is None:
        return
    CURRENT.set(None)
    from opentelemetry.trace import SpanKind, Status, StatusCode, set_span_in_context

    span = trace.span
    now = time.monotonic()
    operation = _OPERATION.get(kind, kind)
    model = str(record.get("model") or "")
    status = int(record.get("status") or 0)
    span.update_name(f"{operation} {model}".strip())
    attrs: dict[str, Any] = {
        "gen_ai.operation.name": operation,
        "gen_ai.request.model": model,
        "http.response.status_code": status,
        "meridian.request_id": str(record.get("request_id") or ""),
        "meridian.tenant": str(record.get("tenant") or ""),
        "meridian.reason": str(record.get("reason") or ""),
    }
    for key in ("version", "backend", "region", "residency", "attempts", "resumed", "hedged"):
        if record.get(key) not in (None, ""):
            attrs[f"meridian.{key}"] = record[key]
    if record.get("prompt_tokens"):
        attrs["gen_ai.usage.input_tokens"] = record["prompt_tokens"]
    if record.get("completion_tokens"):
        attrs["gen_ai.usage.output_tokens"] = record["completion_tokens"]
    if record.get("cost_usd"):
        attrs["meridian.cost_usd"] = record["cost_usd"]
    if record.get("ttft_ms") is not None:
        attrs["meridian.ttft_ms"] = record["ttft_ms"]
    if status >= 400:
        attrs["error.type"] = str(record.get("reason") or status)
    span.set_attributes(attrs)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR, str(record.get("reason") or "")))
    parent = set_span_in_context(span)
    tracer = trace.tracer
    if execution is not None:
        if trace.routed is not None:
            route = tracer.start_span("route", context=parent, start_time=trace.ns(trace.routed[0]))
            route.set_attributes(_route_attributes(execution.plan))
            route.end(end_time=trace.ns(trace.routed[1]))
        serving = execution.serving
        for attempt in execution.attempts:
            backend = attempt.backend
            child = tracer.start_span(
                f"{operation} {backend.served_model}",
                context=parent,
                kind=SpanKind.CLIENT,
                start_time=trace.ns(attempt.started),
            )
            child.set_attributes(
                {
                    "gen_ai.operation.name": operation,
                    "gen_ai.request.model": backend.served_model,
                    "gen_ai.provider.name": backend.kind.value,
                    "meridian.attempt.kind": attempt.kind,
                    "meridian.attempt.outcome": attempt.outcome,
                    "meridian.attempt.serving": attempt is serving,
                    "meridian.backend": backend.name,
                    "meridian.region": backend.region.name,
                    "server.address": backend.url,
                }
            )
            if attempt.first_token is not None:
                child.set_attribute(
                    "meridian.ttft_ms", round((attempt.first_token - attempt.started) * 1000, 3)
                )
            if attempt.failure is not None:
                child.set_attribute("error.type", attempt.failure.failure.value)
                child.set_status(Status(StatusCode.ERROR, attempt.failure.failure.value))
            child.end(end_time=trace.ns(attempt.ended or now))
    span.end(end_time=trace.ns(now))


def _route_attributes(plan: Plan) -> dict[str, Any]:
    return {
        "meridian.version": plan.version,
        "meridian.route.candidates": [c.backend.name for c in plan.candidates],
    }
