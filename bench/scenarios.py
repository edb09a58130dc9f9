"""The default workloads and the targets of docs/design.md §8 they check.

- **latency**: a realistic upstream (TTFT 20 ms, 5 ms between tokens);
  what matters is how much the gateway adds to the first token, at 10 streams
  and under load at 200, and its CPU per streamed request beside nginx's.
- **throughput**: an upstream that streams as fast as it can (no TTFT, no
  inter-token gap) at high concurrency; what matters is how many chunks per
  second survive the extra hop when everything is CPU-bound, and how they
  scale with ``--workers``.

A target names the concurrency it is defined at and is judged only there; a
run at other levels still reports the same ratios, without a verdict. The
memory targets (:data:`IDLE_RSS`, :data:`IDLE_STREAMS`) and the workers
target (:data:`WORKERS`) are judged by ``bench.results`` on the memory probe
and the workers runs.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace

from bench.stack import Upstream


@dataclass(frozen=True, slots=True)
class Target:
    metric: str  # a field of report.Comparison, or a figure named in bench.results
    op: str  # "<=" or ">="
    threshold: float
    concurrency: int | None  # open streams it is defined at; None: without load
    unit: str
    label: str  # what the figure is, as printed beside the verdict
    workers: int = 1  # gateway worker processes it is defined at

    def met(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = operator.le if self.op == "<=" else operator.ge
        return compare(value, self.threshold)

    def describe(self) -> str:
        op = {"<=": "≤", ">=": "≥"}[self.op]
        where = "" if self.concurrency is None else f" @ c={self.concurrency}"
        if self.workers != 1:
            where += f", {self.workers} workers"
        return f"{op} {self.threshold:g}{self.unit}{where}"


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    upstream: Upstream
    targets: tuple[Target, ...]

    def with_upstream(
        self, ttft_ms: float | None, itl_ms: float | None, max_tokens: int | None
    ) -> Scenario:
        """This scenario with any of its upstream settings overridden (None keeps it)."""
        up = self.upstream
        return replace(
            self,
            upstream=Upstream(
                ttft_ms=up.ttft_ms if ttft_ms is None else ttft_ms,
                itl_ms=up.itl_ms if itl_ms is None else itl_ms,
                max_tokens=up.max_tokens if max_tokens is None else max_tokens,
            ),
        )


_P50 = "added TTFT p50"

LATENCY = Scenario(
    "latency",
    Upstream(ttft_ms=20, itl_ms=5, max_tokens=64),
    (
        Target("added_ttft_p50_ms", "<=", 1.0, 10, " ms", _P50),
        Target("added_ttft_p99_ms", "<=", 5.0, 10, " ms", "added TTFT p99"),
        Target("added_ttft_p50_ms", "<=", 10.0, 200, " ms", _P50),
        # Judged only when nginx ran in the same scenario at the same concurrency.
        Target("cpu_per_request_x_nginx", "<=", 1.8, 200, "×", "CPU/req × nginx"),
    ),
)

THROUGHPUT = Scenario(
    "throughput",
    Upstream(ttft_ms=0, itl_ms=0, max_tokens=256),
    (Target("chunks_pct_of_direct", ">=", 70.0, 200, "%", "chunks/s % of direct"),),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (LATENCY, THROUGHPUT)}

# Gateway RSS right after start-up, before any load (one worker).
IDLE_RSS = Target("idle_rss_mib", "<=", 60.0, None, " MiB", "idle RSS")
# Gateway RSS while the memory probe holds this many idle open streams.
IDLE_STREAMS = Target("idle_streams_rss_mib", "<=", 500.0, 10_000, " MiB", "RSS")
# Chunks/s of the gateway with 2 workers / with 1, throughput scenario, gateway only.
WORKERS = Target("chunks_x_one_worker", ">=", 1.7, 200, "×", "chunks/s × 1 worker", workers=2)
