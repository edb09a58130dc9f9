"""Admin API: point this replica's store writes at a promoted primary, without a restart.

    GET  /admin/v1/store           where writes and reads go, whether the primary
                                   answers, tenant-limit leases
    POST /admin/v1/store/primary   {"url": "redis://…", "read_url"?: "redis://…"}

After a Global Datastore failover (``docs/deploy.md`` §7) or ``REPLICAOF NO
ONE`` on a replica, call the POST on every gateway replica; each answers
once the new primary answered it. Only a store with ``store.read_url``
(``gateway.store.replicated``) can be re-pointed; the URL's password never
appears in an answer or the log.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, cast

import orjson
from aiohttp import web

from gateway.http.api import RUNTIME
from gateway.http.errors import error_response
from gateway.store import Store, StoreUnavailable

if TYPE_CHECKING:
    from gateway.store.replicated import ReplicatedStore

_SCHEMES = ("redis://", "rediss://")


def _replicated(store: Store) -> ReplicatedStore | None:
    """``store`` if it is a ReplicatedStore. Asked without importing redis-py (~9 MiB
    a gateway on the embedded store never needs): an instance exists only once its
    module is loaded."""
    module = sys.modules.get("gateway.store.replicated")
    if module is None or not isinstance(store, module.ReplicatedStore):
        return None
    return cast("ReplicatedStore", store)


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_store(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    control = rt.control
    if control is None:
        return error_response(503, "the control plane is not running", "control_plane_off")
    store = control.store
    body: dict[str, Any] = {"kind": store.kind, "where": store.where}
    replicated = _replicated(store)
    primary = replicated.primary if replicated is not None else store
    if replicated is not None:
        body["primary"], body["reads"] = replicated.primary.where, replicated.replica.where
    try:  # the follower may be fine on its copy while writes have nowhere to go
        await primary.ping(rt.config.store.probe_timeout_s)
        body["primary_answers"] = True
    except StoreUnavailable as exc:
        body["primary_answers"], body["primary_error"] = False, str(exc)
    if rt.limiter is not None:
        body["limits"] = rt.limiter.status()
    return _json(body)


async def set_primary(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    control = rt.control
    if control is None:
        return error_response(503, "the control plane is not running", "control_plane_off")
    store = _replicated(control.store)
    if store is None:
        return error_response(
            409,
            "this replica's store has no store.read_url, so its write URL is fixed "
            "(restart it with the new url)",
            "not_replicated",
        )
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        return error_response(400, "the body must be JSON", "invalid_request_error")
    urls = body if isinstance(body, dict) else {}
    url, read_url = urls.get("url"), urls.get("read_url")
    for name, value in (("url", url), ("read_url", read_url)):
        if value is None and name == "read_url":
            continue
        if not isinstance(value, str) or not value.startswith(_SCHEMES):
            return error_response(
                400, f"'{name}' must be a redis:// or rediss:// URL", "invalid_request_error"
            )
    assert isinstance(url, str)
    try:
        where = await store.promote(url)
        if isinstance(read_url, str):
            await store.read_from(read_url)
    except StoreUnavailable as exc:
        return error_response(
            503, f"not switched: the new primary does not answer ({exc})", "store_unavailable"
        )
    return _json({"primary": where, "reads": store.replica.where, "where": store.where})


def register(app: web.Application) -> None:
    app.router.add_get("/admin/v1/store", get_store)
    app.router.add_post("/admin/v1/store/primary", set_primary)
