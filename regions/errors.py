"""Failures of a backend attempt, classified for the failover engine.

Adapters raise :class:`BackendError` with a :class:`FailureClass`; the executor
decides from the class (and from whether a first token was already sent) to
try another backend, resume, or give up. Messages never contain credentials.

    BackendError
    ├── failure = CONNECT         could not reach the backend
    ├── failure = TIMEOUT         connect / first-token / idle timeout
    ├── failure = OVERLOADED      429 or equivalent; retry_after when known
    ├── failure = SERVER          5xx from the backend
    ├── failure = STREAM_BROKEN   reset, malformed or truncated stream
    └── failure = CLIENT          4xx from the model: the request itself is bad
"""

from __future__ import annotations

import enum


class FailureClass(enum.Enum):
    CONNECT = "connect"
    TIMEOUT = "timeout"
    OVERLOADED = "overloaded"
    SERVER = "server"
    STREAM_BROKEN = "stream_broken"
    CLIENT = "client"

    @property
    def retryable(self) -> bool:
        """Another backend may succeed where this one failed."""
        return self is not FailureClass.CLIENT


class BackendError(Exception):
    def __init__(
        self,
        failure: FailureClass,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.failure = failure
        self.message = message
        self.status = status
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"BackendError({self.failure.value}, {self.message!r}, status={self.status})"
