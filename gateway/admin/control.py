"""Admin endpoints of the control plane: weights, drains, canaries, replicas, audit.

Reads answer from this replica's applied state, so they work while the store
is unreachable; writes go through ``ControlPlane.write`` and answer 503 with
one line when it is (fail-static: serving goes on, changing does not). Every
write is validated against the config first (unknown model, version or
region → 404/400, no side effect) and recorded in the audit log with the
actor from the ``x-meridian-actor`` header (the CLI sends ``$USER``).

    GET  /admin/v1/weights/{model}          PUT  /admin/v1/weights/{model}  {"split": {...}}
    GET  /admin/v1/regions                  POST /admin/v1/regions/{region}/drain | /undrain
    GET  /admin/v1/canary/{model}           POST /admin/v1/canary/{model}  {"to": ..., ...}
    POST /admin/v1/canary/{model}/promote   POST /admin/v1/canary/{model}/abort
    GET  /admin/v1/replicas/{model}         PUT  /admin/v1/replicas/{model}/{version}/{region}
    GET  /admin/v1/audit?limit=N
"""

from __future__ import annotations

import math
import re
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from gateway.admin.requests import Refused, json_object, json_response
from gateway.admin.views import canary_view, replica_rows, weights_view
from gateway.app.runtime import Runtime
from gateway.canary.codec import to_doc
from gateway.canary.plan import Canary, CanaryPlan, Thresholds
from gateway.control.plane import ControlPlane
from gateway.http.api import RUNTIME
from gateway.http.errors import error_response
from gateway.security.admin_tokens import token_actor
from gateway.shadow.gate import shadow_gate
from gateway.shadow.plan import shadow_key
from gateway.store import Doc, StoreConflict, StoreUnavailable
from gateway.store.state import canary_key, dial_key, drain_key, replica_key, split_key

ACTOR_HEADER = "x-meridian-actor"
_ACTOR = re.compile(r"[^\x21-\x7e]")
_STATUS = re.compile(r"^[a-z][a-z_-]{0,31}$")
DETAIL_CHARS = 500

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _guard(
    handler: Callable[[web.Request, Runtime, ControlPlane], Awaitable[web.Response]],
) -> Handler:
    """Validation errors, an unreachable store and a lost race as one-line errors."""

    async def run(request: web.Request) -> web.StreamResponse:
        rt = request.app[RUNTIME]
        control = rt.control
        if control is None:
            return error_response(503, "the control plane is not running", "control_plane_off")
        try:
            return await handler(request, rt, control)
        except Refused as exc:
            return error_response(exc.status, exc.message, exc.code)
        except StoreUnavailable as exc:
            refused = "change refused" if request.method != "GET" else "cannot read it"
            return error_response(
                503,
                f"{refused}: the control-plane store is unreachable ({exc}); "
                f"still serving revision {rt.snapshot.revision}",
                "store_unavailable",
                retry_after=5,
            )
        except StoreConflict as exc:
            return error_response(409, f"changed concurrently, try again: {exc}", "conflict")

    return run


def actor(request: web.Request) -> str:
    if (named := token_actor(request)) is not None:
        return named  # a named admin token's writes are recorded under its name
    raw = request.headers.get(ACTOR_HEADER, "").strip()
    return _ACTOR.sub("", raw)[:64] or "admin"


def _model(rt: Runtime, request: web.Request) -> str:
    model = request.match_info["model"]
    known = [m.name for m in rt.config.models]
    if model not in known:
        raise Refused(404, f"unknown model '{model}' (known: {', '.join(known)})", "unknown_model")
    return model


def _versions(rt: Runtime, model: str) -> list[str]:
    return next(list(m.versions) for m in rt.config.models if m.name == model)


def _version(rt: Runtime, model: str, version: str) -> str:
    versions = _versions(rt, model)
    if version not in versions:
        raise Refused(
            400, f"model '{model}' has no version '{version}' (versions: {', '.join(versions)})"
        )
    return version


def _region(rt: Runtime, name: str) -> str:
    known = [r.name for r in rt.config.regions]
    if name not in known:
        raise Refused(404, f"unknown region '{name}' (known: {', '.join(known)})", "unknown_region")
    return name


def _active(control: ControlPlane, model: str) -> Canary | None:
    canary = control.state.canaries.get(model)
    return canary if canary is not None and canary.phase.active else None


# -- weights --------------------------------------------------------------------


