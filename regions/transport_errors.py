"""aiohttp's transport failures as the failure classes failover acts on.

Every adapter wraps its upstream call in :data:`TRANSPORT_ERRORS`, so the
three providers classify a refused connection, a connect timeout and a broken
stream alike: ``CONNECT`` and ``TIMEOUT`` happen before any byte arrived (a
safe retry elsewhere), ``STREAM_BROKEN`` may come mid-stream (resumption).
A :class:`BackendError` raised inside passes unchanged.
"""

from __future__ import annotations

from types import TracebackType

import aiohttp

from regions.errors import BackendError, FailureClass


class _TransportErrors:
    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, BackendError):
            return
        if isinstance(exc, aiohttp.ClientConnectorError):
            raise BackendError(FailureClass.CONNECT, f"cannot connect: {exc.os_error}") from None
        if isinstance(exc, aiohttp.ServerTimeoutError):
            raise BackendError(FailureClass.TIMEOUT, "connect timeout") from None
        if isinstance(exc, (aiohttp.ClientError, ConnectionError)):
            raise BackendError(FailureClass.STREAM_BROKEN, f"stream broken: {exc!r}") from None


TRANSPORT_ERRORS = _TransportErrors()
