"""Admin API: the fleet's tokens and spend per tenant and model over a window.

    GET /admin/v1/usage?window=SECONDS   (default 3600, 60 to 86400; viewer role)

Read from the store's per-minute usage windows (``gateway.control.usage``),
which every replica adds to, so any replica answers for the whole fleet.
The answer: ``window`` (seconds asked), ``from`` and ``to`` (Unix seconds of
the whole minutes summed: every one that overlaps the last ``window``
seconds, the current one included; ``to`` exclusive),
``rows`` (one per tenant and model, sorted) and ``totals``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from gateway.admin.requests import json_response
from gateway.control.usage import (
    DEFAULT_WINDOW_S,
    MAX_WINDOW_S,
    MIN_WINDOW_S,
    UsageRow,
    read_usage,
)
from gateway.http.api import RUNTIME
from gateway.http.errors import INVALID_REQUEST, error_response
from gateway.store import StoreUnavailable

# A day is 1440 reads; a store that answers each slowly must not hold the call forever.
_READ_TIMEOUT_S = 10.0


def window_of(raw: str | None) -> int:
    """The ``window`` query parameter in seconds; ValueError saying what it must be."""
    if raw is None:
        return DEFAULT_WINDOW_S
    if raw.isascii() and raw.isdigit() and len(raw) <= 6:
        window = int(raw)
        if MIN_WINDOW_S <= window <= MAX_WINDOW_S:
            return window
    shown = raw if len(raw) <= 20 else raw[:20] + "…"
    raise ValueError(
        f"window must be a whole number of seconds from {MIN_WINDOW_S} to {MAX_WINDOW_S} "
        f"(e.g. 3600), got {shown!r}"
    )


def _row(row: UsageRow) -> dict[str, Any]:
    return {
        "requests": row.requests,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "spend_usd": row.spend_usd,
    }


async def usage(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - {"window"})
    if unknown:  # e.g. a tenant filter this route does not have: never ignored in silence
        return error_response(
            400, f"unknown query parameter {unknown[0]!r} (known: window)", INVALID_REQUEST,
            param=unknown[0],
        )  # fmt: skip
    if len(request.query.getall("window", ())) > 1:
        return error_response(400, "window given more than once", INVALID_REQUEST, param="window")
    try:
        window = window_of(request.query.get("window"))
    except ValueError as exc:
        return error_response(400, str(exc), INVALID_REQUEST, param="window")
    rt = request.app[RUNTIME]
    control = rt.control
    if control is None:
        return error_response(503, "the control plane is not running", "control_plane_off")
    try:
        if control.degraded:
            raise StoreUnavailable(control.last_error or "degraded")
        async with asyncio.timeout(_READ_TIMEOUT_S):
            found = await read_usage(control.store, window)
    except (StoreUnavailable, TimeoutError) as exc:
        why = str(exc) or f"no answer within {_READ_TIMEOUT_S:g} s"
        return error_response(
            503,
            f"cannot read usage: the control-plane store is unreachable ({why})",
            "store_unavailable",
            retry_after=5,
        )
    body = {
        "window": window,
        "from": found.start,
        "to": found.end,
        "rows": [{"tenant": r.tenant, "model": r.model, **_row(r)} for r in found.rows],
        "totals": _row(found.totals),
    }
    return json_response(body)


def register(app: web.Application) -> None:
    app.router.add_get("/admin/v1/usage", usage)
