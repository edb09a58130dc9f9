"""The manifest of one model version: every file, its size and SHA-256.

Layout of a version at any location (``regions[].weights`` in the config)::

    LOCATION/MODEL/VERSION/<files...>
    LOCATION/MODEL/VERSION/meridian-manifest.json     the commit marker

At the source the manifest is the publication record (built from the files
when missing). At a destination it is written *last*, after every file is
verified, and deleted *first* before anything there is rewritten, so a
destination with a manifest is complete and verified, and a half-copied one
never looks ready to a loader or to the job.

JSON shape (``format`` 1; ``crc32c`` optional, base64 as GCS reports it)::

    {"format": 1, "model": "llama", "version": "v2", "created": "2026-11-22T08:00:00Z",
     "files": [{"path": "model-00001.safetensors", "size": 123, "sha256": "<hex>",
                "crc32c": "<b64>"}, ...]}

Paths are validated on parse (relative, no ``..``, no backslashes), because a
destination on local disk writes to them.
"""

from __future__ import annotations

import asyncio
import datetime
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from regions.replication.base import ObjectStore, ReplicationError
from regions.replication.hashing import digest_object

MANIFEST = "meridian-manifest.json"
JOURNAL = ".meridian-journal.json"
TEMP_MARK = ".meridian-tmp-"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEGMENT = re.compile(r"^[A-Za-z0-9._+=@,-]+$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def check_name(what: str, value: str) -> str:
    """A model or version name usable as one path segment everywhere."""
    if not _NAME.match(value) or value in (".", ".."):
        raise ReplicationError(f"bad {what} name {value!r}: letters, digits, '.', '_', '-'")
    return value


def check_path(path: str) -> str:
    """A file path inside a version: relative, forward slashes, no dot segments."""
    parts = path.split("/")
    if (
        not path
        or path.startswith("/")
        or any(p in ("", ".", "..") or not _SEGMENT.match(p) for p in parts)
    ):
        raise ReplicationError(f"manifest path {path!r} is not a safe relative path")
    return path


def is_bookkeeping(key: str) -> bool:
    """Our own objects in a version folder, never part of the model."""
    name = key.rsplit("/", 1)[-1]
    return key in (MANIFEST, JOURNAL) or TEMP_MARK in name


@dataclass(frozen=True, slots=True)
class FileEntry:
    path: str
    size: int
    sha256: str
    crc32c: str | None = None

    def as_json(self) -> dict[str, Any]:
        d: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.crc32c is not None:
            d["crc32c"] = self.crc32c
        return d


@dataclass(frozen=True, slots=True)
class Manifest:
    model: str
    version: str
    created: str  # ISO-8601 UTC
    files: tuple[FileEntry, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        return orjson.dumps(
            {
                "format": 1,
                "model": self.model,
                "version": self.version,
                "created": self.created,
                "files": [f.as_json() for f in self.files],
            },
            option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS,
        )

    def same_files(self, other: Manifest) -> bool:
        return (self.model, self.version, self.files) == (other.model, other.version, other.files)

    @classmethod
    def from_json(cls, data: bytes, where: str = "manifest") -> Manifest:
        try:
            doc = orjson.loads(data)
            if not isinstance(doc, dict) or doc.get("format") != 1:
                raise ValueError("not a format-1 manifest object")
            files = []
            seen: set[str] = set()
            for item in doc["files"]:
                entry = FileEntry(
                    check_path(str(item["path"])),
                    int(item["size"]),
                    str(item["sha256"]),
                    None if item.get("crc32c") is None else str(item["crc32c"]),
                )
                if entry.size < 0 or not _HEX64.match(entry.sha256):
                    raise ValueError(f"bad size or sha256 for {entry.path!r}")
                if entry.path in seen or is_bookkeeping(entry.path):
                    raise ValueError(f"{entry.path!r} listed twice or reserved")
                seen.add(entry.path)
                files.append(entry)
            return cls(
                check_name("model", str(doc["model"])),
                check_name("version", str(doc["version"])),
                str(doc["created"]),
                tuple(sorted(files, key=lambda f: f.path)),
            )
        except ReplicationError as exc:
            raise ReplicationError(f"{where}: {exc}") from None
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplicationError(f"{where} is malformed: {exc}") from None


def utc_now(clock: Callable[[], float]) -> str:
    moment = datetime.datetime.fromtimestamp(clock(), datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


async def build_manifest(
    store: ObjectStore,
    model: str,
    version: str,
    *,
    clock: Callable[[], float],
    chunk_bytes: int,
    concurrency: int = 4,
) -> Manifest:
    """Hash every file of a version folder (streaming) into a manifest."""
    objects = [o for o in await store.list() if not is_bookkeeping(o.key)]
    if not objects:
        raise ReplicationError(f"{store.url} holds no files and no {MANIFEST}")
    gate = asyncio.Semaphore(concurrency)

    async def entry(key: str) -> FileEntry:
        async with gate:
            d = await digest_object(store, key, chunk_bytes, crc32c=True)
        return FileEntry(check_path(key), d.size, d.sha256, d.crc32c)

    files = await asyncio.gather(*(entry(o.key) for o in objects))
    return Manifest(model, version, utc_now(clock), tuple(sorted(files, key=lambda f: f.path)))


async def read_manifest(store: ObjectStore) -> Manifest | None:
    data = await store.get(MANIFEST)
    return None if data is None else Manifest.from_json(data, f"{store.url}/{MANIFEST}")
