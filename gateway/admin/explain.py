"""``route explain``: what routing would do for a request, without sending it.

The admin API runs the real router over the live snapshot and signals with a
synthetic request (model, tenant, optional prompt and residency header) and
returns every candidate with its reason and score, and every exclusion.
"""

from __future__ import annotations

import time
from typing import Any

from gateway.app.runtime import Runtime
from gateway.pipeline.edge import Caller
from gateway.pipeline.edge import residency as narrowed_residency
from gateway.security.keys import Tenant
from regions.request import GenerationRequest, Kind, Message, Sampling
from routing.plan import Candidate, RoutingError


def explain(
    rt: Runtime,
    model: str,
    tenant: str | None,
    prompt: str = "",
    residency: str | None = None,
    max_tokens: int | None = None,
    needs: tuple[str, ...] = (),
) -> dict[str, Any]:
    """A JSON-able account of the plan; raises LookupError for an unknown tenant and
    BadRequest for a residency the API would refuse (``,``). ``needs``: capabilities
    the request asks (routing.capabilities: tools, vision...), each its own field."""
    caller = _caller(rt, tenant)
    out: dict[str, Any] = {"model": model, "tenant": caller.tenant.name if caller else None}
    try:
        # Without a tenant, the header narrows an unrestricted policy, parsed as the API does.
        narrowed = narrowed_residency(caller or _ANYONE, residency)
        request = GenerationRequest(
            Kind.CHAT,
            model,
            "explain",
            messages=(Message("user", prompt),),
            sampling=Sampling(max_tokens=max_tokens),
            residency=narrowed,
            affinity_key=f"explain-{time.monotonic_ns()}",
            needs={capability: capability for capability in needs},
        )
        out["residency"] = narrowed.describe()
        plan = rt.router.plan(
            rt.snapshot,
            request,
            caller.tenant.models if caller else None,
            signals=rt.health,
            now=time.monotonic(),
            cost_weight=caller.tenant.cost_weight if caller else None,
        )
    except RoutingError as exc:
        out["error"] = {"status": exc.status, "code": exc.code, "message": exc.message}
        return out
    out["version"] = plan.version
    out["candidates"] = [_candidate(c) for c in plan.candidates]
    out["excluded"] = [{"backend": name, "why": why} for name, why in plan.excluded]
    return out


def _candidate(c: Candidate) -> dict[str, Any]:
    """A per-hour backend also shows the capacity its price per token comes from."""
    out: dict[str, Any] = {
        "backend": c.backend.name,
        "region": c.backend.region.name,
        "provider": c.backend.kind.value,
        "reason": c.reason,
        "score": c.score,
        "price_usd": c.price,
    }
    price, meter = c.backend.price, c.backend.price.meter
    if meter is not None:
        capacity = meter.capacity
        out["per_hour"] = price.per_hour
        out["capacity_tokens_per_s"] = capacity
        out["capacity_source"] = meter.source
        at = "capacity not measured yet" if capacity is None else f"at {capacity:.0f} tokens/s"
        out["reason"] += f"; ${price.per_hour:g}/h {at} ({meter.source})"
    return out


_ANYONE = Caller(Tenant("(no tenant)"), "")


def _caller(rt: Runtime, tenant: str | None) -> Caller | None:
    if tenant is None:
        return None
    found = rt.keyring.tenant(tenant)
    if found is None:
        raise LookupError(f"unknown tenant {tenant}")
    return Caller(found, "")
