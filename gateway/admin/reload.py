"""Admin API: the config in force, and reloading it from its file.

GET  /admin/v1/config   what a reload can change (gateway.config.check.summary):
                        backends, tenants (keys as fingerprints), models, regions
POST /admin/v1/reload   re-read the config file (gateway.app.reload): 200 with
                        ``applied`` true and the changes, or ``applied`` false and
                        every problem (nothing changed); 409 when this gateway was
                        not started from a file (``meridian demo``, tests)
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from gateway.admin.control import actor
from gateway.app import reload as reload_module
from gateway.app.reload import reloader_of
from gateway.config.check import summary
from gateway.http.api import RUNTIME
from gateway.http.errors import error_response


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")


async def get_config(request: web.Request) -> web.Response:
    rt = request.app[RUNTIME]
    reloader = reloader_of(rt)
    return _json({"path": reloader.path if reloader else None, **summary(rt.config)})


async def reload(request: web.Request) -> web.Response:
    reloader = reloader_of(request.app[RUNTIME])
    if reloader is None:
        return error_response(
            409, "this gateway was not started from a config file: nothing to reload", "no_file"
        )
    if not reload_module.ADMIN_RELOAD:
        return error_response(
            409,
            "this gateway runs several workers: send SIGHUP to the parent process",
            "workers",
        )
    outcome = await reloader.reload(actor(request))
    return _json({"path": reloader.path, **outcome.body()})


def register(app: web.Application) -> None:
    app.router.add_get("/admin/v1/config", get_config)
    app.router.add_post("/admin/v1/reload", reload)
