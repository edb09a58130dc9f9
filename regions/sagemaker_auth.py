"""AWS credentials and SigV4 signing for SageMaker, with no blocking on the event loop.

boto3's credential chain can block for seconds: it reads files, runs
``credential_process`` commands, calls SSO, STS or the instance metadata
service. So the chain is resolved in a thread (once), and refreshable
credentials are refreshed in a thread, one refresh at a time:

    no snapshot yet, or expiry < MUST_REFRESH_S away  -> every caller awaits one refresh
    botocore's advisory window (15 min before expiry) -> callers keep the current
                                                          snapshot; one refresh runs behind
    otherwise                                         -> the cached snapshot

Each request signs with a frozen snapshot (``ReadOnlyCredentials``), so a
refresh never changes credentials halfway through signing. Signing itself is
CPU only (a SHA-256 of the body and four HMACs) and runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials, ReadOnlyCredentials

from regions.errors import BackendError, FailureClass

log = logging.getLogger(__name__)

SIGNING_NAME = "sagemaker"
MUST_REFRESH_S = 60
"""Closer than this to expiry, requests wait for fresh credentials."""

EMULATOR_ACCESS_KEY = "AKIDMERIDIANEMULATOR"
EMULATOR_SECRET_KEY = "meridian-emulator-not-a-secret"


class AwsCredentials:
    """Frozen AWS credentials on demand; ``resolve`` runs in a thread."""

    def __init__(self, resolve: Callable[[], Any]) -> None:
        self._resolve = resolve
        self._source: Any = None
        self._frozen: ReadOnlyCredentials | None = None
        self._refresh: asyncio.Task[ReadOnlyCredentials] | None = None

    @classmethod
    def from_chain(cls, profile: str | None = None) -> AwsCredentials:
        """boto3's default chain (environment, profile, SSO, container, IMDS...)."""

        def resolve() -> Any:
            import boto3

            return boto3.Session(profile_name=profile).get_credentials()

        return cls(resolve)

    @classmethod
    def static(cls, access_key: str, secret_key: str, token: str | None = None) -> AwsCredentials:
        creds = Credentials(access_key, secret_key, token)
        return cls(lambda: creds)

    @classmethod
    def emulator(cls) -> AwsCredentials:
        """Fixed fake keys: emulators check only that a request looks SigV4-signed."""
        return cls.static(EMULATOR_ACCESS_KEY, EMULATOR_SECRET_KEY)

    async def frozen(self) -> ReadOnlyCredentials:
        frozen = self._frozen
        if frozen is not None and not self._needs(None):
            return frozen
        if frozen is not None and not self._needs(MUST_REFRESH_S):
            self._start_refresh()  # advisory: refresh behind, keep serving
            return frozen
        return await asyncio.shield(self._start_refresh())

    async def close(self) -> None:
        task = self._refresh
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    def _needs(self, within: int | None) -> bool:
        check = getattr(self._source, "refresh_needed", None)
        return bool(check(within)) if check is not None else False

    def _start_refresh(self) -> asyncio.Task[ReadOnlyCredentials]:
        task = self._refresh
        if task is None or task.done():
            task = self._refresh = asyncio.get_running_loop().create_task(self._load())
            task.add_done_callback(_log_failure)
        return task

    async def _load(self) -> ReadOnlyCredentials:
        try:
            frozen = await asyncio.to_thread(self._load_blocking)
        except BackendError:
            raise
        except Exception as exc:  # botocore raises many kinds here (SSO, STS, IMDS, process)
            raise BackendError(
                FailureClass.SERVER, f"cannot load AWS credentials: {type(exc).__name__}: {exc}"
            ) from None
        self._frozen = frozen
        return frozen

    def _load_blocking(self) -> ReadOnlyCredentials:
        if self._source is None:
            self._source = self._resolve()
            if self._source is None:
                raise BackendError(
                    FailureClass.SERVER, "no AWS credentials found by the boto3 credential chain"
                )
        frozen: ReadOnlyCredentials = self._source.get_frozen_credentials()
        return frozen


def _log_failure(task: asyncio.Task[ReadOnlyCredentials]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("AWS credential refresh failed: %s", task.exception())


def sign(
    credentials: ReadOnlyCredentials,
    region: str,
    url: str,
    body: bytes,
    headers: Mapping[str, str],
) -> dict[str, str]:
    """``headers`` plus ``X-Amz-Date``, ``Authorization`` (and the session token) for a POST.

    Every header given is signed, so add them all before calling this.
    """
    request = AWSRequest(method="POST", url=url, data=body, headers=dict(headers))
    SigV4Auth(credentials, SIGNING_NAME, region).add_auth(request)
    return dict(request.headers.items())
