"""Reading a request body under the size and time limits."""

from __future__ import annotations

import asyncio

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError, PayloadEncodingError

from gateway.config.model import Limits
from gateway.http.errors import INVALID_REQUEST


class BodyRejected(Exception):
    def __init__(self, status: int, message: str, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code

    too_large_code = "request_too_large"

    @staticmethod
    def too_large(limits: Limits) -> BodyRejected:
        return BodyRejected(
            413,
            f"the request body exceeds {limits.max_body_bytes} bytes",
            BodyRejected.too_large_code,
        )


async def read_body(request: web.Request, limits: Limits) -> bytes:
    """The whole body, or BodyRejected: 413 when too large, 408 when it trickles in too
    slowly, 400 when it does not decode (Content-Encoding, chunked framing)."""
    declared = request.content_length
    if declared is not None and declared > limits.max_body_bytes:
        raise BodyRejected.too_large(limits)
    try:
        if request.content.is_eof():
            return await request.read()  # already here (the common case): no timer needed
        async with asyncio.timeout(limits.body_timeout_s):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise BodyRejected.too_large(limits) from None
    except (web.RequestPayloadError, PayloadEncodingError) as exc:
        # Bytes that do not decode as their Content-Encoding (gzip, deflate) says,
        # or a broken chunked framing: the client's fault, like malformed JSON.
        cause = exc if isinstance(exc, HttpProcessingError) else exc.__cause__
        why = cause.message if isinstance(cause, HttpProcessingError) else "malformed"
        raise BodyRejected(
            400, f"the request body could not be read: {why.strip()}", INVALID_REQUEST
        ) from None
    except TimeoutError:
        raise BodyRejected(
            408, "the request body was not received in time", "body_timeout"
        ) from None
