"""Weights locations (``s3://``, ``gs://``, ``file://``) and opening stores for them.

Locations come only from the operator's config (``regions[].weights``,
``replication.origin``), never from a request, so no client-supplied URL
reaches an outbound call (docs/design.md §9). :class:`StoreFactory` shares the SDK
clients between every store it opens: one :class:`~regions.replication.s3.S3Clients`
(one client per AWS region) and one GCS client, created on first use in a
worker thread (credential discovery may touch the disk or the network).
"""

from __future__ import annotations

import asyncio
import importlib
import re
from dataclasses import dataclass
from typing import Any, Literal

from regions.replication.base import MiB, ObjectStore, join

Scheme = Literal["s3", "gs", "file"]

_S3_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_GCS_BUCKET = re.compile(r"^[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]$")
_PREFIX = re.compile(r"^[A-Za-z0-9._+=@,/-]*$")


@dataclass(frozen=True, slots=True)
class Location:
    scheme: Scheme
    bucket: str  # "" for file://
    prefix: str  # a path under the bucket; for file:// the absolute directory

    def child(self, *parts: str) -> Location:
        if self.scheme == "file":
            return Location("file", "", "/" + join(self.prefix, *parts))
        return Location(self.scheme, self.bucket, join(self.prefix, *parts))

    def __str__(self) -> str:
        if self.scheme == "file":
            return f"file://{self.prefix}"
        return f"{self.scheme}://{join(self.bucket, self.prefix)}"


def parse_location(url: str) -> Location:
    """``s3://bucket[/prefix]``, ``gs://bucket[/prefix]`` or ``file:///absolute/path``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"{url!r}: expected s3://, gs:// or file:///")
    if scheme == "file":
        if not rest.startswith("/") or "/../" in rest + "/" or "\x00" in rest:
            raise ValueError(f"{url!r}: file:// needs an absolute path without '..'")
        return Location("file", "", "/" + rest.strip("/"))
    if scheme not in ("s3", "gs"):
        raise ValueError(f"{url!r}: expected s3://, gs:// or file:///")
    bucket, _, prefix = rest.partition("/")
    pattern = _S3_BUCKET if scheme == "s3" else _GCS_BUCKET
    if not pattern.match(bucket):
        raise ValueError(f"{url!r}: {bucket!r} is not a valid bucket name")
    if not _PREFIX.match(prefix) or any(p in (".", "..") for p in prefix.split("/")):
        raise ValueError(f"{url!r}: the prefix may hold letters, digits and ._+=@,/- only")
    return Location("s3" if scheme == "s3" else "gs", bucket, prefix.strip("/"))


@dataclass(frozen=True, slots=True)
class StoreSettings:
    s3_endpoint_url: str | None = None  # S3-compatible endpoint (moto, MinIO); None = AWS
    gcs_endpoint: str | None = None  # GCS API endpoint (emulator); None = Google
    gcs_project: str | None = None
    gcs_anonymous: bool = False  # emulators only
    multipart_threshold: int = 64 * MiB
    part_size: int = 64 * MiB
    upload_chunk: int = 16 * MiB


class StoreFactory:
    def __init__(self, settings: StoreSettings | None = None) -> None:
        self.settings = settings or StoreSettings()
        self._s3: Any = None
        self._gcs: Any = None
        self._lock = asyncio.Lock()

    async def open(self, location: Location) -> ObjectStore:
        s = self.settings
        if location.scheme == "file":
            from regions.replication.local import LocalStore

            return LocalStore(location.prefix)
        if location.scheme == "s3":
            from regions.replication.s3 import S3Clients, S3Store

            async with self._lock:
                if self._s3 is None:
                    self._s3 = await asyncio.to_thread(S3Clients, s.s3_endpoint_url)
            return S3Store(
                self._s3,
                location.bucket,
                location.prefix,
                multipart_threshold=s.multipart_threshold,
                part_size=s.part_size,
            )
        from regions.replication.gcs import GcsStore

        async with self._lock:
            if self._gcs is None:
                self._gcs = await asyncio.to_thread(self._gcs_client)
        return GcsStore(self._gcs, location.bucket, location.prefix, upload_chunk=s.upload_chunk)

    def _gcs_client(self) -> Any:
        storage: Any = importlib.import_module("google.cloud.storage")
        s = self.settings
        options = {"api_endpoint": s.gcs_endpoint} if s.gcs_endpoint else None
        if s.gcs_anonymous:
            credentials: Any = importlib.import_module("google.auth.credentials")
            return storage.Client(
                project=s.gcs_project or "anonymous",
                credentials=credentials.AnonymousCredentials(),
                client_options=options,
            )
        return storage.Client(project=s.gcs_project, client_options=options)
