"""What a client is told when no attempt produced a first token."""

from __future__ import annotations

import math

from regions.errors import BackendError


class ExecutionFailed(Exception):
    """No attempt produced a first token; ``status`` is what the client gets."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def client_error(exc: BackendError) -> ExecutionFailed:
    """A 4xx from the model: the client's request is at fault, in the model's words."""
    message = exc.message.split(": ", 1)[1] if ": " in exc.message else exc.message
    return ExecutionFailed(400, "invalid_request_error", message)


def exhausted(failures: list[BackendError], attempts: int, hint: float | None) -> ExecutionFailed:
    """Every round failed (or nothing could be tried): a 503 passing on ``hint``, the
    last round's Retry-After (:func:`~failover.backoff.soonest_retry_after`)."""
    if not failures:
        return ExecutionFailed(
            503, "no_backend_available", "no backend could be tried for this request", 1.0
        )
    kinds = sorted({f.failure.value for f in failures})
    return ExecutionFailed(
        503,
        "upstream_unavailable",
        f"all {attempts} attempts failed ({', '.join(kinds)})",
        # A Retry-After header is a finite number of seconds.
        hint if hint is not None and math.isfinite(hint) else 1.0,
    )
