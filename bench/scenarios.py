"""The default workloads and the targets of docs/design.md §8 they check.

- **latency**: a realistic upstream (TTFT 20 ms, 5 ms between tokens) at low
  concurrency; what matters is how much the gateway adds to the first token.
- **throughput**: an upstream that streams as fast as it can (no TTFT, no
  inter-token gap) at high concurrency; what matters is how many chunks per
  second survive the extra hop when everything is CPU-bound.

A target names the concurrency it is defined at and is judged only there; a
run at other levels still reports the same ratios, without a verdict.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, replace

from bench.stack import Upstream


@dataclass(frozen=True, slots=True)
class Target:
    metric: str  # a field of report.Comparison
    op: str  # "<=" or ">="
    threshold: float
    concurrency: int
    unit: str

    def met(self, value: float) -> bool:
        compare: Callable[[float, float], bool] = operator.le if self.op == "<=" else operator.ge
        return compare(value, self.threshold)

    def describe(self) -> str:
        return f"{self.op} {self.threshold:g}{self.unit} @ c={self.concurrency}"


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


LATENCY = Scenario(
    "latency",
    Upstream(ttft_ms=20, itl_ms=5, max_tokens=64),
    (
        Target("added_ttft_p50_ms", "<=", 1.0, 10, " ms"),
        Target("added_ttft_p99_ms", "<=", 5.0, 10, " ms"),
    ),
)

THROUGHPUT = Scenario(
    "throughput",
    Upstream(ttft_ms=0, itl_ms=0, max_tokens=256),
    (Target("chunks_pct_of_direct", ">=", 70.0, 200, "%"),),
)

SCENARIOS: dict[str, Scenario] = {s.name: s for s in (LATENCY, THROUGHPUT)}
