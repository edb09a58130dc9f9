"""Hashing bytes as they stream, off the event loop.

``hashlib`` releases the GIL for buffers over 2 KiB, so hashing an 8 MiB
chunk in a worker thread (``asyncio.to_thread``) costs the event loop one
thread hop, not the ~6 ms of SHA-256 work. CRC32C (``google_crc32c``, the C
implementation that google-cloud-storage ships) is computed beside SHA-256
when a manifest is built, so GCS objects can later be proven by their own
CRC32C without reading them back.

:class:`HashingTee` is the source side of every streamed copy: it passes the
chunks through, counts them, reports progress, and when the source is
exhausted checks size and SHA-256 against the manifest *before* the consumer
sees the end of the stream — so a store never commits bytes that do not match
(``regions.replication.base`` states that contract).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib
from collections.abc import AsyncIterator
from typing import Any

from regions.replication.base import ObjectStore, OnBytes, ReplicationError


class SourceMismatch(ReplicationError):
    """The bytes read from the source are not what the manifest says."""


def b64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _crc32c() -> Any | None:
    try:
        module: Any = importlib.import_module("google_crc32c")
    except ImportError:  # pragma: no cover - google-cloud-storage brings it
        return None
    return module.Checksum()


class Digester:
    """SHA-256 (always) and CRC32C (optional) of a byte stream, fed off the loop."""

    def __init__(self, *, crc32c: bool = False) -> None:
        self.size = 0
        self._sha = hashlib.sha256()
        self._crc = _crc32c() if crc32c else None

    def _update(self, chunk: bytes) -> None:
        self._sha.update(chunk)
        if self._crc is not None:
            self._crc.update(chunk)

    async def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if len(chunk) < 64 * 1024:
            self._update(chunk)  # cheaper than a thread hop
        else:
            await asyncio.to_thread(self._update, chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    @property
    def crc32c(self) -> str | None:
        return None if self._crc is None else base64.b64encode(self._crc.digest()).decode()


async def digest_object(
    store: ObjectStore, key: str, chunk_bytes: int, *, crc32c: bool = False
) -> Digester:
    """Read ``key`` whole, by streaming, and return its digests."""
    digester = Digester(crc32c=crc32c)
    async for chunk in store.read(key, chunk_bytes):
        await digester.update(chunk)
    return digester


class HashingTee:
    """The source's chunks, checked against ``size`` and ``sha256`` as they pass."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        label: str,
        size: int,
        sha256: str,
        on_bytes: OnBytes,
    ) -> None:
        self._chunks = chunks
        self._label = label
        self._size = size
        self._sha256 = sha256
        self._on_bytes = on_bytes
        self._digester = Digester()
        self._done = False

    def __aiter__(self) -> HashingTee:
        return self

    async def __anext__(self) -> bytes:
        if self._done:
            raise StopAsyncIteration
        try:
            chunk = await self._chunks.__anext__()
        except StopAsyncIteration:
            self._done = True
            self._check()
            raise
        await self._digester.update(chunk)
        if self._digester.size > self._size:
            raise SourceMismatch(
                f"source file {self._label} is longer than the manifest's {self._size} bytes"
            )
        self._on_bytes(len(chunk))
        return chunk

    def _check(self) -> None:
        got = self._digester.size
        if got != self._size:
            raise SourceMismatch(
                f"source file {self._label} ended at {got} bytes, the manifest says {self._size}"
            )
        if self._digester.sha256 != self._sha256:
            raise SourceMismatch(
                f"source file {self._label} does not match its manifest SHA-256 "
                f"(read {self._digester.sha256[:12]}…, expected {self._sha256[:12]}…)"
            )

    async def aclose(self) -> None:
        close = getattr(self._chunks, "aclose", None)
        if close is not None:
            await close()
