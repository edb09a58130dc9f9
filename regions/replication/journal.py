"""The destination's verification journal: which files were verified, in which state.

Resuming must not re-copy (or re-read) files that an interrupted run already
verified. Some stores can prove a file by their own checksum (S3's full-object
SHA-256, GCS's CRC32C); others cannot (local disk, S3 multipart objects). So
after each verified file the job records ``path → (size, tag, sha256)`` in
``.meridian-journal.json`` beside the files. The tag changes whenever an
object is rewritten (ETag, GCS generation, size+mtime+inode on disk), so a
record vouches for a file only while the file is untouched; anything else is
re-hashed. ``--reverify`` ignores the journal (bit rot that leaves size and
mtime alone is only caught by reading).

The journal belongs to one manifest (its digest); a journal of another
manifest is ignored. Writes are coalesced: concurrent copies each ask for a
flush, one write carries all records made so far.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging

import orjson

from regions.replication.base import ObjectInfo, ObjectStore, StoreError
from regions.replication.manifest import JOURNAL, FileEntry, Manifest

log = logging.getLogger("meridian.replication")


def manifest_digest(manifest: Manifest) -> str:
    return hashlib.sha256(manifest.to_json()).hexdigest()


class Journal:
    def __init__(self, store: ObjectStore, digest: str) -> None:
        self.store = store
        self.digest = digest
        self.records: dict[str, tuple[int, str, str]] = {}
        self._dirty = False
        self._lock = asyncio.Lock()

    @classmethod
    async def load(cls, store: ObjectStore, digest: str) -> Journal:
        journal = cls(store, digest)
        data = await store.get(JOURNAL)
        if data is None:
            return journal
        try:
            doc = orjson.loads(data)
            if doc.get("manifest") == digest:
                for path, (size, tag, sha) in doc["files"].items():
                    journal.records[str(path)] = (int(size), str(tag), str(sha))
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("ignoring a malformed journal at %s", store.url)
        return journal

    def vouches(self, entry: FileEntry, info: ObjectInfo) -> bool:
        return self.records.get(entry.path) == (info.size, info.tag, entry.sha256)

    def record(self, entry: FileEntry, info: ObjectInfo) -> None:
        self.records[entry.path] = (info.size, info.tag, entry.sha256)
        self._dirty = True

    def forget(self, path: str) -> None:
        if self.records.pop(path, None) is not None:
            self._dirty = True

    async def flush(self) -> None:
        """Best effort: a lost journal only costs a re-hash on the next run."""
        async with self._lock:
            if not self._dirty:
                return
            self._dirty = False
            doc = {"manifest": self.digest, "files": {p: list(r) for p, r in self.records.items()}}
            try:
                await self.store.put(JOURNAL, orjson.dumps(doc))
            except StoreError as exc:
                self._dirty = True
                log.warning("could not write the journal at %s: %s", self.store.url, exc)
            except BaseException:  # cancelled mid-write: the records are still unwritten
                self._dirty = True
                raise
