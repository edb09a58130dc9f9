"""Real object-store servers for the replication tests, on loopback free ports.

* :func:`moto_s3`: moto's threaded S3 server (one server, every region; the
  region comes from each request's SigV4 scope), buckets in us-east-1 and
  eu-west-1.
* :func:`gcs_emulator`: the PyPI ``gcp-storage-emulator`` in memory, reached
  with google-cloud-storage through an ``api_endpoint`` override and
  anonymous credentials.

Both are module-scoped (starting them costs ~0.1–0.5 s); tests use their own
prefixes so they never see each other's objects. Plus helpers to lay out a
model version and a store wrapper that counts copies.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import importlib
import logging
import os
import socket
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import boto3
import pytest

from regions.replication.base import ObjectInfo, ObjectStore, OnBytes
from regions.replication.location import StoreFactory, StoreSettings
from regions.replication.manifest import MANIFEST, FileEntry, Manifest

S3_BUCKETS = {"weights-use1": "us-east-1", "weights-euw1": "eu-west-1"}
GCS_BUCKETS = ("weights-euw4",)
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Servers:
    s3_endpoint: str = ""
    gcs_endpoint: str = ""

    def settings(self, **overrides: Any) -> StoreSettings:
        values: dict[str, Any] = {
            "s3_endpoint_url": self.s3_endpoint or None,
            "gcs_endpoint": self.gcs_endpoint or None,
            "gcs_project": "test",
            "gcs_anonymous": True,
            "multipart_threshold": 6 << 20,
            "part_size": 5 << 20,
            "upload_chunk": 256 << 10,
        }
        values.update(overrides)
        return StoreSettings(**values)

    def factory(self, **overrides: Any) -> StoreFactory:
        return StoreFactory(self.settings(**overrides))


@pytest.fixture(scope="module")
def moto_s3() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    # moto's state is per process, not per server: start from nothing.
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    for bucket, region in S3_BUCKETS.items():
        client = boto3.client("s3", region_name=region, endpoint_url=endpoint)
        extra = {} if region == "us-east-1" else {"LocationConstraint": region}
        client.create_bucket(
            Bucket=bucket, **({"CreateBucketConfiguration": extra} if extra else {})
        )
    try:
        yield endpoint
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def gcs_emulator() -> Iterator[str]:
    emulator: Any = importlib.import_module("gcp_storage_emulator.server")
    logging.getLogger("gcp_storage_emulator").setLevel(logging.ERROR)
    port = free_port()
    server = emulator.create_server("127.0.0.1", port, in_memory=True)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    storage: Any = importlib.import_module("google.cloud.storage")
    credentials: Any = importlib.import_module("google.auth.credentials")
    client = storage.Client(
        project="test",
        credentials=credentials.AnonymousCredentials(),
        client_options={"api_endpoint": endpoint},
    )
    for bucket in GCS_BUCKETS:
        client.create_bucket(bucket, location="europe-west4")
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def no_gcs_writer_left_open() -> Iterator[None]:
    """Fail the test that leaves a BlobWriter with an open buffer, rather than a later
    one: at garbage collection such a writer *uploads* (IOBase.__del__ → close), with
    retries that time.sleep on the collecting thread — an event loop, for a minute."""
    yield
    fileio: Any = importlib.import_module("google.cloud.storage.fileio")
    left = [
        # type(), not isinstance(): the heap holds dead weak proxies too
        o
        for o in gc.get_objects()
        if type(o) is fileio.BlobWriter and not o._buffer.closed
    ]
    for writer in left:
        writer._buffer.close()  # defused: nothing uploads at collection
    assert not left, f"{len(left)} GCS upload(s) left open: {[w._blob.name for w in left]}"


@pytest.fixture
def servers(moto_s3: str, gcs_emulator: str) -> Servers:
    return Servers(moto_s3, gcs_emulator)


def pattern(size: int, seed: int) -> bytes:
    """Deterministic, incompressible-looking bytes (cheap to make)."""
    block = hashlib.sha256(f"{seed}".encode()).digest() * 2048  # 64 KiB
    return (block * (size // len(block) + 1))[:size]


def manifest_of(model: str, version: str, files: dict[str, bytes]) -> Manifest:
    return Manifest(
        model,
        version,
        "2026-11-22T08:00:00Z",
        tuple(
            FileEntry(path, len(data), hashlib.sha256(data).hexdigest())
            for path, data in sorted(files.items())
        ),
    )


async def publish(
    store: ObjectStore, model: str, version: str, files: dict[str, bytes], *, manifest: bool = True
) -> Manifest:
    """Lay out a model version at a source location (files, then its manifest)."""
    for path, data in files.items():
        await store.put(path, data)
    m = manifest_of(model, version, files)
    if manifest:
        await store.put(MANIFEST, m.to_json())
    return m


@dataclass
class Counting:
    """An ObjectStore that counts the copies made into it (streamed or server-side); with a
    ``gate``, a source whose reads stall until the gate is set."""

    inner: ObjectStore
    writes: list[str] = field(default_factory=list)
    server_copies: list[str] = field(default_factory=list)
    gate: asyncio.Event | None = None  # when set: every read waits for it (a stalled source)

    @property
    def url(self) -> str:
        return self.inner.url

    @property
    def copies(self) -> list[str]:
        return sorted(
            k
            for k in self.writes + self.server_copies
            if k not in (MANIFEST,) and ".meridian" not in k
        )

    async def stat(self, key: str) -> ObjectInfo | None:
        return await self.inner.stat(key)

    async def list(self) -> list[ObjectInfo]:
        return await self.inner.list()

    async def get(self, key: str) -> bytes | None:
        return await self.inner.get(key)

    async def put(self, key: str, data: bytes) -> None:
        await self.inner.put(key, data)

    async def delete(self, key: str) -> None:
        await self.inner.delete(key)

    async def read(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        if self.gate is not None:
            await self.gate.wait()
        async for chunk in self.inner.read(key, chunk_bytes):
            yield chunk

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        self.writes.append(key)
        await self.inner.write(key, chunks, size)

    async def copy_from(
        self, source: ObjectStore, key: str, info: ObjectInfo, on_bytes: OnBytes
    ) -> bool:
        src = source.inner if isinstance(source, Counting) else source
        done = await self.inner.copy_from(src, key, info, on_bytes)
        if done:
            self.server_copies.append(key)
        return done

    async def close(self) -> None:
        await self.inner.close()
