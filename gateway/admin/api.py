"""The admin API: its own listener, its own bearer token (docs/design.md §4).

``/metrics``, the status summary and route explanations live here; the
control plane's endpoints (weights, drains, dials, canaries, replicas,
audit) are in ``gateway.admin.control``, replication in
``gateway.admin.replication`` and shadow traffic in ``gateway.admin.shadow``.
"""

from __future__ import annotations

import time

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from gateway.admin.control import register as register_control
from gateway.admin.explain import explain
from gateway.admin.reload import register as register_reload
from gateway.admin.replication import register as register_replication
from gateway.admin.shadow import register as register_shadow
from gateway.admin.store import register as register_store
from gateway.admin.usage import register as register_usage
from gateway.http.api import RUNTIME, openai_errors
from gateway.http.errors import INVALID_REQUEST, error_response
from gateway.http.schema import MAX_TOKENS_LIMIT, BadRequest
from gateway.security.admin_tokens import refusal
from routing.capabilities import ALL as CAPABILITIES


@web.middleware
async def require_admin_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    # each route's role is in gateway.security.admin_tokens.ROUTE_ROLES
    refused = refusal(request, request.app[RUNTIME].admin_tokens)
    if refused is not None:
        return error_response(*refused)
    return await handler(request)


async def metrics(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    return web.Response(
        body=rt.metrics.exposition(),
        headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
    )


async def status(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    snap = rt.snapshot
    backends: list[dict[str, object]] = [
        {
            "name": b.name,
            "model": b.model,
            "version": b.version,
            "region": b.region.name,
            "tags": sorted(b.region.tags),
            "provider": b.kind.value,
            "dial": snap.dial(b.region.name),
            "weight": route.split.get(b.version, 0),
        }
        for route in snap.models.values()
        for per_version in route.backends.values()
        for b in per_version
    ]
    health = rt.health.status(time.monotonic())
    for entry in backends:
        entry.update(health.get(str(entry["name"]), {}))
    body = {
        "revision": snap.revision,
        "ready": rt.lifecycle.ready,
        "draining": rt.lifecycle.draining,
        "in_flight": rt.lifecycle.in_flight,
        "models": {name: dict(route.split) for name, route in snap.models.items()},
        "backends": backends,
        "control_plane": rt.control.describe() if rt.control else None,
    }
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def route_explain(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    q = request.query
    model = q.get("model")
    if not model:
        return error_response(400, "missing query parameter: model", INVALID_REQUEST)
    try:
        max_tokens = int(q["max_tokens"]) if q.get("max_tokens") else None
    except ValueError:
        max_tokens = 0
    if max_tokens is not None and not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        # the API's own bounds: anything else is a request routing never sees
        return error_response(
            400, f"max_tokens must be an integer from 1 to {MAX_TOKENS_LIMIT}", INVALID_REQUEST,
            param="max_tokens",
        )  # fmt: skip
    needs = tuple(n for n in q.get("needs", "").split(",") if n)
    unknown = [n for n in needs if n not in CAPABILITIES]
    if unknown:
        known = ", ".join(sorted(CAPABILITIES))
        return error_response(
            400, f"needs: unknown {unknown[0]!r}; known: {known}", INVALID_REQUEST, param="needs"
        )
    try:
        body = explain(
            rt, model, q.get("tenant"), q.get("prompt", ""), q.get("residency"), max_tokens, needs
        )
    except BadRequest as exc:
        return error_response(400, exc.message, INVALID_REQUEST, param=exc.param)
    except LookupError as exc:
        return error_response(404, str(exc), "unknown_tenant")
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def admin_app(runtime_app: web.Application) -> web.Application:
    # openai_errors outermost: unknown routes (404), bodies over the size limit
    # (413) and faults answer in the same JSON shape as every other admin error.
    app = web.Application(middlewares=[openai_errors, require_admin_token])
    app[RUNTIME] = runtime_app[RUNTIME]
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/admin/v1/status", status)
    app.router.add_get("/admin/v1/route/explain", route_explain)
    app.router.add_get("/healthz", healthz)
    register_control(app)
    register_replication(app)
    register_shadow(app)
    register_store(app)
    register_reload(app)
    register_usage(app)
    return app
