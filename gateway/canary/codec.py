"""JSON documents for canaries (the store's ``canary/MODEL`` key and the admin API)."""

from __future__ import annotations

from typing import Any

from gateway.canary.plan import Canary, CanaryPlan, Phase, Thresholds, Transition


def plan_doc(plan: CanaryPlan) -> dict[str, Any]:
    t = plan.thresholds
    return {
        "model": plan.model,
        "stable": plan.stable,
        "candidate": plan.candidate,
        "steps": list(plan.steps),
        "interval_s": plan.interval_s,
        "max_error_delta": t.max_error_delta,
        "max_ttft_ratio": t.max_ttft_ratio,
        "min_requests": t.min_requests,
        "ttft_floor_s": t.ttft_floor_s,
        "require_shadow": plan.require_shadow,
    }


def plan_from(d: dict[str, Any]) -> CanaryPlan:
    return CanaryPlan(
        str(d["model"]),
        str(d["stable"]),
        str(d["candidate"]),
        tuple(int(s) for s in d["steps"]),
        float(d["interval_s"]),
        Thresholds(
            float(d["max_error_delta"]),
            float(d["max_ttft_ratio"]),
            int(d["min_requests"]),
            float(d.get("ttft_floor_s", Thresholds().ttft_floor_s)),
        ),
        bool(d.get("require_shadow", False)),
    )


def to_doc(canary: Canary) -> dict[str, Any]:
    return {
        "plan": plan_doc(canary.plan),
        "run": canary.run,
        "phase": canary.phase.value,
        "step": canary.step,
        "weight": canary.weight,
        "step_started": canary.step_started,
        "due": canary.due,
        "last": canary.last,
        "history": [
            {
                "at": h.at,
                "phase": h.phase.value,
                "weight": h.weight,
                "actor": h.actor,
                "reason": h.reason,
            }
            for h in canary.history
        ],
    }


def from_doc(d: dict[str, Any]) -> Canary:
    """Raises KeyError/ValueError/TypeError on a malformed document."""
    return Canary(
        plan_from(d["plan"]),
        str(d["run"]),
        Phase(d["phase"]),
        int(d["step"]),
        int(d["weight"]),
        float(d["step_started"]),
        float(d["due"]),
        str(d.get("last", "")),
        tuple(
            Transition(
                float(h["at"]),
                Phase(h["phase"]),
                int(h["weight"]),
                str(h["actor"]),
                str(h["reason"]),
            )
            for h in d.get("history", ())
        ),
    )
