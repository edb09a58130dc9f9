"""OpenAI-shaped error responses: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

from collections.abc import Mapping

import orjson
from aiohttp import web

# OpenAI's code for a request the API cannot accept, whoever refuses it: the
# gateway's validation, or the model (a backend's 400) passed through.
INVALID_REQUEST = "invalid_request_error"

_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    408: "timeout_error",
    413: "invalid_request_error",
    417: "invalid_request_error",
    429: "rate_limit_error",
    503: "service_unavailable_error",
}


def error_body(message: str, code: str | None, status: int, param: str | None = None) -> bytes:
    err = {
        "message": message,
        "type": _TYPES.get(status, "api_error"),
        "param": param,
        "code": code,
    }
    return orjson.dumps({"error": err})


def error_response(
    status: int,
    message: str,
    code: str | None = None,
    *,
    param: str | None = None,
    retry_after: float | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    out = dict(headers or {})
    if retry_after is not None:
        out["Retry-After"] = str(max(1, round(retry_after)))
    return web.Response(
        status=status,
        body=error_body(message, code, status, param),
        content_type="application/json",
        headers=out,
    )
