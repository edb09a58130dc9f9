"""``gs://bucket/prefix``: google-cloud-storage in worker threads.

GCS→GCS copies are server-side rewrites (``rewriteTo``): each call copies
some bytes and returns a token until ``done``; copies across locations or
storage classes take several calls (protocols.md §6). Every call pins the
source generation the job checked (``ifSourceGenerationMatch``, as the S3
path pins the ETag with ``CopySourceIfMatch``): a source object replaced
meanwhile fails the copy with 412 instead of landing bytes nobody verified
against the manifest. The call is a
constructor seam (``rewrite``), because the PyPI emulator always finishes
in one call (docs/design.md §10), so the tests inject a short first answer to
drive the loop.

Streams from elsewhere use a resumable upload (``BlobWriter``) in chunks of
``upload_chunk`` bytes (a multiple of 256 KiB): memory stays bounded, and the
library checks the CRC32C of what it sent against what GCS stored. The
upload is only finalised (``close``) after the source iterator ended
cleanly; on any error or cancel the session is terminated (and the writer's
buffer closed, so ``IOBase.__del__`` cannot finalise it later): no object
appears.

Every call raises :class:`StoreError` for what the SDK reports — a missing
bucket included; only ``get``/``delete``/``read`` treat a missing object as
such.

``ObjectInfo`` carries the object's ``crc32c`` (GCS computes it for every
object, composite ones included) and its ``generation`` as the tag.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from regions.replication.base import (
    MiB,
    ObjectInfo,
    ObjectStore,
    OnBytes,
    StoreError,
    in_thread,
    join,
)

# (destination blob, source blob, token, source generation to pin)
#   -> (token or None when done, bytes so far, total)
Rewrite = Callable[[Any, Any, str | None, int | None], tuple[str | None, int, int]]

_QUANTUM = 256 * 1024


def default_rewrite(
    dst: Any, src: Any, token: str | None, generation: int | None
) -> tuple[str | None, int, int]:
    token, done, total = dst.rewrite(src, token=token, if_source_generation_match=generation)
    return token, int(done), int(total)


def _is_precondition(exc: Exception) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.PreconditionFailed)


def _is_missing(exc: Exception) -> bool:
    from google.api_core import exceptions as gexc

    return isinstance(exc, gexc.NotFound)


def sdk_errors() -> tuple[type[Exception], ...]:
    """What google-cloud-storage raises for a failed call (not for a bug of ours)."""
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    requests: Any = importlib.import_module("requests")
    media: Any = importlib.import_module("google.cloud.storage.exceptions")
    return (
        api.GoogleAPIError,
        auth.GoogleAuthError,
        requests.RequestException,
        media.InvalidResponse,
        media.DataCorruption,
        OSError,
    )


def _error(where: str, exc: Exception) -> StoreError:
    message = getattr(exc, "message", None) or str(exc)
    code = getattr(exc, "code", None)
    prefix = f"{code} " if code else ""
    return StoreError(f"{where}: {prefix}{str(message).splitlines()[0][:300]}")


class GcsStore:
    def __init__(
        self,
        client: Any,
        bucket: str,
        prefix: str = "",
        *,
        upload_chunk: int = 16 * MiB,
        rewrite: Rewrite = default_rewrite,
    ) -> None:
        self.client = client
        self.bucket_name = bucket
        self.prefix = prefix.strip("/")
        self.url = f"gs://{join(bucket, self.prefix)}"
        self.upload_chunk = max(_QUANTUM, upload_chunk // _QUANTUM * _QUANTUM)
        self.rewrite = rewrite
        self._bucket = client.bucket(bucket)
        self._errors = sdk_errors()

    def _blob(self, key: str) -> Any:
        return self._bucket.blob(join(self.prefix, key))

    async def _call(self, where: str, op: Callable[[], Any], *, settle: bool = False) -> Any:
        """Raises FileNotFoundError for a 404 (the caller decides what that means), else
        StoreError; ``settle``: a cancel waits for the thread to end (it holds a writer)."""
        try:
            return await (in_thread(op) if settle else asyncio.to_thread(op))
        except FileNotFoundError:
            raise
        except self._errors as exc:
            if _is_missing(exc):
                raise FileNotFoundError(where) from None
            raise _error(where, exc) from None

    async def _must(self, where: str, op: Callable[[], Any], *, settle: bool = False) -> Any:
        """``_call`` where a 404 can only mean the bucket is missing: a StoreError too."""
        try:
            return await self._call(where, op, settle=settle)
        except FileNotFoundError:
            raise StoreError(
                f"{where}: 404 not found (does bucket {self.bucket_name} exist?)"
            ) from None

    async def stat(self, key: str) -> ObjectInfo | None:
        name = join(self.prefix, key)
        blob = await self._must(f"{self.url}/{key}", lambda: self._bucket.get_blob(name))
        if blob is None:
            return None
        return ObjectInfo(key, int(blob.size), str(blob.generation), None, blob.crc32c)

    async def list(self) -> list[ObjectInfo]:
        root = self.prefix + "/" if self.prefix else ""

        def pages() -> list[ObjectInfo]:
            found = []
            for blob in self.client.list_blobs(self.bucket_name, prefix=root):
                key = str(blob.name)[len(root) :]
                if key and not key.endswith("/"):
                    found.append(ObjectInfo(key, int(blob.size), str(blob.generation)))
            return found

        return sorted(await self._must(self.url, pages), key=lambda o: o.key)

    async def get(self, key: str) -> bytes | None:
        blob = self._blob(key)
        try:
            return bytes(await self._call(f"{self.url}/{key}", blob.download_as_bytes))
        except FileNotFoundError:
            return None

    async def put(self, key: str, data: bytes) -> None:
        blob = self._blob(key)
        await self._must(
            f"{self.url}/{key}", lambda: blob.upload_from_string(data, checksum="crc32c")
        )

    async def delete(self, key: str) -> None:
        blob = self._blob(key)
        with contextlib.suppress(FileNotFoundError):
            await self._call(f"{self.url}/{key}", blob.delete)

    async def read(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        where = f"{self.url}/{key}"
        blob = self._blob(key)
        reader: Any = None
        try:
            reader = await self._call(where, lambda: blob.open("rb", chunk_size=chunk_bytes))
            while chunk := await self._call(where, lambda: reader.read(chunk_bytes)):
                yield chunk
        except FileNotFoundError:
            raise StoreError(f"{where}: not found") from None
        finally:
            if reader is not None:
                reader.close()

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        where = f"{self.url}/{key}"
        blob = self._blob(key)
        # Opening sends nothing (the upload starts with the first full chunk), so it
        # happens here rather than in a thread whose result a cancel could drop: a
        # BlobWriter left to the garbage collector *uploads* in IOBase.__del__, with
        # retries that time.sleep on whichever thread collects it, an event loop too.
        writer = blob.open("wb", chunk_size=self.upload_chunk, checksum="crc32c")
        try:
            async for chunk in chunks:
                await self._must(where, lambda c=chunk: writer.write(c), settle=True)  # type: ignore[misc]
            await self._must(where, writer.close, settle=True)
        except BaseException:
            try:
                await self._abandon(where, writer)
            finally:
                writer._buffer.close()  # even if abandoning was cut short: no upload at GC
            raise

    async def _abandon(self, where: str, writer: Any) -> None:
        """Terminate the resumable upload so nothing lands under the key, even if the
        caller is cancelled again meanwhile (the thread holds ``writer`` until it is done)."""

        def terminate() -> None:
            try:
                writer.terminate()  # DELETE the session (if one was started)
            finally:
                writer._buffer.close()  # closed: IOBase.__del__ cannot finalise it

        with contextlib.suppress(StoreError, FileNotFoundError):
            await asyncio.shield(self._call(where, terminate))

    async def copy_from(
        self, source: ObjectStore, key: str, info: ObjectInfo, on_bytes: OnBytes
    ) -> bool:
        if not isinstance(source, GcsStore) or source.client is not self.client:
            return False
        where = f"{self.url}/{key}"
        dst, src = self._blob(key), source._blob(info.key)
        generation = int(info.tag) if info.tag.isdigit() else None
        token: str | None = None
        reported = 0
        while True:
            try:
                token, done, _total = await self._call(
                    where,
                    lambda t=token: self._rewrite(dst, src, t, generation),  # type: ignore[misc]
                )
            except FileNotFoundError:
                raise StoreError(f"{source.url}/{info.key}: not found (source vanished)") from None
            if done > reported:
                on_bytes(done - reported)
                reported = done
            if token is None:
                break
        if reported < info.size:
            on_bytes(info.size - reported)
        return True

    def _rewrite(
        self, dst: Any, src: Any, token: str | None, generation: int | None
    ) -> tuple[str | None, int, int]:
        try:
            return self.rewrite(dst, src, token, generation)
        except self._errors as exc:
            if _is_precondition(exc):
                raise StoreError(
                    f"gs://{src.bucket.name}/{src.name}: changed since it was checked "
                    f"(generation {generation} no longer current)"
                ) from None
            raise

    async def close(self) -> None:
        return None
