"""``file:///path``: weights on the local disk of the host running the job.

For self-hosted GPU nodes: the path is a local or shared (NFS) mount that the
vLLM/TGI servers load from. Every file is written to a temporary name in the
same directory, fsynced and renamed, so a file at its final name is always
whole. Disk calls run in worker threads. The tag is size + mtime + inode, so
any rewrite of a file (even one of the same size) invalidates a verification
record of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO

from regions.replication.base import ObjectInfo, ObjectStore, OnBytes, StoreError
from regions.replication.base import in_thread as _in_thread
from regions.replication.manifest import TEMP_MARK


class LocalStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()
        self.url = f"file://{self.root}"

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root) or path == self.root:
            raise StoreError(f"{self.url}: key {key!r} escapes the root")
        return path

    @staticmethod
    def _info(key: str, st: os.stat_result) -> ObjectInfo:
        return ObjectInfo(key, st.st_size, f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}")

    async def stat(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = await asyncio.to_thread(os.stat, path)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.url}/{key}: {exc.strerror or exc}") from None
        return self._info(key, st)

    async def list(self) -> list[ObjectInfo]:
        def walk() -> list[ObjectInfo]:
            found: list[ObjectInfo] = []
            if not self.root.is_dir():
                return found
            for folder, _dirs, files in os.walk(self.root):
                for name in files:
                    path = Path(folder, name)
                    key = path.relative_to(self.root).as_posix()
                    found.append(self._info(key, path.stat()))
            return sorted(found, key=lambda o: o.key)

        try:
            return await asyncio.to_thread(walk)
        except OSError as exc:
            raise StoreError(f"{self.url}: {exc.strerror or exc}") from None

    async def get(self, key: str) -> bytes | None:
        try:
            return await asyncio.to_thread(self._path(key).read_bytes)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"{self.url}/{key}: {exc.strerror or exc}") from None

    async def put(self, key: str, data: bytes) -> None:
        async def one() -> AsyncIterator[bytes]:
            yield data

        await self.write(key, one(), len(data))

    async def delete(self, key: str) -> None:
        try:
            await asyncio.to_thread(self._path(key).unlink, missing_ok=True)
        except OSError as exc:
            raise StoreError(f"{self.url}/{key}: {exc.strerror or exc}") from None

    async def read(self, key: str, chunk_bytes: int) -> AsyncIterator[bytes]:
        path = self._path(key)

        def open_read() -> BinaryIO:
            return path.open("rb")

        try:
            f = await _in_thread(open_read)
        except OSError as exc:
            raise StoreError(f"{self.url}/{key}: {exc.strerror or exc}") from None
        try:
            while chunk := await _in_thread(f.read, chunk_bytes):
                yield chunk
        finally:
            f.close()

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        path = self._path(key)
        temp = path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(4)}")

        def open_temp() -> BinaryIO:
            path.parent.mkdir(parents=True, exist_ok=True)
            return temp.open("wb")

        def finish(f: BinaryIO) -> None:
            f.flush()
            os.fsync(f.fileno())
            f.close()
            os.replace(temp, path)

        f: BinaryIO | None = None
        try:
            f = await _in_thread(open_temp)
            async for chunk in chunks:
                await _in_thread(f.write, chunk)
            await _in_thread(finish, f)
        except OSError as exc:
            raise StoreError(f"{self.url}/{key}: {exc.strerror or exc}") from None
        finally:  # after a failure or a cancel; the threads above have all ended
            if f is not None and not f.closed:
                f.close()
            with contextlib.suppress(OSError):
                temp.unlink(missing_ok=True)

    async def copy_from(
        self, source: ObjectStore, key: str, info: ObjectInfo, on_bytes: OnBytes
    ) -> bool:
        return False  # no server side: the job streams (and hashes) every byte

    async def close(self) -> None:
        return None
