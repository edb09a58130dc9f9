"""A shadow plan as data, and its JSON document (the store's ``shadow/MODEL`` key).

A plan mirrors ``share`` percent of a model's admitted requests to the
``candidate`` version, under two caps (concurrent copies, copy tokens per
minute), for ``duration_s`` from ``started``, never for ``excluded`` tenants.
Its counters live under :attr:`ShadowPlan.window` (one per run), so a new run
starts from zero while an old one stays readable. Time is wall-clock seconds,
so every replica agrees on when a plan expires.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def shadow_key(model: str) -> str:
    return f"shadow/{model}"


@dataclass(frozen=True, slots=True)
class ShadowThresholds:
    """What a passing shadow must show; TTFT p95s under ``ttft_floor_s`` are noise."""

    min_pairs: int = 20
    max_error_delta: float = 0.02
    max_ttft_ratio: float = 1.5
    min_agreement: float = 0.9
    ttft_floor_s: float = 0.025


@dataclass(frozen=True, slots=True)
class ShadowPlan:
    model: str
    candidate: str
    run: str
    started: float
    share: float = 100.0  # percent of admitted requests
    max_concurrent: int = 8
    max_tokens_per_min: int = 100_000
    duration_s: float = 600.0
    excluded: frozenset[str] = frozenset()
    thresholds: ShadowThresholds = field(default_factory=ShadowThresholds)
    stopped: float | None = None

    @property
    def window(self) -> str:
        return f"shadow:{self.model}:{self.run}"

    @property
    def ends(self) -> float:
        return self.started + self.duration_s if self.stopped is None else self.stopped

    def active(self, now: float) -> bool:
        return self.stopped is None and now < self.started + self.duration_s

    def check(self) -> None:
        """Raise ValueError (one line) unless the plan makes sense."""
        if not 0 <= self.share <= 100:
            raise ValueError("share must be between 0 and 100")
        if self.max_concurrent < 1 or self.max_tokens_per_min < 1:
            raise ValueError("max-concurrent and max-tokens-per-min must be at least 1")
        if not self.duration_s > 0:
            raise ValueError("duration must be positive")
        t = self.thresholds
        if t.min_pairs < 1 or t.max_error_delta < 0 or t.max_ttft_ratio <= 0:
            raise ValueError("thresholds: min-pairs >= 1, max-error-delta >= 0, ttft-ratio > 0")
        if not 0 <= t.min_agreement <= 1:
            raise ValueError("min-agreement must be between 0 and 1")


def to_doc(plan: ShadowPlan) -> dict[str, Any]:
    t = plan.thresholds
    return {
        "model": plan.model,
        "candidate": plan.candidate,
        "run": plan.run,
        "started": plan.started,
        "share": plan.share,
        "max_concurrent": plan.max_concurrent,
        "max_tokens_per_min": plan.max_tokens_per_min,
        "duration_s": plan.duration_s,
        "excluded": sorted(plan.excluded),
        "stopped": plan.stopped,
        "thresholds": {
            "min_pairs": t.min_pairs,
            "max_error_delta": t.max_error_delta,
            "max_ttft_ratio": t.max_ttft_ratio,
            "min_agreement": t.min_agreement,
            "ttft_floor_s": t.ttft_floor_s,
        },
    }


def from_doc(d: dict[str, Any]) -> ShadowPlan:
    """Raises KeyError/ValueError/TypeError on a malformed document."""
    t = d.get("thresholds") or {}
    base = ShadowThresholds()
    stopped = d.get("stopped")
    return ShadowPlan(
        str(d["model"]),
        str(d["candidate"]),
        str(d["run"]),
        float(d["started"]),
        float(d["share"]),
        int(d["max_concurrent"]),
        int(d["max_tokens_per_min"]),
        float(d["duration_s"]),
        frozenset(str(x) for x in d.get("excluded", ())),
        ShadowThresholds(
            int(t.get("min_pairs", base.min_pairs)),
            float(t.get("max_error_delta", base.max_error_delta)),
            float(t.get("max_ttft_ratio", base.max_ttft_ratio)),
            float(t.get("min_agreement", base.min_agreement)),
            float(t.get("ttft_floor_s", base.ttft_floor_s)),
        ),
        None if stopped is None else float(stopped),
    )
