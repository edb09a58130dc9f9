"""The admin handlers' shared request and answer helpers.

A handler raises :class:`Refused` for a request it will not carry out; the
route's guard turns it into OpenAI's error shape with the status and code, so
every admin route answers bad input the same way and changes nothing.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web


class Refused(Exception):
    def __init__(self, status: int, message: str, code: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``), or Refused(400)."""
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError:
        raise Refused(400, "the body must be JSON") from None
    if not isinstance(body, dict):
        raise Refused(400, "the body must be a JSON object")
    return body


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")