@_guard
async def get_weights(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    return json_response(weights_view(rt, control, _model(rt, request)))


@_guard
async def put_weights(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    model = _model(rt, request)
    split = (await json_object(request)).get("split")
    if not isinstance(split, dict) or not split:
        raise Refused(400, 'expected {"split": {"VERSION": WEIGHT, ...}}')
    for version, weight in split.items():
        _version(rt, model, version)
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= 10**6:
            raise Refused(
                400, f"weight of {version} must be a non-negative integer (≤ 10⁶), got {weight}"
            )
    if sum(split.values()) <= 0:
        raise Refused(400, "weights must not all be 0: the model would get no traffic")
    running = _active(control, model)
    if running is not None:
        raise Refused(
            409,
            f"a canary of '{model}' is {running.phase.value} ({running.plan.candidate} at "
            f"{running.weight}%): promote or abort it first",
            "canary_running",
        )
    full = {v: split.get(v, 0) for v in _versions(rt, model)}
    old = dict(rt.snapshot.models[model].split)
    commit = await control.write(
        {split_key(model): full},
        actor=actor(request),
        action="weights.set",
        expect={canary_key(model): control.state.canary_doc(model)},
    )
    view = weights_view(rt, control, model)
    return json_response({**view, "old": old, "changed": bool(commit.entries)})


# -- regions ------------------------------------------------------------------------


@_guard
async def list_regions(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    state = control.state
    return json_response(
        {
            "revision": rt.snapshot.revision,
            "regions": [
                {
                    "name": r.name,
                    "tags": sorted(r.tags),
                    "dial": rt.snapshot.dial(r.name),
                    "configured_dial": state.dials.get(r.name, r.dial),
                    "drained": r.name in state.drains,
                }
                for r in rt.config.regions
            ],
        }
    )


async def _drain(
    request: web.Request, rt: Runtime, control: ControlPlane, on: bool
) -> web.Response:
    region = _region(rt, request.match_info["region"])
    before = rt.snapshot.dial(region)
    doc: Doc | None = {"drained": True} if on else None
    commit = await control.write(
        {drain_key(region): doc},
        actor=actor(request),
        action="region.drain" if on else "region.undrain",
    )
    return json_response(
        {
            "region": region,
            "drained": on,
            "dial": rt.snapshot.dial(region),
            "dial_before": before,
            "revision": rt.snapshot.revision,
            "changed": bool(commit.entries),
        }
    )


@_guard
async def set_dial(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    """A region's share of the traffic it would get on merit, 0–100 (a drain
    overrides it; undraining returns to it)."""
    region = _region(rt, request.match_info["region"])
    dial = (await json_object(request)).get("dial")
    if isinstance(dial, bool) or not isinstance(dial, int) or not 0 <= dial <= 100:
        raise Refused(400, f"dial must be an integer from 0 to 100, got {dial!r}")
    before = control.state.dials.get(region, rt.snapshot.dial(region))
    commit = await control.write({dial_key(region): {"dial": dial}}, actor=actor(request),
                                 action="region.dial", note=f"{before} → {dial}")  # fmt: skip
    return json_response(
        {
            "region": region,
            "dial": dial,
            "dial_before": before,
            "drained": region in control.state.drains,
            "revision": rt.snapshot.revision,
            "changed": bool(commit.entries),
        }
    )


@_guard
async def drain(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    return await _drain(request, rt, control, True)


@_guard
async def undrain(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    return await _drain(request, rt, control, False)


# -- canaries -------------------------------------------------------------------------


def _number(body: Mapping[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Refused(400, f"{key} must be a number")
    if not math.isfinite(value) or abs(value) > 1e9:
        raise Refused(400, f"{key} must be a finite number of sensible size, got {value}")
    return float(value)


def canary_plan(rt: Runtime, model: str, body: Mapping[str, Any]) -> CanaryPlan:
    """A canary start body as a plan (400 on anything that does not make sense)."""
    to = body.get("to")
    if not isinstance(to, str):
        raise Refused(400, "the canary version ('to') is required")
    candidate = _version(rt, model, to)
    split = rt.snapshot.models[model].split
    # the stable version: the one carrying the most traffic now, unless named
    stable = _version(rt, model, str(body.get("from") or max(sorted(split), key=split.__getitem__)))
    steps = body.get("steps", [5, 25, 50, 100])
    if not isinstance(steps, list) or not all(
        isinstance(s, int) and not isinstance(s, bool) for s in steps
    ):
        raise Refused(400, "steps must be a list of integer weights, e.g. 5,25,50,100")
    require_shadow = body.get("require_shadow", False)
    if not isinstance(require_shadow, bool):
        raise Refused(400, "require_shadow must be true or false")
    d = Thresholds()
    return CanaryPlan(
        model,
        stable,
        candidate,
        tuple(steps),
        _number(body, "interval_s", 60.0),
        Thresholds(
            _number(body, "max_error_delta", d.max_error_delta),
            _number(body, "max_ttft_ratio", d.max_ttft_ratio),
            int(_number(body, "min_requests", d.min_requests)),
        ),
        require_shadow,
    )


@_guard
async def canary_start(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    """Start a canary; with ``require_shadow``, only once the model's shadow has
    passed for the same candidate (409 ``shadow_required`` until then)."""
    model = _model(rt, request)
    plan = canary_plan(rt, model, await json_object(request))
    running = _active(control, model)
    if running is not None:
        raise Refused(
            409,
            f"a canary of '{model}' is already {running.phase.value} "
            f"({running.plan.candidate} at {running.weight}%)",
            "canary_running",
        )
    expect = {canary_key(model): control.state.canary_doc(model)}
    if plan.require_shadow:
        entries = control.entries
        closed = await shadow_gate(control.store, entries, model, plan.candidate)
        if closed is not None:
            raise Refused(409, f"canary refused: {closed}", "shadow_required")
        expect[shadow_key(model)] = entries.get(shadow_key(model))  # the shadow the gate read
    try:
        canary = Canary.start(plan, secrets.token_hex(4), time.time(), actor(request))
    except ValueError as exc:
        raise Refused(400, str(exc)) from None
    await control.write(
        {canary_key(model): to_doc(canary), split_key(model): dict(canary.split())},
        actor=actor(request),
        action="canary.start",
        note=canary.last + (" (shadow passed)" if plan.require_shadow else ""),
        expect=expect,
    )
    return json_response(await canary_view(control, model))


@_guard
async def canary_status(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    model = _model(rt, request)
    if model not in control.state.canaries:
        raise Refused(404, f"no canary has run for '{model}'", "no_canary")
    return json_response(await canary_view(control, model))


async def _by_hand(
    request: web.Request, rt: Runtime, control: ControlPlane, verb: str
) -> web.Response:
    model = _model(rt, request)
    canary = control.state.canaries.get(model)
    if canary is None:
        raise Refused(404, f"no canary has run for '{model}'", "no_canary")
    who = actor(request)
    try:
        moved = (
            canary.promote(time.time(), who)
            if verb == "promote"
            else canary.abort(time.time(), who)
        )
    except ValueError as exc:
        raise Refused(409, str(exc), "canary_finished") from None
    await control.write(
        {canary_key(model): to_doc(moved), split_key(model): dict(moved.split())},
        actor=who,
        action=f"canary.{verb}",
        note=moved.last,
        expect={canary_key(model): to_doc(canary)},
    )
    return json_response(await canary_view(control, model))


@_guard
async def canary_promote(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    return await _by_hand(request, rt, control, "promote")


@_guard
async def canary_abort(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    return await _by_hand(request, rt, control, "abort")


# -- replicas and audit ----------------------------------------------------------------------


@_guard
async def replicas(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    model = _model(rt, request)
    return json_response(
        {
            "model": model,
            "revision": rt.snapshot.revision,
            "replicas": replica_rows(rt, control, model),
        }
    )


def _backend_exists(rt: Runtime, model: str, version: str, region: str) -> None:
    """Refuse a replica status for a (model, version, region) no backend serves: it
    would gate nothing and only fill the store and the audit log."""
    configured = any(
        (b.model, b.version, b.region) == (model, version, region) for b in rt.config.backends
    )
    route = rt.snapshot.models.get(model)
    found = route is not None and any(
        b.region.name == region for b in route.backends.get(version, ())
    )  # discovered backends are in the snapshot only
    if not (configured or found):
        raise Refused(
            404,
            f"no backend serves {model}@{version} in region '{region}'",
            "unknown_backend",
        )


@_guard
async def set_replica(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    model = _model(rt, request)
    version = _version(rt, model, request.match_info["version"])
    region = _region(rt, request.match_info["region"])
    _backend_exists(rt, model, version, region)
    body = await json_object(request)
    status = body.get("status")
    if not isinstance(status, str) or not _STATUS.match(status):
        raise Refused(400, "status must be a short lowercase word, e.g. copying, verified, failed")
    detail = body.get("detail", "")
    if not isinstance(detail, str):
        raise Refused(400, "detail must be a string")
    detail = detail[:DETAIL_CHARS]  # it is stored and written to the audit log
    doc = {"status": status, "detail": detail, "updated": time.time()}
    await control.write(
        {replica_key(model, version, region): doc}, actor=actor(request), action="replica.set"
    )
    return json_response({"model": model, "replicas": replica_rows(rt, control, model)})


@_guard
async def audit(request: web.Request, rt: Runtime, control: ControlPlane) -> web.Response:
    try:
        limit = int(request.query.get("limit", "50"))
    except ValueError:
        raise Refused(400, "limit must be an integer") from None
    if not 1 <= limit <= 1000:
        raise Refused(400, "limit must be between 1 and 1000")
    entries = await control.store.audit(limit)
    return json_response({"entries": [e.as_json() for e in entries]})


def register(app: web.Application) -> None:
    r = app.router
    r.add_get("/admin/v1/weights/{model}", get_weights)
    r.add_put("/admin/v1/weights/{model}", put_weights)
    r.add_get("/admin/v1/regions", list_regions)
    r.add_post("/admin/v1/regions/{region}/drain", drain)
    r.add_post("/admin/v1/regions/{region}/undrain", undrain)
    r.add_put("/admin/v1/regions/{region}/dial", set_dial)
    r.add_get("/admin/v1/canary/{model}", canary_status)
    r.add_post("/admin/v1/canary/{model}", canary_start)
    r.add_post("/admin/v1/canary/{model}/promote", canary_promote)
    r.add_post("/admin/v1/canary/{model}/abort", canary_abort)
    r.add_get("/admin/v1/replicas/{model}", replicas)
    r.add_put("/admin/v1/replicas/{model}/{version}/{region}", set_replica)
    r.add_get("/admin/v1/audit", audit)
