"""The one small interface every weights location implements (S3, GCS, local disk).

A store is *rooted*: it stands for ``s3://bucket/prefix``, ``gs://bucket/prefix``
or ``file:///path``, and every key it takes is a relative POSIX path under that
root. The replication job (``regions.replication.job``) only ever talks to
this protocol, so an S3→GCS copy and a file→file copy are the same code path.

Contracts the job relies on:

* ``write`` consumes ``chunks`` to the end *before* it makes the object
  visible, and makes it visible atomically (S3 CompleteMultipartUpload or a
  single PutObject, the last GCS resumable chunk, ``rename`` on disk). If the
  iterator raises — the job's hashing tee does when the source bytes do not
  match the manifest — nothing is left under ``key``. A write either stores
  exactly the bytes it was given (each store checks what it received: S3 part
  checksums, GCS CRC32C, a local fsync) or raises.
* ``copy_from`` is the server-side path (S3 CopyObject/UploadPartCopy, GCS
  rewrite): it returns False, having done nothing, when it cannot copy from
  that kind of source, and the job streams instead.
* ``ObjectInfo.sha256``/``crc32c`` are only what the *store itself* computed
  over the whole object; a match proves the content, a mismatch proves
  nothing (it may be a composite checksum), so the job re-hashes then.
* Every method raises :class:`StoreError` (one line, no credentials) for
  anything the store answers with an error.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

MiB = 1 << 20
T = TypeVar("T")

OnBytes = Callable[[int], None]  # progress: n more bytes copied


class StoreError(Exception):
    """A store refused or failed an operation; ``str()`` is one line for an operator."""


class ReplicationError(Exception):
    """The replication cannot go on (bad manifest, broken source, failed verification)."""


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    key: str  # relative to the store's root
    size: int
    tag: str  # changes whenever the object is rewritten: ETag, generation, size+mtime+inode
    sha256: str | None = None  # hex; a full-object SHA-256 the store computed itself
    crc32c: str | None = None  # base64 big-endian; a full-object CRC32C the store computed


class ObjectStore(Protocol):
    @property
    def url(self) -> str:
        """The root, for messages."""
        ...

    async def stat(self, key: str) -> ObjectInfo | None:
        """The object's size, tag and store checksums; None if it does not exist."""
        ...

    async def list(self) -> list[ObjectInfo]:
        """Every object under the root (keys relative to it)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """A small object whole (manifest, journal); None if it does not exist."""
        ...

    async def put(self, key: str, data: bytes) -> None:
        """A small object, written atomically."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; nothing happens if it does not exist."""
        ...

    def read(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        """The object's bytes in chunks of at most ``chunk_bytes`` (bounded memory)."""
        ...

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        """Stream ``size`` bytes into ``key``; see the module docstring for the contract."""
        ...

    async def copy_from(
        self, source: ObjectStore, key: str, info: ObjectInfo, on_bytes: OnBytes
    ) -> bool:
        """Server-side copy of ``source``'s ``info.key`` to ``key``; False if not possible."""
        ...

    async def close(self) -> None: ...


def join(*parts: str) -> str:
    """Join key parts with single slashes, ignoring empty ones."""
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


async def in_thread(fn: Callable[..., T], *args: Any) -> T:
    """``asyncio.to_thread``, but a cancelled caller still waits for the thread to end.

    A thread cannot be stopped; cleaning up (closing, unlinking a temporary
    file, abandoning an upload) while it still writes would race it.
    """
    future = asyncio.ensure_future(asyncio.to_thread(fn, *args))
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(BaseException):
            await future
        raise


async def gather_all(*coros: Coroutine[Any, Any, T]) -> list[T]:
    """Run concurrently; on the first failure cancel the rest and raise that failure.

    ``asyncio.gather`` would leave the others running (an S3 abort racing
    part uploads); a bare TaskGroup would wrap the error in an ExceptionGroup.
    """
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coros]
    except BaseExceptionGroup as eg:
        first = eg.exceptions[0]
        while isinstance(first, BaseExceptionGroup):
            first = first.exceptions[0]
        raise first from None
    return [t.result() for t in tasks]
