"""``s3://bucket/prefix``: boto3 in worker threads, each bucket in its own region.

Calls go through :class:`S3Clients`, which finds each bucket's region once
(HeadBucket's ``x-amz-bucket-region``) and keeps one client per region, so a
request always goes to the bucket's own regional endpoint. boto3 clients are
thread-safe; every call runs in ``asyncio.to_thread``.

Copies (protocols.md §6):

* S3→S3 is server-side, sent to the *destination* bucket's region with the
  source as ``x-amz-copy-source`` (any region) and ``CopySourceIfMatch`` on
  the ETag the job checked: CopyObject up to ``multipart_threshold``, else
  CreateMultipartUpload + UploadPartCopy of ``part_size`` ranges (a few at a
  time) + Complete, aborted on any error.
* Streams from elsewhere are buffered one part at a time (bounded memory:
  the buffer plus one ``bytes`` per part, hashed in a worker thread): one
  PutObject for a small object, else multipart UploadPart. Every body
  carries its ``x-amz-checksum-sha256`` so S3 rejects bytes damaged on the way.

``ObjectInfo.sha256`` is the object's ChecksumSHA256 (HeadObject with
ChecksumMode) unless S3 says it is COMPOSITE or it carries a ``-N`` suffix;
moto reports multipart composites bare, which is why the job treats a
checksum *mismatch* as "unknown", never as proof of damage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import boto3
import botocore.config
import botocore.exceptions

from regions.replication.base import (
    MiB,
    ObjectInfo,
    ObjectStore,
    OnBytes,
    StoreError,
    gather_all,
    join,
)
from regions.replication.hashing import b64_to_hex

_MIN_PART = 5 * MiB  # every part but the last (EntityTooSmall)
_MAX_PARTS = 10_000
_MAX_COPY = 5 << 30  # CopyObject's limit; larger objects need UploadPartCopy


def _error(where: str, exc: Exception) -> StoreError:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        code, message = err.get("Code", "error"), err.get("Message", "")
        return StoreError(f"{where}: {code} {message}".rstrip())
    return StoreError(f"{where}: {type(exc).__name__}: {exc}")


def _missing(exc: Exception) -> bool:
    if not isinstance(exc, botocore.exceptions.ClientError):
        return False
    return exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound")


async def _sha256_b64(data: bytes) -> str:
    """Off the event loop: a body may be a whole part (tens of MiB)."""
    digest = await asyncio.to_thread(lambda: hashlib.sha256(data).digest())
    return base64.b64encode(digest).decode()


def _take(buffer: bytearray, n: int) -> bytes:
    """The first ``n`` bytes of ``buffer``, removed from it: one copy (the part's body)."""
    with memoryview(buffer) as view, view[:n] as head:
        body = bytes(head)
    del buffer[:n]
    return body


class S3Clients:
    """One boto3 client per region (credentials from boto3's chain), and bucket regions."""

    def __init__(self, endpoint_url: str | None = None, *, max_pool: int = 32) -> None:
        self.endpoint_url = endpoint_url
        self._session = boto3.session.Session()
        self._config = botocore.config.Config(
            max_pool_connections=max_pool, retries={"mode": "standard", "max_attempts": 5}
        )
        self._clients: dict[str, Any] = {}
        self._regions: dict[str, str] = {}
        self._lock = threading.Lock()  # boto3 sessions are not thread-safe

    def client(self, region: str) -> Any:
        with self._lock:
            client = self._clients.get(region)
            if client is None:
                client = self._clients[region] = self._session.client(
                    "s3", region_name=region, endpoint_url=self.endpoint_url, config=self._config
                )
            return client

    async def region(self, bucket: str) -> str:
        """The bucket's region, asked once."""
        region = self._regions.get(bucket)
        if region is None:
            region = self._regions[bucket] = await asyncio.to_thread(self._find_region, bucket)
        return region

    async def for_bucket(self, bucket: str) -> Any:
        """The client of the bucket's own region."""
        return await asyncio.to_thread(self.client, await self.region(bucket))

    def _find_region(self, bucket: str) -> str:
        probe = self.client("us-east-1")
        try:
            head = probe.head_bucket(Bucket=bucket)
            region = head["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region")
            if not region:
                location = probe.get_bucket_location(Bucket=bucket).get("LocationConstraint")
                region = {None: "us-east-1", "": "us-east-1", "EU": "eu-west-1"}.get(
                    location, location
                )
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            raise _error(f"s3://{bucket}", exc) from None
        return str(region)


class S3Store:
    def __init__(
        self,
        clients: S3Clients,
        bucket: str,
        prefix: str = "",
        *,
        multipart_threshold: int = 64 * MiB,
        part_size: int = 64 * MiB,
        part_concurrency: int = 4,
    ) -> None:
        self.clients = clients
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{join(bucket, self.prefix)}"
        self.multipart_threshold = min(max(multipart_threshold, _MIN_PART), _MAX_COPY)
        self.part_size = max(part_size, _MIN_PART)
        self.part_concurrency = part_concurrency

    def _key(self, key: str) -> str:
        return join(self.prefix, key)

    async def _call(self, where: str, op: Callable[[Any], Any]) -> Any:
        client = await self.clients.for_bucket(self.bucket)
        try:
            return await asyncio.to_thread(op, client)
        except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
            if _missing(exc):
                raise FileNotFoundError(where) from None
            raise _error(where, exc) from None

    def _part_size(self, size: int) -> int:
        need = -(-size // _MAX_PARTS)
        return max(self.part_size, -(-need // MiB) * MiB)

    async def stat(self, key: str) -> ObjectInfo | None:
        k = self._key(key)
        try:
            head = await self._call(
                f"{self.url}/{key}",
                lambda c: c.head_object(Bucket=self.bucket, Key=k, ChecksumMode="ENABLED"),
            )
        except FileNotFoundError:
            return None
        full = head.get("ChecksumType") != "COMPOSITE"
        sha = head.get("ChecksumSHA256")
        crc = head.get("ChecksumCRC32C")
        return ObjectInfo(
            key,
            int(head["ContentLength"]),
            str(head["ETag"]),
            b64_to_hex(sha) if sha and full and "-" not in sha else None,
            crc if crc and full and "-" not in crc else None,
        )

    async def list(self) -> list[ObjectInfo]:
        root = self.prefix + "/" if self.prefix else ""

        def pages(client: Any) -> list[ObjectInfo]:
            found = []
            for page in client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=root
            ):
                for o in page.get("Contents", []):
                    key = str(o["Key"])[len(root) :]
                    if key and not key.endswith("/"):
                        found.append(ObjectInfo(key, int(o["Size"]), str(o["ETag"])))
            return found

        return sorted(await self._call(self.url, pages), key=lambda o: o.key)

    async def get(self, key: str) -> bytes | None:
        k = self._key(key)
        try:
            return bytes(
                await self._call(
                    f"{self.url}/{key}",
                    lambda c: c.get_object(Bucket=self.bucket, Key=k)["Body"].read(),
                )
            )
        except FileNotFoundError:
            return None

    async def put(self, key: str, data: bytes) -> None:
        await self._put(key, data)

    async def _put(self, key: str, data: bytes) -> None:
        k, checksum = self._key(key), await _sha256_b64(data)
        await self._call(
            f"{self.url}/{key}",
            lambda c: c.put_object(
                Bucket=self.bucket,
                Key=k,
                Body=data,
                ChecksumAlgorithm="SHA256",
                ChecksumSHA256=checksum,
            ),
        )

    async def delete(self, key: str) -> None:
        k = self._key(key)
        await self._call(f"{self.url}/{key}", lambda c: c.delete_object(Bucket=self.bucket, Key=k))

    async def read(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        k = self._key(key)
        try:
            resp = await self._call(
                f"{self.url}/{key}", lambda c: c.get_object(Bucket=self.bucket, Key=k)
            )
        except FileNotFoundError:
            raise StoreError(f"{self.url}/{key}: NoSuchKey") from None
        body = resp["Body"]
        try:
            while True:
                try:
                    chunk = await asyncio.to_thread(body.read, chunk_bytes)
                except (botocore.exceptions.BotoCoreError, OSError) as exc:
                    raise _error(f"{self.url}/{key}", exc) from None
                if not chunk:
                    return
                yield chunk
        finally:
            body.close()

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        part_size = self._part_size(size)
        buffer = bytearray()
        if size <= part_size:
            async for chunk in chunks:
                buffer += chunk
            data = bytes(buffer)
            buffer.clear()  # one copy held while it uploads
            await self._put(key, data)
            return
        k, where = self._key(key), f"{self.url}/{key}"
        upload = await self._call(
            where,
            lambda c: c.create_multipart_upload(
                Bucket=self.bucket, Key=k, ChecksumAlgorithm="SHA256"
            ),
        )
        upload_id = upload["UploadId"]
        parts: list[dict[str, Any]] = []

        async def send(body: bytes) -> None:
            number = len(parts) + 1
            checksum = await _sha256_b64(body)
            resp = await self._call(
                where,
                lambda c: c.upload_part(
                    Bucket=self.bucket,
                    Key=k,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                    ChecksumSHA256=checksum,
                ),
            )
            parts.append({"PartNumber": number, "ETag": resp["ETag"], "ChecksumSHA256": checksum})

        try:
            async for chunk in chunks:
                buffer += chunk
                while len(buffer) >= part_size:
                    await send(_take(buffer, part_size))
            if buffer or not parts:
                await send(_take(buffer, len(buffer)))
            await self._complete(where, k, upload_id, parts)
        except BaseException:
            await self._abort(k, upload_id)
            raise

    async def _complete(self, where: str, k: str, upload_id: str, parts: Sequence[Any]) -> None:
        await self._call(
            where,
            lambda c: c.complete_multipart_upload(
                Bucket=self.bucket, Key=k, UploadId=upload_id, MultipartUpload={"Parts": parts}
            ),
        )

    async def _abort(self, k: str, upload_id: str) -> None:
        # A lifecycle rule cleans up whatever an abort could not.
        with contextlib.suppress(StoreError, FileNotFoundError):
            await asyncio.shield(
                self._call(
                    self.url,
                    lambda c: c.abort_multipart_upload(
                        Bucket=self.bucket, Key=k, UploadId=upload_id
                    ),
                )
            )

    async def copy_from(
        self, source: ObjectStore, key: str, info: ObjectInfo, on_bytes: OnBytes
    ) -> bool:
        if (
            not isinstance(source, S3Store)
            or source.clients.endpoint_url != self.clients.endpoint_url
        ):
            return False
        k, where = self._key(key), f"{self.url}/{key}"
        copy_source = {"Bucket": source.bucket, "Key": source._key(info.key)}
        try:
            await self._server_copy(where, k, copy_source, info, on_bytes)
        except FileNotFoundError:
            raise StoreError(f"{source.url}/{info.key}: NoSuchKey (source vanished)") from None
        return True

    async def _server_copy(
        self, where: str, k: str, copy_source: dict[str, str], info: ObjectInfo, on_bytes: OnBytes
    ) -> None:
        if info.size <= self.multipart_threshold:
            await self._call(
                where,
                lambda c: c.copy_object(
                    Bucket=self.bucket,
                    Key=k,
                    CopySource=copy_source,
                    CopySourceIfMatch=info.tag,
                    ChecksumAlgorithm="SHA256",
                ),
            )
            on_bytes(info.size)
            return
        part_size = self._part_size(info.size)
        upload = await self._call(
            where, lambda c: c.create_multipart_upload(Bucket=self.bucket, Key=k)
        )
        upload_id = upload["UploadId"]
        gate = asyncio.Semaphore(self.part_concurrency)

        async def part(number: int, start: int) -> dict[str, Any]:
            end = min(start + part_size, info.size) - 1
            async with gate:
                resp = await self._call(
                    where,
                    lambda c: c.upload_part_copy(
                        Bucket=self.bucket,
                        Key=k,
                        UploadId=upload_id,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceIfMatch=info.tag,
                        CopySourceRange=f"bytes={start}-{end}",
                    ),
                )
            on_bytes(end - start + 1)
            return {"PartNumber": number, "ETag": resp["CopyPartResult"]["ETag"]}

        try:
            parts = await gather_all(
                *(part(i, s) for i, s in enumerate(range(0, info.size, part_size), 1))
            )
            await self._complete(where, k, upload_id, list(parts))
        except BaseException:
            await self._abort(k, upload_id)
            raise

    async def close(self) -> None:
        return None
