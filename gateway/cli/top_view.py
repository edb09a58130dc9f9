"""``meridian top``'s traffic view: per backend, rates between two scrapes.

Each frame scrapes the admin ``/metrics`` (the whole node with ``--workers``)
and compares it with the previous frame: requests/s, error rate (5xx share),
TTFT p50/p95 (from the histogram's bucket increases, interpolated as
Prometheus's ``histogram_quantile`` does), completion tokens/s. The first
frame, with nothing to compare, shows the totals since the gateway started.
In-flight and breaker come from ``/admin/v1/status``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class BackendCounts:
    requests: float = 0.0
    errors: float = 0.0
    tokens: float = 0.0
    buckets: dict[float, float] = field(default_factory=dict)  # le → cumulative count


@dataclass(frozen=True, slots=True)
class Scrape:
    at: float
    backends: Mapping[str, BackendCounts]


def parse(text: str, at: float) -> Scrape:
    from prometheus_client.parser import text_string_to_metric_families  # not in a gateway

    backends: dict[str, BackendCounts] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            name = s.labels.get("backend")
            if not name:
                continue
            if s.name == "meridian_requests_total":
                counts = backends.setdefault(name, BackendCounts())
                counts.requests += s.value
                if s.labels.get("status", "").startswith("5"):
                    counts.errors += s.value
            elif s.name == "meridian_tokens_total" and s.labels.get("direction") == "completion":
                backends.setdefault(name, BackendCounts()).tokens += s.value
            elif s.name == "meridian_time_to_first_token_seconds_bucket":
                counts = backends.setdefault(name, BackendCounts())
                le = float(s.labels["le"])
                counts.buckets[le] = counts.buckets.get(le, 0.0) + s.value
    return Scrape(at, backends)


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """``histogram_quantile`` over cumulative bucket counts; None without observations."""
    bounds = sorted(buckets)
    if not bounds or buckets[bounds[-1]] <= 0:
        return None
    total = buckets[bounds[-1]]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the last finite bucket: its bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return bounds[-1]


@dataclass(frozen=True, slots=True)
class Row:
    backend: str
    region: str
    model: str
    requests_per_s: float | None  # None: the first frame (totals, not rates)
    requests: float
    error_rate: float | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    tokens_per_s: float | None
    in_flight: int
    breaker: str


def rows(previous: Scrape | None, current: Scrape, status: Mapping[str, Any]) -> list[Row]:
    out: list[Row] = []
    elapsed = current.at - previous.at if previous is not None else 0.0
    for b in sorted(status.get("backends", []), key=lambda b: (b["region"], b["name"])):
        now = current.backends.get(b["name"], BackendCounts())
        before = previous.backends.get(b["name"], BackendCounts()) if previous else None
        if before is not None and elapsed > 0:
            requests = max(0.0, now.requests - before.requests)
            errors = max(0.0, now.errors - before.errors)
            tokens = max(0.0, now.tokens - before.tokens)
            buckets = {le: c - before.buckets.get(le, 0.0) for le, c in now.buckets.items()}
            rps: float | None = requests / elapsed
            tps: float | None = tokens / elapsed
        else:
            requests, errors, buckets = now.requests, now.errors, now.buckets
            rps = tps = None
        out.append(
            Row(
                backend=b["name"],
                region=b["region"],
                model=f"{b['model']}@{b['version']}",
                requests_per_s=rps,
                requests=requests,
                error_rate=errors / requests if requests else None,
                ttft_p50_s=quantile(0.5, buckets),
                ttft_p95_s=quantile(0.95, buckets),
                tokens_per_s=tps,
                in_flight=int(b.get("in_flight") or 0),
                breaker=str(b.get("breaker", "")),
            )
        )
    return out
