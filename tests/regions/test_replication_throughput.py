"""Throughput of a multi-GB synthetic replication (``-m slow``; prints its numbers).

    .venv/bin/pytest -m slow tests/regions/test_replication_throughput.py -s

``MERIDIAN_REPL_GIB`` sets the file→file volume (default 4 GiB, sparse source
files so only the destination is real disk), ``MERIDIAN_REPL_S3_GIB`` the
S3→S3 volume through moto (default 1 GiB: moto keeps objects in its own
process, so the upload that seeds it dominates). Each run reports the
manifest build (hashing the source) and the replication (copy + verify).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from regions.replication import (
    MANIFEST,
    JobOptions,
    MemorySink,
    ReplicationJob,
    Target,
    build_manifest,
    parse_location,
)
from regions.replication.base import MiB
from regions.replication.location import StoreFactory
from tests.regions.replication_servers import (
    Servers,
    gcs_emulator,
    moto_s3,
    no_gcs_writer_left_open,
    servers,
)

FIXTURES = (
    no_gcs_writer_left_open,
    gcs_emulator,
    moto_s3,
    servers,
)  # used by name: pytest finds them here

GiB = 1 << 30


def sparse_files(root: Path, total: int, count: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        with (root / f"model-{i:05}-of-{count:05}.safetensors").open("wb") as f:
            f.truncate(total // count)


def report(what: str, nbytes: int, seconds: float) -> None:
    print(
        f"\n{what}: {nbytes / GiB:.2f} GiB in {seconds:.2f} s = {nbytes / MiB / seconds:.0f} MiB/s"
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_file_to_file_multi_gib(tmp_path: Path) -> None:
    total = int(float(os.environ.get("MERIDIAN_REPL_GIB", "4")) * GiB)
    sparse_files(tmp_path / "src" / "m" / "v1", total, 4)
    factory = StoreFactory()
    source = await factory.open(parse_location(f"file://{tmp_path}/src/m/v1"))
    dest = await factory.open(parse_location(f"file://{tmp_path}/dst/m/v1"))

    started = time.perf_counter()
    manifest = await build_manifest(source, "m", "v1", clock=time.time, chunk_bytes=8 * MiB)
    await source.put(MANIFEST, manifest.to_json())
    report("manifest build (sha256+crc32c of the source)", total, time.perf_counter() - started)

    job = ReplicationJob("slow", "m", "v1", source, [Target("fra", dest)], MemorySink())
    started = time.perf_counter()
    result = await job.run()
    report(
        "file→file replication (stream, hash in flight, fsync)",
        total,
        time.perf_counter() - started,
    )
    assert result.ok, result.regions["fra"].reason
    assert result.regions["fra"].bytes_copied == total

    started = time.perf_counter()
    again = await ReplicationJob(
        "slow2", "m", "v1", source, [Target("fra", dest)], MemorySink(), JobOptions(reverify=True)
    ).run()
    report("re-verify of the destination (re-hash all)", total, time.perf_counter() - started)
    assert again.ok and again.regions["fra"].files_copied == 0


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_s3_to_s3_multi_part_copy(servers: Servers, tmp_path: Path) -> None:
    total = int(float(os.environ.get("MERIDIAN_REPL_S3_GIB", "1")) * GiB)
    sparse_files(tmp_path / "seed", total, 2)
    factory = servers.factory(multipart_threshold=64 * MiB, part_size=64 * MiB)
    seed = await factory.open(parse_location(f"file://{tmp_path}/seed"))
    source = await factory.open(parse_location("s3://weights-use1/slow/m/v1"))
    dest = await factory.open(parse_location("s3://weights-euw1/slow/m/v1"))
    started = time.perf_counter()
    await ReplicationJob("seed", "m", "v1", seed, [Target("us", source)], MemorySink()).run()
    report(
        "seeding moto (file→S3 multipart upload, incl. manifest build)",
        total,
        time.perf_counter() - started,
    )

    started = time.perf_counter()
    result = await ReplicationJob("s3", "m", "v1", source, [Target("eu", dest)], MemorySink()).run()
    report("S3→S3 across regions (UploadPartCopy + re-hash)", total, time.perf_counter() - started)
    assert result.ok, result.regions["eu"].reason
    assert result.regions["eu"].verified_by == {"rehash": 2}
