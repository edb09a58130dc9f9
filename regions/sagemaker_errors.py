"""SageMaker Runtime error responses mapped onto the failover classes.

botocore's rest-json rule decides the error code: the ``x-amzn-ErrorType``
header (the text before ``:``), else the body's ``__type``/``code``/``Code``
(reference/protocols.md §1.2). The mapping, and why:

=============================================  ===============  =================================
error                                          class            why
=============================================  ===============  =================================
ThrottlingException (HTTP 400!) and kin, 429   OVERLOADED       capacity, another backend may serve
ModelNotReadyException 429                     OVERLOADED       still loading (serverless, MME)
ModelError 424, OriginalStatusCode 429         OVERLOADED       the container shed load
ModelError 424, OriginalStatusCode 0/408/504   TIMEOUT          "invocation timed out" (60 s)
ModelError 424, OriginalStatusCode 400/413/422 CLIENT           the container rejected the request
ModelError 424, other                          SERVER           the container failed
ValidationError 400                            CLIENT           the request is invalid
ValidationError "... not found"                SERVER           wrong endpoint/component: config
ValidationError, ErrorCode                     SERVER           the endpoint hosts inference
INFERENCE_COMPONENT_NAME_MISSING                                components and the backend names
                                                                none: config, not the client
auth errors (AccessDenied, signature, token)   SERVER           gateway misconfigured, not client
ServiceUnavailable 503, InternalFailure 500,   SERVER           the service failed
InternalDependencyException 530
anything else                                  by HTTP status   as for OpenAI-compatible backends
=============================================  ===============  =================================
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from regions.errors import BackendError, FailureClass
from regions.openai_compat import classify_status, parse_retry_after

_THROTTLED = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "LimitExceededException",
        "SlowDown",
    }
)
_AUTH = frozenset(
    {
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "IncompleteSignatureException",
        "MissingAuthenticationTokenException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "SignatureDoesNotMatch",
    }
)
_SERVER = frozenset({"ServiceUnavailable", "InternalFailure", "InternalDependencyException"})
_MISCONFIGURED = frozenset({"INFERENCE_COMPONENT_NAME_MISSING"})
"""ValidationError ``ErrorCode`` values that blame the backend's configuration:
AWS answers a request without an inference-component header to an endpoint
hosting components with this code (raw body quoted in BerriAI/litellm PR
#37766; the message in langchain-ai/langchain#14344)."""


def error_code(headers: Mapping[str, str], body: Mapping[str, Any]) -> str:
    """The error code exactly as botocore would report it."""
    header = headers.get("x-amzn-ErrorType") or headers.get("x-amzn-errortype")
    if header:
        return header.split(":", 1)[0]
    code = body.get("__type") or body.get("code") or body.get("Code") or ""
    return str(code).rsplit("#", 1)[-1]


def classify(status: int, code: str, body: Mapping[str, Any]) -> tuple[FailureClass, str]:
    """The failure class and a short detail for one error response."""
    message = str(body.get("message") or body.get("Message") or "")
    if code in _THROTTLED or code == "ModelNotReadyException" or status == 429:
        return FailureClass.OVERLOADED, message
    if code == "ModelError":
        original = _int(body.get("OriginalStatusCode"))
        detail = f"container status {original}: {message}" if original is not None else message
        return _classify_original(original), detail
    if code == "ValidationError":
        detail_code = body.get("ErrorCode")  # any JSON: a list would not even hash
        misconfigured = isinstance(detail_code, str) and detail_code in _MISCONFIGURED
        if misconfigured or "not found" in message.lower():
            return FailureClass.SERVER, message
        return FailureClass.CLIENT, message
    if code in _AUTH or code in _SERVER:
        return FailureClass.SERVER, message
    return classify_status(status), message


def _classify_original(original: int | None) -> FailureClass:
    if original == 429:
        return FailureClass.OVERLOADED
    if original in (0, 408, 504):
        return FailureClass.TIMEOUT
    if original in (400, 413, 422):
        return FailureClass.CLIENT
    return FailureClass.SERVER


def response_error(status: int, headers: Mapping[str, str], payload: bytes) -> BackendError:
    """A :class:`BackendError` for a non-200 SageMaker response."""
    try:
        parsed = orjson.loads(payload) if payload else {}
    except orjson.JSONDecodeError:
        parsed = {}
    body: Mapping[str, Any] = parsed if isinstance(parsed, dict) else {}
    code = error_code(headers, body)
    failure, detail = classify(status, code, body)
    name = code or "error"
    return BackendError(
        failure,
        f"SageMaker {name} (HTTP {status})" + (f": {detail[:300]}" if detail else ""),
        status=status,
        retry_after=parse_retry_after(headers.get("Retry-After")),
    )


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None
