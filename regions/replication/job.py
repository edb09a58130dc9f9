"""One replication job: a model version from one source into one or more regions.

The job reads the source manifest — or, only when the source is the
configured origin (``build_missing_manifest``), builds and publishes one there
— then checks the source — every listed file present with its
listed size — *before* any destination is touched, so a broken source never
takes a region out of service: regions that already hold a committed copy of
this version are left alone, the others are marked ``failed`` with the
reason. Then every region runs (``regions.replication.region``) concurrently,
all sharing one semaphore that bounds file operations.

Progress: ``job.progress[region]`` is live (bytes at chunk granularity) and
``on_progress`` is called on every change — the admin API and the CLI's
progress bars read it; the store gets transitions plus a coarse progress
update at most every ``publish_every_s``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from regions.replication.base import (
    MiB,
    ObjectInfo,
    ObjectStore,
    ReplicationError,
    StoreError,
    gather_all,
)
from regions.replication.manifest import (
    MANIFEST,
    Manifest,
    build_manifest,
    check_name,
    read_manifest,
)
from regions.replication.status import (
    Phase,
    RegionProgress,
    ReplicaStatusSink,
    StatusUnavailable,
)

log = logging.getLogger("meridian.replication")

OnProgress = Callable[[RegionProgress], None]


@dataclass(frozen=True, slots=True)
class Target:
    region: str
    store: ObjectStore  # rooted at LOCATION/MODEL/VERSION


@dataclass(frozen=True, slots=True)
class JobOptions:
    concurrency: int = 4  # files in flight, across all regions
    chunk_bytes: int = 8 * MiB  # streaming read size (memory per stream)
    reverify: bool = False  # re-hash every destination file, trusting no record
    publish_every_s: float = 5.0
    # Only for the configured origin, where publishers may upload without a manifest. A region
    # without one holds no verified copy (perhaps a half-finished replication): never build there.
    build_missing_manifest: bool = False


@dataclass
class JobReport:
    job: str
    model: str
    version: str
    source: str
    manifest_built: bool = False
    regions: dict[str, RegionProgress] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return all(p.phase is Phase.VERIFIED for p in self.regions.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "model": self.model,
            "version": self.version,
            "source": self.source,
            "manifest_built": self.manifest_built,
            "ok": self.ok,
            "regions": [p.as_json() for p in self.regions.values()],
        }


class ReplicationJob:
    def __init__(
        self,
        job: str,
        model: str,
        version: str,
        source: ObjectStore,
        targets: Sequence[Target],
        sink: ReplicaStatusSink,
        options: JobOptions | None = None,
        *,
        on_progress: OnProgress | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        source_region: str | None = None,
    ) -> None:
        if not targets:
            raise ReplicationError("no destination region")
        self.model = check_name("model", model)
        self.version = check_name("version", version)
        self.source = source
        self.targets = tuple(targets)
        self.sink = sink
        self.options = options or JobOptions()
        self.on_progress = on_progress
        self.clock = clock
        self.monotonic = monotonic
        self.source_region = source_region  # the source is that region's copy, not the origin
        self.stop_reason = "interrupted"  # what a cancel records (the admin API may say more)
        self.report = JobReport(job, model, version, source.url)
        self.progress = self.report.regions
        for t in self.targets:
            self.progress[t.region] = RegionProgress(t.region, t.store.url, started=clock())

    def _notify(self, progress: RegionProgress) -> None:
        if self.on_progress is not None:
            self.on_progress(progress)

    async def run(self) -> JobReport:
        try:
            manifest = await self._source_manifest()
            objects = await self._check_source(manifest)
        except (ReplicationError, StoreError) as exc:
            await self._refuse(str(exc))
            return self.report
        except asyncio.CancelledError:
            await self._refuse(self.stop_reason)
            raise
        except Exception as exc:  # a bug or an unmapped SDK error: still a reason per region
            log.exception("replication %s: reading the source failed", self.report.job)
            await self._refuse(f"{type(exc).__name__}: {exc}")
            return self.report
        # A gateway's admin API can start a job at any time; the copying itself loads
        # with the first one (idle RSS of a gateway that never replicates).
        from regions.replication.region import RegionRun, RunContext

        o = self.options
        ctx = RunContext(
            job=self.report.job,
            model=self.model,
            version=self.version,
            source=self.source,
            source_objects=objects,
            manifest=manifest,
            sink=self.sink,
            gate=asyncio.Semaphore(o.concurrency),
            chunk_bytes=o.chunk_bytes,
            reverify=o.reverify,
            publish_every_s=o.publish_every_s,
            monotonic=self.monotonic,
            clock=self.clock,
            notify=self._notify,
            stop_reason=lambda: self.stop_reason,
        )
        runs = [RegionRun(ctx, t.store, self.progress[t.region]) for t in self.targets]
        await gather_all(*(r.run() for r in runs))  # each run records its own failure
        return self.report

    async def _source_manifest(self) -> Manifest:
        manifest = await read_manifest(self.source)
        if manifest is None:
            if self.source_region is not None:
                raise ReplicationError(
                    f"region {self.source_region} holds no verified copy of "
                    f"{self.model}@{self.version}: replicate to it first"
                )
            if not self.options.build_missing_manifest:
                raise ReplicationError(f"{self.source.url} has no {MANIFEST}")
            log.info("no manifest at %s: hashing the source to build one", self.source.url)
            manifest = await build_manifest(
                self.source,
                self.model,
                self.version,
                clock=self.clock,
                chunk_bytes=self.options.chunk_bytes,
                concurrency=self.options.concurrency,
            )
            self.report.manifest_built = True
            try:
                await self.source.put(MANIFEST, manifest.to_json())
            except StoreError as exc:  # read-only source: the manifest still guides this run
                log.warning("could not publish the manifest at %s: %s", self.source.url, exc)
        if (manifest.model, manifest.version) != (self.model, self.version):
            raise ReplicationError(
                f"{self.source.url}/{MANIFEST} describes {manifest.model}@{manifest.version}, "
                f"not {self.model}@{self.version}"
            )
        return manifest

    async def _check_source(self, manifest: Manifest) -> dict[str, ObjectInfo]:
        """Every listed file must exist at the source with its listed size."""
        gate = asyncio.Semaphore(max(self.options.concurrency, 8))

        async def stat(path: str) -> ObjectInfo | None:
            async with gate:
                return await self.source.stat(path)

        infos = await gather_all(*(stat(f.path) for f in manifest.files))
        problems = []
        for entry, info in zip(manifest.files, infos, strict=True):
            if info is None:
                problems.append(f"source file {entry.path} is missing at {self.source.url}")
            elif info.size != entry.size:
                problems.append(
                    f"source file {entry.path} is {info.size} bytes at {self.source.url}, "
                    f"the manifest says {entry.size}"
                )
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise ReplicationError(problems[0] + more)
        return {e.path: i for e, i in zip(manifest.files, infos, strict=True) if i is not None}

    async def _refuse(self, reason: str) -> None:
        """The source is unusable: fail each region unless it already holds a committed copy
        (or its copy cannot be read just now: its recorded status is then left alone)."""
        for t in self.targets:
            p = self.progress[t.region]
            p.phase, p.reason, p.finished = Phase.FAILED, reason, self.clock()
            try:
                kept = await read_manifest(t.store)
            except ReplicationError:
                kept = None  # a damaged marker is no committed copy
            except StoreError as exc:
                p.reason = f"{reason}; its status was left as it was ({exc})"
                self._notify(p)
                continue
            if kept is not None and (kept.model, kept.version) == (self.model, self.version):
                p.reason = f"{reason}; the copy already there is left as it was"
                self._notify(p)
                continue
            self._notify(p)
            try:
                await self.sink.set_replica(
                    self.model, self.version, t.region, p.status(self.report.job)
                )
            except StatusUnavailable as exc:
                log.warning("status of %s not recorded: %s", t.region, exc)
