"""Admin endpoints of shadow traffic: start, read the verdict, stop.

    POST /admin/v1/shadow/{model}        {"candidate": "v2", "share": 50, ...}
    GET  /admin/v1/shadow/{model}        plan, fleet-wide comparison, verdict
    POST /admin/v1/shadow/{model}/stop

A canary that requires a passing shadow starts through the canary endpoint
(``POST /admin/v1/canary/{model}`` with ``"require_shadow": true``), which
asks :func:`gateway.shadow.gate.shadow_gate`.

A plan is one store document (``shadow/MODEL``) written through
``ControlPlane.write``, so it reaches every replica like any other change and
lands in the audit log; the comparison is read from the plan's counter
window, which every replica adds to. Errors follow ``gateway.admin.control``
(one line; 503 while the store is unreachable).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import replace
from typing import Any

from aiohttp import web

from gateway.admin.control import (
    _guard,
    _model,
    _number,  # finite and of sensible size, as a canary's numbers
    _version,
    actor,
)
from gateway.admin.requests import Refused, json_object, json_response
from gateway.app.runtime import Runtime
from gateway.control.plane import ControlPlane
from gateway.shadow.compare import summarise, verdict
from gateway.shadow.plan import ShadowPlan, ShadowThresholds, from_doc, shadow_key, to_doc


def _plan(control: ControlPlane, model: str) -> ShadowPlan | None:
    doc = control.entries.get(shadow_key(model))
    return None if doc is None else from_doc(dict(doc))


async def view(control: ControlPlane, plan: ShadowPlan) -> dict[str, Any]:
    """The plan, the fleet's comparison so far and its verdict (``shadow status``)."""
    summary = summarise(await control.store.read_counts(plan.window))
    outcome, reasons = verdict(summary, plan.thresholds)
    now = time.time()
    return {
        "model": plan.model,
        "plan": to_doc(plan),
        "active": plan.active(now),
        "remaining_s": max(0.0, plan.ends - now) if plan.active(now) else 0.0,
        "summary": summary,
        "verdict": outcome,
        "reasons": reasons,
    }


async def shadow_start(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    model = _model(rt, request)
    body = await json_object(request)
    candidate = body.get("candidate")
    if not isinstance(candidate, str) or not candidate:
        raise Refused(400, "the candidate version ('candidate') is required")
    _version(rt, model, candidate)
    excluded = body.get("exclude_tenants", [])
    if not isinstance(excluded, list) or not all(isinstance(t, str) for t in excluded):
        raise Refused(400, "exclude_tenants must be a list of tenant names")
    running = _plan(control, model)
    if running is not None and running.active(time.time()):
        raise Refused(
            409,
            f"a shadow of '{model}' to {running.candidate} is running; stop it first",
            "shadow_running",
        )
    base = ShadowThresholds()
    plan = ShadowPlan(
        model,
        candidate,
        secrets.token_hex(4),
        time.time(),
        _number(body, "share", 100.0),
        int(_number(body, "max_concurrent", 8)),
        int(_number(body, "max_tokens_per_min", 100_000)),
        _number(body, "duration_s", 600.0),
        frozenset(excluded),
        ShadowThresholds(
            int(_number(body, "min_pairs", base.min_pairs)),
            _number(body, "max_error_delta", base.max_error_delta),
            _number(body, "max_ttft_ratio", base.max_ttft_ratio),
            _number(body, "min_agreement", base.min_agreement),
            _number(body, "ttft_floor_s", base.ttft_floor_s),
        ),
    )
    try:
        plan.check()
    except ValueError as exc:
        raise Refused(400, str(exc)) from None
    key = shadow_key(model)
    await control.write(
        {key: to_doc(plan)},
        actor=actor(request),
        action="shadow.start",
        note=f"{candidate} at {plan.share:g}% for {plan.duration_s:g}s",
        expect={key: control.entries.get(key)},
    )
    return json_response(await view(control, plan))


async def shadow_status(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    model = _model(rt, request)
    plan = _plan(control, model)
    if plan is None:
        raise Refused(404, f"no shadow has run for '{model}'", "no_shadow")
    return json_response(await view(control, plan))


async def shadow_stop(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    model = _model(rt, request)
    plan = _plan(control, model)
    if plan is None:
        raise Refused(404, f"no shadow has run for '{model}'", "no_shadow")
    if plan.stopped is None:
        stopped = replace(plan, stopped=time.time())
        key = shadow_key(model)
        await control.write(
            {key: to_doc(stopped)},
            actor=actor(request),
            action="shadow.stop",
            expect={key: to_doc(plan)},
        )
        plan = stopped
    return json_response(await view(control, plan))


def register(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/v1/shadow/{model}", _guard(shadow_status))
    r.add_post("/admin/v1/shadow/{model}", _guard(shadow_start))
    r.add_post("/admin/v1/shadow/{model}/stop", _guard(shadow_stop))
