"""Google credentials for Vertex AI: bearer tokens refreshed off the event loop.

``google.auth.default()`` may probe the metadata server and read files, and
``Credentials.refresh`` is a blocking HTTP call, so both run in a thread
(reference/protocols.md §3.2). google-auth's ``token_state`` drives when:

    INVALID (no token yet, or expired)  -> callers await one shared refresh
    STALE   (< 3 min 45 s to expiry)    -> callers use the current token; one
                                           refresh runs behind them
    FRESH                               -> the current token

so there is at most one refresh in flight per credentials object, and under
steady traffic no request ever waits for one. A token the server refuses
(401: revoked, or a clock skewed against Google's) is refreshed at once by
:meth:`GoogleCredentials.refreshed` and the request sent again, as
google-auth's own ``AuthorizedSession`` does (``DEFAULT_REFRESH_STATUS_CODES``
is ``(401,)``); the adapter retries once, not AuthorizedSession's two
times, since a token refused right after its refresh will not be fixed by
another. ``AnonymousCredentials`` add no
header (for emulators that do not check); ``static`` credentials carry a fixed
token and never refresh.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import google.auth
from google.auth.credentials import AnonymousCredentials, Credentials, TokenState
from google.auth.exceptions import GoogleAuthError

from regions.errors import BackendError, FailureClass

log = logging.getLogger(__name__)

SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)
EMULATOR_TOKEN = "meridian-emulator-token"


def _default() -> Credentials:
    credentials, _project = google.auth.default(scopes=list(SCOPES))
    return credentials


def _refresh_blocking(credentials: Credentials) -> None:
    import urllib3
    from google.auth.transport.urllib3 import Request

    with urllib3.PoolManager() as http:
        credentials.refresh(Request(http))  # type: ignore[no-untyped-call]


class GoogleCredentials:
    """Authorization headers on demand for one credentials object."""

    def __init__(
        self,
        credentials: Credentials | None = None,
        *,
        load: Callable[[], Credentials] = _default,
        refresh: Callable[[Credentials], None] = _refresh_blocking,
    ) -> None:
        self._credentials = credentials
        self._load = load
        self._refresh_blocking = refresh
        self._task: asyncio.Task[None] | None = None
        self.refreshable = not isinstance(credentials, AnonymousCredentials)
        """False for anonymous and :meth:`static` credentials: a 401 is final."""

    @classmethod
    def application_default(cls) -> GoogleCredentials:
        return cls()

    @classmethod
    def static(cls, token: str) -> GoogleCredentials:
        """A fixed token that never expires (emulators, tests)."""
        from google.oauth2.credentials import Credentials as OAuth2Credentials

        credentials = cls(OAuth2Credentials(token=token))  # type: ignore[no-untyped-call]
        credentials.refreshable = False
        return credentials

    async def headers(self) -> dict[str, str]:
        """``Authorization`` (and ``x-goog-user-project`` when set) for one request."""
        credentials = self._credentials
        if credentials is None or credentials.token_state is TokenState.INVALID:
            if not isinstance(credentials, AnonymousCredentials):
                await asyncio.shield(self._start())
                credentials = self._credentials
        elif credentials.token_state is TokenState.STALE:
            self._start()  # refresh behind; this token is still good for minutes
        headers: dict[str, str] = {}
        if credentials is not None:
            credentials.apply(headers)  # type: ignore[no-untyped-call]
        return headers

    async def refreshed(self, rejected: Mapping[str, str]) -> dict[str, str] | None:
        """Headers to send again with after the server answered 401 to ``rejected``.

        The token is refreshed now, whatever its local expiry says, once for
        all the requests it failed: when another caller's refresh already
        replaced it, that token is used. None when nothing can be refreshed.
        Raises :class:`BackendError` (SERVER) when the refresh fails."""
        if not self.refreshable:
            return None
        current: dict[str, str] = {}
        if self._credentials is not None:
            self._credentials.apply(current)  # type: ignore[no-untyped-call]
        if current.get("authorization") == _authorization(rejected):
            await asyncio.shield(self._start())
        return await self.headers()

    async def close(self) -> None:
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def _start(self) -> asyncio.Task[None]:
        task = self._task
        if task is None or task.done():
            task = self._task = asyncio.get_running_loop().create_task(self._refresh())
            task.add_done_callback(_log_failure)
        return task

    async def _refresh(self) -> None:
        try:
            if self._credentials is None:
                self._credentials = await asyncio.to_thread(self._load)
                if self._credentials.token_state is not TokenState.INVALID:
                    return
            if not isinstance(self._credentials, AnonymousCredentials):
                await asyncio.to_thread(self._refresh_blocking, self._credentials)
        except (GoogleAuthError, OSError, ValueError) as exc:
            raise BackendError(
                FailureClass.SERVER, f"cannot get Google credentials: {type(exc).__name__}: {exc}"
            ) from None


def _authorization(headers: Mapping[str, str]) -> str | None:
    for key, value in headers.items():
        if key.lower() == "authorization":
            return value
    return None


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("Google credential refresh failed: %s", task.exception())
