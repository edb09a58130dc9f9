"""A request refused before any backend is asked, as the client reads it.

The body reader, the validators and the router each raise their own error;
every HTTP route (chat and completions, embeddings, responses) answers them
the same way (:func:`refuse`): counted in ``meridian_requests_total`` and
written to the access log with its reason, then answered with an
OpenAI-shaped error; for a routing refusal the client reads the reason class
and request id only, the full account going to the log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from aiohttp import web

from gateway.http.body import BodyRejected
from gateway.http.errors import INVALID_REQUEST, error_response
from gateway.http.schema import BadRequest
from gateway.pipeline.core import Pipeline, log_refusal
from routing.capabilities import MissingCapability
from routing.plan import RoutingError

Refused = BodyRejected | BadRequest | RoutingError

log = logging.getLogger("meridian.http")


def refuse(
    pipeline: Pipeline,
    exc: Refused,
    request_id: str,
    tenant: str,
    headers: Mapping[str, str],
    *,
    model: str = "",
    client: str = "",
    arrived: float | None = None,
) -> web.Response:
    """Record the refusal like every other request, then answer it."""
    if isinstance(exc, BadRequest):
        status, reason = 400, INVALID_REQUEST
    else:
        status, reason = exc.status, exc.code
    pipeline.refused(
        request_id,
        status,
        reason,
        tenant=tenant,
        model=model if isinstance(exc, RoutingError) else "",
        client=client,
        arrived=arrived,
    )
    return _answer(exc, request_id, tenant, headers)


def _answer(exc: Refused, request_id: str, tenant: str, headers: Mapping[str, str]) -> web.Response:
    if isinstance(exc, BodyRejected):
        rejected = error_response(exc.status, exc.message, exc.code, headers=headers)
        rejected.force_close()  # the rest of the body may still arrive: never parse it
        return rejected
    if isinstance(exc, BadRequest):
        return error_response(400, exc.message, INVALID_REQUEST, param=exc.param, headers=headers)
    log_refusal(log, request_id, tenant, exc)
    return error_response(
        exc.status,
        exc.tenant_message(request_id),
        exc.code,
        param=exc.field if isinstance(exc, MissingCapability) else None,
        retry_after=exc.retry_after,
        headers=headers,
    )
