"""Failures as gRPC statuses: the code, the details and the trailing metadata.

Every failure the request path raises already carries the HTTP API's status
and error code (``BadRequest`` → 400, ``RoutingError.status``,
``ExecutionFailed.status``), so the gRPC front end maps that one status to a
code instead of keeping a second table per exception. The mapping follows
gRPC's own HTTP-to-gRPC table where it has one (docs/grpc.md):

    400 INVALID_ARGUMENT    401 UNAUTHENTICATED   403 PERMISSION_DENIED
    404 NOT_FOUND           408 DEADLINE_EXCEEDED 413 RESOURCE_EXHAUSTED
    429 RESOURCE_EXHAUSTED  499 CANCELLED         502 UNAVAILABLE
    503 UNAVAILABLE         504 DEADLINE_EXCEEDED else INTERNAL

Clients read the failure from the status details (the message) and the
trailing metadata: ``meridian-error-code`` (the HTTP API's ``code``),
``meridian-error-param`` (the field at fault), ``retry-after`` (whole seconds,
as the HTTP header) and ``x-request-id``. When ``googleapis-common-protos`` is
installed (it comes with ``grpcio-status``), the same facts are also sent as
the standard rich status (``grpc-status-details-bin``: a ``google.rpc.Status``
with ``ErrorInfo``, ``RetryInfo`` and ``BadRequest``), which
``grpc_status.rpc_status.from_call`` decodes.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Sequence
from typing import Any

import grpc

from gateway.http.errors import INVALID_REQUEST

ERROR_DOMAIN = "meridian.v1"

_BY_HTTP_STATUS: dict[int, grpc.StatusCode] = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    403: grpc.StatusCode.PERMISSION_DENIED,
    404: grpc.StatusCode.NOT_FOUND,
    408: grpc.StatusCode.DEADLINE_EXCEEDED,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    429: grpc.StatusCode.RESOURCE_EXHAUSTED,
    499: grpc.StatusCode.CANCELLED,
    502: grpc.StatusCode.UNAVAILABLE,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}

Metadata = tuple[tuple[str, str | bytes], ...]


def code_for(http_status: int) -> grpc.StatusCode:
    return _BY_HTTP_STATUS.get(http_status, grpc.StatusCode.INTERNAL)


def retry_after_seconds(retry_after: float) -> str:
    """Whole seconds, at least 1: the HTTP API's ``Retry-After`` value."""
    return str(max(1, math.ceil(retry_after)))


class Refusal(Exception):
    """An RPC that must end with a non-OK status.

    Raised inside a handler (from the request path's own failures) and turned
    into ``context.abort`` once, at the edge, so the rest of the handler never
    deals with gRPC calls for errors. ``status`` is what the HTTP API answers
    for the same failure; it is also the outcome recorded in the metrics.
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None,
        *,
        retry_after: float | None = None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.retry_after = retry_after
        self.param = param

    @property
    def grpc_code(self) -> grpc.StatusCode:
        return code_for(self.status)

    def trailing_metadata(self, extra: Sequence[tuple[str, str]] = ()) -> Metadata:
        md: list[tuple[str, str | bytes]] = list(extra)
        if self.code:
            md.append(("meridian-error-code", self.code))
        if self.param:
            md.append(("meridian-error-param", self.param))
        if self.retry_after is not None:
            md.append(("retry-after", retry_after_seconds(self.retry_after)))
        details = rich_details(self)
        if details is not None:
            md.append(("grpc-status-details-bin", details))
        return tuple(md)


def invalid(path: str, message: str) -> Refusal:
    """A bad request (400, ``INVALID_ARGUMENT``) whose message and ``param`` name the
    protobuf field at fault (``sampling.temperature``)."""
    return Refusal(400, f"{path}: {message}", INVALID_REQUEST, param=path)


def rich_details(refusal: Refusal) -> bytes | None:
    """A serialized ``google.rpc.Status`` for ``refusal``; None without googleapis protos."""
    try:  # imported by name: optional, and it ships no type information
        error_details_pb2 = importlib.import_module("google.rpc.error_details_pb2")
        status_pb2 = importlib.import_module("google.rpc.status_pb2")
    except ImportError:
        return None
    details: list[Any] = [
        error_details_pb2.ErrorInfo(
            reason=(refusal.code or "error").upper(),
            domain=ERROR_DOMAIN,
            metadata={"http_status": str(refusal.status)},
        )
    ]
    if refusal.retry_after is not None:
        info = error_details_pb2.RetryInfo()
        info.retry_delay.FromNanoseconds(round(max(0.0, refusal.retry_after) * 1e9))
        details.append(info)
    if refusal.param:
        bad = error_details_pb2.BadRequest()
        bad.field_violations.add(field=refusal.param, description=refusal.message)
        details.append(bad)
    status = status_pb2.Status(code=refusal.grpc_code.value[0], message=refusal.message)
    for detail in details:
        status.details.add().Pack(detail)
    out: bytes = status.SerializeToString()
    return out
