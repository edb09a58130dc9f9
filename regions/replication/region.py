"""Replicating one model version into one region: check, repair, verify, commit.

Steps (the state machine is in ``regions.replication.status``):

1. **Check** every manifest file at the destination (bounded by the job's
   semaphore): missing or wrong size → copy; otherwise prove it, cheapest
   first — the store's own checksum (S3 full-object SHA-256, GCS CRC32C
   against the manifest's), then the journal's record of an earlier
   verification of this very object (same size and tag), else re-hash it by
   streaming. A file that fails the proof is damaged and copied again.
2. **Repair**: publish ``copying`` (and only once the store took it), delete
   the destination's manifest, then copy what is missing or damaged —
   server-side when both ends are the same cloud, else streamed through the
   :class:`~regions.replication.hashing.HashingTee` — and verify each copy:
   store checksum, else the in-flight hash (streams: the store confirmed the
   bytes whose hash matched), else a re-hash (server-side copies without a
   trustworthy checksum, e.g. S3 multipart part-copies). Each verified file is
   recorded in the journal, so an interruption costs only the files in flight.
3. **Commit**: write the manifest last, then publish ``verified``.

Any failure — an unexpected exception included — publishes ``failed`` with a
one-line reason and leaves the manifest absent, so the region stays unready.
A cancelled run publishes ``failed: interrupted`` (or the job's
``stop_reason``, e.g. a lost lease; best effort) and re-raises.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from regions.replication.base import (
    ObjectInfo,
    ObjectStore,
    ReplicationError,
    StoreError,
    gather_all,
)
from regions.replication.hashing import HashingTee, SourceMismatch, digest_object
from regions.replication.journal import Journal, manifest_digest
from regions.replication.manifest import MANIFEST, FileEntry, Manifest, read_manifest
from regions.replication.status import (
    Phase,
    RegionProgress,
    ReplicaStatusSink,
    StatusUnavailable,
)

log = logging.getLogger("meridian.replication")


@dataclass(frozen=True, slots=True)
class RunContext:
    """What every region of one job shares."""

    job: str
    model: str
    version: str
    source: ObjectStore
    source_objects: dict[str, ObjectInfo]  # manifest path → the source object checked
    manifest: Manifest
    sink: ReplicaStatusSink
    gate: asyncio.Semaphore  # bounds file operations across all regions
    chunk_bytes: int
    reverify: bool
    publish_every_s: float
    monotonic: Callable[[], float]
    clock: Callable[[], float]
    notify: Callable[[RegionProgress], None]
    stop_reason: Callable[[], str] = lambda: "interrupted"  # why a cancelled run stopped


class RegionRun:
    def __init__(self, ctx: RunContext, store: ObjectStore, progress: RegionProgress) -> None:
        self.ctx = ctx
        self.dst = store
        self.p = progress
        self.journal = Journal(store, manifest_digest(ctx.manifest))
        self._published = 0.0
        self._touched = False  # this run recorded a status (it changes files only after that)

    async def _publish(self, phase: Phase, reason: str = "") -> None:
        """Raises StatusUnavailable: a transition that cannot be recorded must not happen."""
        self.p.phase, self.p.reason = phase, reason
        self.ctx.notify(self.p)
        self._published = self.ctx.monotonic()
        c = self.ctx
        await c.sink.set_replica(c.model, c.version, self.p.region, self.p.status(c.job))
        self._touched = True

    async def _publish_progress(self) -> None:
        if self.ctx.monotonic() - self._published < self.ctx.publish_every_s:
            return
        try:
            await self._publish(self.p.phase, self.p.reason)
        except StatusUnavailable as exc:
            log.warning("progress of %s not recorded: %s", self.p.region, exc)

    async def run(self) -> None:
        """Never raises but CancelledError; a run that had not yet changed anything (a
        check of a committed copy) leaves the recorded status alone when it fails."""
        try:
            await self._run()
        except asyncio.CancelledError:
            why = self.ctx.stop_reason()
            self._failed(why)
            # Best effort, briefly: keep what was verified, say why the region is not ready.
            with contextlib.suppress(StatusUnavailable, StoreError, TimeoutError):
                async with asyncio.timeout(2):
                    await self.journal.flush()
                    if self._touched:
                        await self._publish(Phase.FAILED, why)
            raise
        except (ReplicationError, StoreError, StatusUnavailable) as exc:
            log.warning("replication to %s failed: %s", self.p.region, exc)
            await self._fail(str(exc))
        except Exception as exc:  # a bug or an unmapped SDK error: this region's failure
            log.exception("replication to %s crashed", self.p.region)
            await self._fail(f"{type(exc).__name__}: {exc}")

    async def _fail(self, reason: str) -> None:
        self._failed(reason)
        if not self._touched:
            return
        try:
            await self._publish(Phase.FAILED, reason)
        except StatusUnavailable as again:
            self.p.reason = f"{reason} (status not recorded: {again})"

    def _failed(self, reason: str) -> None:
        untouched = "; nothing at the destination or in its status was changed"
        self.p.phase, self.p.finished = Phase.FAILED, self.ctx.clock()
        self.p.reason = reason if self._touched else reason + untouched
        self.ctx.notify(self.p)

    async def _run(self) -> None:
        c, p = self.ctx, self.p
        files = c.manifest.files
        p.files_total, p.bytes_total = len(files), c.manifest.total_bytes
        try:
            committed = await read_manifest(self.dst)
        except ReplicationError:
            committed = None  # a damaged marker is no marker; it is rewritten at the end
        intact = committed is not None and committed.same_files(c.manifest)
        if not intact:
            await self._publish(Phase.PENDING, "checking destination")
        self.journal = await Journal.load(self.dst, self.journal.digest)  # reverify: not trusted
        checked = await gather_all(*(self._check(e) for e in files))
        todo = [e for e, ok in zip(files, checked, strict=True) if not ok]
        await self.journal.flush()
        if todo:
            await self._publish(Phase.COPYING)
            await self.dst.delete(MANIFEST)  # before the first write: never "ready" mid-repair
            await gather_all(*(self._copy(e) for e in todo))
            await self.journal.flush()
        if todo or not intact:
            await self.dst.put(MANIFEST, c.manifest.to_json())  # the commit marker, last
        p.finished = c.clock()
        await self._publish(Phase.VERIFIED)

    def _proven_by_store(self, entry: FileEntry, info: ObjectInfo) -> str | None:
        if info.sha256 is not None and info.sha256 == entry.sha256:
            return "store-sha256"
        if info.crc32c is not None and info.crc32c == entry.crc32c:
            return "store-crc32c"
        return None

    def _verified(self, how: str, entry: FileEntry, info: ObjectInfo) -> None:
        self.p.verified_by[how] = self.p.verified_by.get(how, 0) + 1
        self.journal.record(entry, info)

    async def _check(self, entry: FileEntry) -> bool:
        """True when the destination already holds this file, proven."""
        async with self.ctx.gate:
            info = await self.dst.stat(entry.path)
            if info is None:
                return False
            how: str | None = None
            if info.size == entry.size:
                if not self.ctx.reverify:
                    how = self._proven_by_store(entry, info)
                    if how is None and self.journal.vouches(entry, info):
                        how = "journal"
                if how is None:
                    d = await digest_object(self.dst, entry.path, self.ctx.chunk_bytes)
                    how = "rehash" if d.sha256 == entry.sha256 else None
        if how is None:
            self.p.files_repaired += 1
            self.journal.forget(entry.path)
            return False
        self._verified(how, entry, info)
        self.p.files_kept += 1
        self.p.files_done += 1
        self.p.bytes_done += entry.size
        self.ctx.notify(self.p)
        return True

    async def _copy(self, entry: FileEntry) -> None:
        c, p = self.ctx, self.p
        counted = 0

        def on_bytes(n: int) -> None:
            nonlocal counted
            counted += n
            p.bytes_done += n
            p.bytes_copied += n
            c.notify(p)

        async with c.gate:
            try:
                await self._transfer(entry, on_bytes)
            except BaseException:
                p.bytes_done -= counted
                p.bytes_copied -= counted
                raise
        if counted < entry.size:  # a server-side copy may report less than it did
            on_bytes(entry.size - counted)
        p.files_done += 1
        p.files_copied += 1
        p.copied.append(entry.path)
        c.notify(p)
        await self.journal.flush()
        await self._publish_progress()

    async def _transfer(self, entry: FileEntry, on_bytes: Callable[[int], None]) -> ObjectInfo:
        c = self.ctx
        source_info = c.source_objects[entry.path]
        server_side = await self.dst.copy_from(c.source, entry.path, source_info, on_bytes)
        if not server_side:
            tee = HashingTee(
                c.source.read(entry.path, c.chunk_bytes),
                label=f"{c.source.url}/{entry.path}",
                size=entry.size,
                sha256=entry.sha256,
                on_bytes=on_bytes,
            )
            try:
                await self.dst.write(entry.path, tee, entry.size)
            finally:
                await tee.aclose()
        info = await self.dst.stat(entry.path)
        where = f"{self.dst.url}/{entry.path}"
        if info is None:
            raise ReplicationError(f"{where} is missing right after the copy")
        if info.size != entry.size:
            raise ReplicationError(f"{where} is {info.size} bytes after the copy, not {entry.size}")
        how = self._proven_by_store(entry, info) or ("in-flight" if not server_side else None)
        if how is None:
            d = await digest_object(self.dst, entry.path, c.chunk_bytes)
            if d.sha256 != entry.sha256:
                raise await self._blame(entry, where)
            how = "rehash"
        self._verified(how, entry, info)
        return info

    async def _blame(self, entry: FileEntry, where: str) -> ReplicationError:
        """A server-side copy that does not match: is the source or the copy wrong?"""
        src = await digest_object(self.ctx.source, entry.path, self.ctx.chunk_bytes)
        if src.sha256 != entry.sha256:
            return SourceMismatch(
                f"source file {self.ctx.source.url}/{entry.path} does not match its "
                f"manifest SHA-256 (read {src.sha256[:12]}…, expected {entry.sha256[:12]}…)"
            )
        return ReplicationError(f"{where} does not match the manifest after a server-side copy")
