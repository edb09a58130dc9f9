"""``observability``: the access log and the per-model SLOs (docs/observability.md)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from gateway.config.base import Strict


class AccessLogConfig(Strict):
    """One line per request on the ``meridian.access`` logger, formatted off the loop."""

    enabled: bool = True
    format: Literal["json", "logfmt", "text"] = "json"
    # log: the meridian.access logger (INFO); stdout, stderr, or a file path (appended)
    destination: str = Field("log", min_length=1)
    # The share of successful requests logged; every refusal and failure is.
    sample: float = Field(1.0, ge=0, le=1)
    # Lines waiting for the writer; beyond it lines are dropped and counted.
    queue: int = Field(10_000, gt=0, le=1_000_000)
    tenants_off: frozenset[str] = frozenset()  # tenants whose requests are not logged


TTFT_QUANTILE = 0.95  # the TTFT objective is on p95: 95% of first tokens within the threshold


class SloConfig(Strict):
    """A model's objectives, measured at the gateway."""

    ttft_p95_s: float = Field(0.2, gt=0)  # p95 of the time to first token below this
    availability: float = Field(0.999, gt=0, lt=1)  # share of requests not failed by us


class TracingConfig(Strict):
    """OpenTelemetry spans (gateway.observe.tracing). Off: only the client's traceparent is
    passed on to the backends, unchanged."""

    enabled: bool = False
    # OTLP/HTTP traces endpoint, e.g. http://collector:4318/v1/traces; unset: no export
    otlp_endpoint: str | None = Field(None, min_length=1)
    service_name: str = Field("meridian", min_length=1)
    sample: float = Field(1.0, ge=0, le=1)  # share of traces started here (a parent's choice wins)


class ObservabilityConfig(Strict):
    access_log: AccessLogConfig = AccessLogConfig()
    tracing: TracingConfig = TracingConfig()
    slo_default: SloConfig = SloConfig()
    slo: dict[str, SloConfig] = {}  # per model name; unset models get slo_default

    def slo_for(self, model: str) -> SloConfig:
        return self.slo.get(model, self.slo_default)
