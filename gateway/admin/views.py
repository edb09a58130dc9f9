"""JSON views of the control plane's state for the admin API (and so the CLI).

Each view reads this replica's applied state and snapshot — what it routes
by right now — and says where each value comes from (``config`` default or
``store`` override).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from gateway.app.runtime import Runtime
from gateway.canary.codec import to_doc
from gateway.canary.plan import Phase
from gateway.canary.window import sample, skew
from gateway.control.plane import ControlPlane
from gateway.store import StoreUnavailable
from gateway.store.state import VERIFIED


def weights_view(rt: Runtime, control: ControlPlane, model: str) -> dict[str, Any]:
    route = rt.snapshot.models[model]
    configured = next(m.versions for m in rt.config.models if m.name == model)
    canary = control.state.canaries.get(model)
    return {
        "model": model,
        "revision": rt.snapshot.revision,
        "split": dict(route.split),
        "source": "store" if model in control.state.splits else "config",
        "config": dict(configured),
        "canary": None
        if canary is None
        else {
            "phase": canary.phase.value,
            "stable": canary.plan.stable,
            "candidate": canary.plan.candidate,
            "weight": canary.weight,
        },
    }


async def canary_view(control: ControlPlane, model: str) -> dict[str, Any]:
    canary = control.state.canaries[model]
    plan = canary.plan
    view: dict[str, Any] = {
        "model": model,
        "revision": control.state.revision,
        **to_doc(canary),
        "steps_total": len(plan.steps),
        "next_analysis_in_s": round(max(0.0, canary.due - time.time()), 3)
        if canary.phase is Phase.PROGRESSING
        else None,
        "window": None,
    }
    if canary.phase is Phase.PROGRESSING and not control.degraded:
        with contextlib.suppress(StoreUnavailable, TimeoutError):
            async with asyncio.timeout(1.0):
                counts = await control.store.read_counts(canary.window)
            view["window"] = {
                role: {
                    "version": version,
                    "requests": s.requests,
                    "errors": s.errors,
                    "ttft_p95_ms": None if s.ttft_p95_s is None else round(s.ttft_p95_s * 1000, 1),
                }
                for role, version in (("stable", plan.stable), ("candidate", plan.candidate))
                for s in (sample(counts, version),)
            }
            view["warning"] = skew(counts)  # one affinity key carries the sample
    return view


def replica_rows(rt: Runtime, control: ControlPlane, model: str) -> list[dict[str, Any]]:
    backends = [b for b in rt.config.backends if b.model == model]
    pairs = {(b.version, b.region) for b in backends}
    pairs |= {(v, r) for (m, v, r) in control.state.replicas if m == model}
    rows = []
    for version, region in sorted(pairs):
        key = (model, version, region)
        stored = control.state.replicas.get(key)
        configured = all(
            b.replica_ready for b in backends if (b.version, b.region) == (version, region)
        )
        rows.append(
            {
                "version": version,
                "region": region,
                "ready": key not in rt.snapshot.unready,
                "status": stored.status if stored else (VERIFIED if configured else "unverified"),
                "source": "store" if stored else "config",
                "detail": stored.detail if stored else "",
                "updated": stored.updated if stored else None,
            }
        )
    return rows
