"""The replication job over real HTTP: moto's S3 server, the GCS emulator, local folders.

Each test lays out a model version at a source, replicates it, and checks
the destination byte for byte, the commit marker, the status history the
routing gate reads, and — for resumption and repair — exactly which files
were copied (counted by a wrapper around the destination store).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import itertools
import threading
import types
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from regions.replication import (
    MANIFEST,
    JobOptions,
    MemorySink,
    ObjectStore,
    Phase,
    RegionProgress,
    ReplicationJob,
    StoreError,
    Target,
    parse_location,
)
from regions.replication import s3 as s3_module
from regions.replication.base import MiB
from regions.replication.hashing import HashingTee, SourceMismatch
from regions.replication.location import StoreFactory
from regions.replication.s3 import S3Store
from tests.regions.replication_servers import (
    Counting,
    Servers,
    gcs_emulator,
    moto_s3,
    no_gcs_writer_left_open,
    pattern,
    publish,
    servers,
)

FIXTURES = (
    no_gcs_writer_left_open,
    gcs_emulator,
    moto_s3,
    servers,
)  # used by name: pytest finds them here

MODEL = "llama-test"
_n = itertools.count()

FILES = {
    "config.json": b'{"layers": 2}',
    "tokenizer/tokenizer.json": pattern(300_000, 1),
    "model-00001-of-00002.safetensors": pattern(1 * MiB + 17, 2),
    "model-00002-of-00002.safetensors": pattern(7 * MiB + 5, 3),  # > 6 MiB: multipart
}


def exists(*parts: object) -> bool:
    return Path(*map(str, parts)).exists()


def flip_a_byte(path: Path, at: int) -> None:
    damaged = bytearray(path.read_bytes())
    damaged[at] ^= 0xFF
    path.write_bytes(bytes(damaged))


def version() -> str:
    return f"v{next(_n)}"


async def open_at(factory: StoreFactory, url: str, v: str) -> ObjectStore:
    return await factory.open(parse_location(url).child(MODEL, v))


async def contents(store: ObjectStore) -> dict[str, bytes]:
    out = {}
    for o in await store.list():
        if not o.key.startswith(".meridian") and o.key != MANIFEST:
            data = await store.get(o.key)
            assert data is not None
            out[o.key] = data
    return out


def job(
    source: ObjectStore,
    targets: dict[str, ObjectStore],
    sink: MemorySink,
    v: str,
    **options: object,
) -> ReplicationJob:
    opts = JobOptions(chunk_bytes=1 * MiB, publish_every_s=0.0, **options)  # type: ignore[arg-type]
    return ReplicationJob(
        f"job-{v}",
        MODEL,
        v,
        source,
        [Target(r, s) for r, s in targets.items()],
        sink,
        opts,
    )


@pytest.mark.parametrize(
    "destination",
    ["s3://weights-euw1/models", "gs://weights-euw4/models", "file"],
    ids=["s3-to-s3", "s3-to-gcs", "s3-to-file"],
)
async def test_full_replication_from_s3(servers: Servers, tmp_path: Path, destination: str) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, "s3://weights-use1/releases", v)
    manifest = await publish(source, MODEL, v, FILES)
    url = f"file://{tmp_path}/weights" if destination == "file" else destination
    dst = Counting(await open_at(factory, url, v))
    sink = MemorySink()

    report = await job(source, {"eu": dst}, sink, v).run()

    p = report.regions["eu"]
    assert report.ok, p.reason
    assert await contents(dst) == FILES
    assert await dst.get(MANIFEST) == manifest.to_json()
    assert sink.phases("eu")[0] is Phase.PENDING and sink.phases("eu")[-1] is Phase.VERIFIED
    assert Phase.COPYING in sink.phases("eu")
    assert (p.files_copied, p.bytes_copied, p.bytes_done) == (
        4,
        manifest.total_bytes,
        p.bytes_total,
    )
    assert dst.copies == sorted(FILES)
    if destination.startswith("s3://"):
        assert isinstance(dst.inner, S3Store) and isinstance(source, S3Store)
        # Each bucket is addressed in its own region; the copies go to the destination's.
        assert await source.clients.region("weights-use1") == "us-east-1"
        assert await dst.inner.clients.region("weights-euw1") == "eu-west-1"
        assert sorted(dst.server_copies) == sorted(FILES)  # CopyObject / UploadPartCopy
        # moto keeps no trustworthy checksum for the part-copied file: re-hashed at the destination
        assert p.verified_by == {"store-sha256": 3, "rehash": 1}
    else:
        assert dst.server_copies == []  # cross-cloud: streamed through, hashed in flight
        assert set(p.verified_by) <= {"in-flight", "store-crc32c"}
    final = sink.latest(MODEL, v, "eu")
    assert final is not None and final.bytes_done == final.bytes_total == manifest.total_bytes


async def test_manifest_is_written_last_and_gone_while_copying(
    servers: Servers, tmp_path: Path
) -> None:
    """Whenever a copy is in flight, the destination has no commit marker."""
    factory = servers.factory()
    v = version()
    source = await open_at(factory, f"file://{tmp_path}/src", v)
    await publish(source, MODEL, v, FILES)
    dst = await open_at(factory, f"file://{tmp_path}/dst", v)
    markers: list[bool] = []
    j = job(source, {"fra": dst}, MemorySink(), v)
    marker = (tmp_path, "dst", MODEL, v, MANIFEST)
    j.on_progress = lambda p: markers.append(exists(*marker)) if p.phase is Phase.COPYING else None
    assert (await j.run()).ok
    assert markers and not any(markers)
    assert exists(*marker)


async def test_interrupted_run_resumes_and_copies_only_the_rest(
    servers: Servers, tmp_path: Path
) -> None:
    factory = servers.factory()
    v = version()
    files = {f"shard-{i:02}.bin": pattern(300_000 + i, 10 + i) for i in range(8)}
    source = await open_at(factory, "s3://weights-use1/releases", v)
    await publish(source, MODEL, v, files)
    dst = Counting(await open_at(factory, f"file://{tmp_path}/gpu-node", v))
    sink = MemorySink()

    first = job(source, {"fra": dst}, sink, v, concurrency=2)
    task = asyncio.ensure_future(first.run())

    def interrupt(p: RegionProgress) -> None:
        if p.files_copied >= 3:
            task.cancel()

    first.on_progress = interrupt
    with pytest.raises(asyncio.CancelledError):
        await task
    done_first = set(first.progress["fra"].copied)
    assert len(done_first) >= 3 and sink.latest(MODEL, v, "fra").phase is Phase.FAILED  # type: ignore[union-attr]
    assert not exists(tmp_path, "gpu-node", MODEL, v, MANIFEST)

    dst.writes.clear()
    second = await job(source, {"fra": dst}, sink, v, concurrency=2).run()
    p = second.regions["fra"]
    assert second.ok, p.reason
    kept = set(files) - set(dst.copies)
    assert done_first <= kept  # nothing the first run verified is copied again
    # A copy that landed just as the cancel arrived is proven (journal or re-hash), not redone;
    # at most the two files in flight can be in that state.
    assert len(kept - done_first) <= 2 and p.files_kept == len(kept)
    assert p.verified_by.get("journal", 0) >= len(done_first)
    assert len(dst.copies) == len(files) - len(kept) and await contents(dst) == files


async def test_corrupted_destination_file_is_detected_and_copied_again(
    servers: Servers, tmp_path: Path
) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, "s3://weights-use1/releases", v)
    await publish(source, MODEL, v, FILES)
    s3_dst = Counting(await open_at(factory, "s3://weights-euw1/models", v))
    file_dst = Counting(await open_at(factory, f"file://{tmp_path}/node", v))
    sink = MemorySink()
    assert (await job(source, {"eu": s3_dst, "fra": file_dst}, sink, v).run()).ok

    # Same sizes, different bytes: only a checksum or a re-hash can tell.
    await s3_dst.inner.put("config.json", b'{"layers": 3}')
    flip_a_byte(Path(tmp_path, "node", MODEL, v, "tokenizer/tokenizer.json"), 1000)
    for log in (s3_dst.writes, s3_dst.server_copies, file_dst.writes):
        log.clear()
    sink.history.clear()

    report = await job(source, {"eu": s3_dst, "fra": file_dst}, sink, v).run()
    assert report.ok
    assert s3_dst.copies == ["config.json"] and file_dst.copies == ["tokenizer/tokenizer.json"]
    assert report.regions["eu"].files_repaired == report.regions["fra"].files_repaired == 1
    assert await contents(s3_dst) == FILES and await contents(file_dst) == FILES
    # The damage took each region out of service until it was repaired.
    assert sink.phases("eu") == [Phase.COPYING, Phase.VERIFIED]


async def test_rerun_on_an_intact_replica_copies_nothing_and_never_leaves_verified(
    servers: Servers,
) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, "s3://weights-use1/releases", v)
    await publish(source, MODEL, v, FILES)
    dst = Counting(await open_at(factory, "gs://weights-euw4/models", v))
    sink = MemorySink()
    assert (await job(source, {"eu": dst}, sink, v).run()).ok
    dst.writes.clear()
    sink.history.clear()

    report = await job(source, {"eu": dst}, sink, v).run()
    assert report.ok and dst.copies == []
    assert sink.phases("eu") == [Phase.VERIFIED]
    assert report.regions["eu"].verified_by == {"store-crc32c": 4} or "journal" in str(
        report.regions["eu"].verified_by
    )


async def test_interrupting_a_check_of_an_intact_replica_leaves_its_status_alone(
    servers: Servers, tmp_path: Path
) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, f"file://{tmp_path}/src", v)
    await publish(source, MODEL, v, FILES)
    dst = await open_at(factory, f"file://{tmp_path}/node", v)
    sink = MemorySink()
    assert (await job(source, {"fra": dst}, sink, v).run()).ok
    sink.history.clear()

    check = job(source, {"fra": dst}, sink, v, reverify=True, concurrency=1)
    task = asyncio.ensure_future(check.run())

    def interrupt(p: RegionProgress) -> None:
        if p.files_kept:
            task.cancel()

    check.on_progress = interrupt
    with pytest.raises(asyncio.CancelledError):
        await task
    assert sink.history == []  # still verified: nothing was changed
    assert check.progress["fra"].reason.startswith("interrupted; nothing at the destination")
    assert await dst.get(MANIFEST) is not None


@pytest.mark.parametrize("damage", ["missing", "wrong-size"])
async def test_broken_source_fails_with_a_reason_and_the_region_stays_unready(
    servers: Servers, tmp_path: Path, damage: str
) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, "s3://weights-use1/releases", v)
    await publish(source, MODEL, v, FILES)
    if damage == "missing":
        await source.delete("model-00001-of-00002.safetensors")
    else:
        await source.put("model-00001-of-00002.safetensors", b"truncated")
    dst = Counting(await open_at(factory, f"file://{tmp_path}/node", v))
    sink = MemorySink()

    report = await job(source, {"fra": dst}, sink, v).run()

    p = report.regions["fra"]
    assert not report.ok and p.phase is Phase.FAILED
    if damage == "missing":
        assert p.reason.startswith(
            "source file model-00001-of-00002.safetensors is missing at s3://"
        )
    else:
        assert f"is 9 bytes at s3://weights-use1/releases/{MODEL}/{v}" in p.reason
        assert f"the manifest says {1 * MiB + 17}" in p.reason
    assert sink.phases("fra") == [Phase.FAILED]
    assert dst.copies == [] and await dst.get(MANIFEST) is None


async def test_source_bytes_that_differ_from_the_manifest_never_land(
    servers: Servers, tmp_path: Path
) -> None:
    """Same size, other bytes, streamed: the hashing tee stops the write before it commits."""
    factory = servers.factory()
    v = version()
    source = await open_at(factory, f"file://{tmp_path}/src", v)
    await publish(source, MODEL, v, FILES)
    await source.put("config.json", b'{"layers": 9}')
    dst = await open_at(factory, "gs://weights-euw4/models", v)

    report = await job(source, {"eu": dst}, MemorySink(), v).run()

    reason = report.regions["eu"].reason
    assert "config.json does not match its manifest SHA-256" in reason
    assert await dst.stat("config.json") is None and await dst.get(MANIFEST) is None


async def test_server_side_copy_of_a_changed_source_is_blamed_on_the_source(
    servers: Servers,
) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, "s3://weights-use1/releases", v)
    await publish(source, MODEL, v, FILES)
    await source.put("config.json", b'{"layers": 9}')
    dst = await open_at(factory, "s3://weights-euw1/models", v)
    report = await job(source, {"eu": dst}, MemorySink(), v).run()
    assert "source file s3://weights-use1/releases" in report.regions["eu"].reason
    assert "config.json does not match its manifest SHA-256" in report.regions["eu"].reason


async def test_a_source_without_manifest_gets_one_built_and_published(
    servers: Servers, tmp_path: Path
) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, "gs://weights-euw4/releases", v)
    expected = await publish(source, MODEL, v, FILES, manifest=False)
    dst = await open_at(factory, f"file://{tmp_path}/node", v)
    report = await job(source, {"fra": dst}, MemorySink(), v, build_missing_manifest=True).run()
    assert report.ok and report.manifest_built
    data = await source.get(MANIFEST)
    assert data is not None
    from regions.replication.manifest import Manifest

    built = Manifest.from_json(data)
    assert [(f.path, f.size, f.sha256) for f in built.files] == [
        (f.path, f.size, f.sha256) for f in expected.files
    ]
    assert all(f.crc32c for f in built.files)  # so GCS copies can be proven without a read


async def test_gcs_rewrite_loop_follows_tokens(servers: Servers) -> None:
    """The emulator finishes every rewrite at once; a short first answer drives the loop."""
    factory = servers.factory()
    v = version()
    source = await open_at(factory, "gs://weights-euw4/releases", v)
    await publish(source, MODEL, v, FILES)
    dst = await open_at(factory, "gs://weights-euw4/replicas", v)
    calls: list[str | None] = []
    pinned: list[int | None] = []

    def rewrite(
        dst_blob: object, src_blob: object, token: str | None, generation: int | None
    ) -> tuple[str | None, int, int]:
        calls.append(token)
        pinned.append(generation)
        if token is None:
            return "token-1", 1 * MiB, 0  # the service did 1 MiB; call again with the token
        result: tuple[str | None, int, int] = dst_blob.rewrite(src_blob, token=None)  # type: ignore[attr-defined]
        return result

    dst.rewrite = rewrite  # type: ignore[attr-defined]
    seen: list[int] = []
    j = job(source, {"eu": dst}, MemorySink(), v, concurrency=1)
    j.on_progress = lambda p: seen.append(p.bytes_copied)
    report = await j.run()
    assert report.ok, report.regions["eu"].reason
    assert calls.count(None) == 4 and calls.count("token-1") == 4
    assert all(isinstance(g, int) for g in pinned)  # every call, continuations too
    assert 1 * MiB in seen  # progress after the first, partial call
    assert await contents(dst) == FILES


async def test_streamed_upload_to_s3_uses_multipart_with_part_checksums(
    servers: Servers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    factory = servers.factory()
    v = version()
    source = await open_at(factory, f"file://{tmp_path}/src", v)
    await publish(source, MODEL, v, FILES)
    dst = Counting(await open_at(factory, "s3://weights-use1/replicas", v))
    # Watch what the store hashes (and on which thread) and what it sends to S3.
    loop_thread, hashed, sent = threading.get_ident(), [], []

    def sha256(data: bytes) -> object:
        hashed.append((data, threading.get_ident() == loop_thread))
        return hashlib.sha256(data)

    monkeypatch.setattr(s3_module, "hashlib", types.SimpleNamespace(sha256=sha256))
    client = await dst.inner.clients.for_bucket("weights-use1")  # type: ignore[attr-defined]
    for op in ("PutObject", "UploadPart"):
        client.meta.events.register(
            f"before-parameter-build.s3.{op}", lambda params, **_: sent.append(params["Body"])
        )
    report = await job(source, {"us": dst}, MemorySink(), v).run()
    assert report.ok, report.regions["us"].reason
    # Each body is hashed off the event loop, and it is the very object sent (no extra copies).
    assert len(sent) >= 5 and not any(on_loop for _, on_loop in hashed)
    assert all(any(body is data for data, _ in hashed) for body in sent)
    assert dst.server_copies == [] and sorted(dst.writes) == sorted(FILES)
    assert await contents(dst) == FILES
    big = await dst.stat("model-00002-of-00002.safetensors")
    assert big is not None and big.size == 7 * MiB + 5
    small = await dst.stat("config.json")
    assert small is not None and small.sha256 == hashlib.sha256(FILES["config.json"]).hexdigest()


async def test_a_failed_or_cancelled_gcs_upload_leaves_nothing_under_the_key(
    servers: Servers,
) -> None:
    """The resumable upload is terminated: even the writer's __del__ cannot finalise it."""
    store = await open_at(servers.factory(), "gs://weights-euw4/aborted", version())
    data = pattern(600 << 10, 5)  # more than two 256 KiB upload chunks
    reached = asyncio.Event()

    async def chunks(stall: bool) -> AsyncIterator[bytes]:
        for i in range(0, len(data), 100 << 10):
            yield data[i : i + (100 << 10)]
        if stall:  # the source hangs after every byte was sent: the job gets cancelled
            reached.set()
            await asyncio.Event().wait()

    wrong = HashingTee(
        chunks(False), label="f", size=len(data), sha256="0" * 64, on_bytes=lambda n: None
    )
    with pytest.raises(SourceMismatch):
        await store.write("mismatch.bin", wrong, len(data))
    task = asyncio.ensure_future(store.write("cancelled.bin", chunks(True), len(data)))
    await reached.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    del wrong, task
    gc.collect()  # a BlobWriter dropped unclosed would complete its upload here
    assert await store.stat("mismatch.bin") is None
    assert await store.stat("cancelled.bin") is None


async def test_a_missing_gcs_bucket_fails_with_a_recorded_reason(
    servers: Servers, tmp_path: Path
) -> None:
    factory = servers.factory()
    v = version()
    missing = await open_at(factory, "gs://no-such-bucket/models", v)
    with pytest.raises(StoreError, match="no-such-bucket"):
        await missing.put("x", b"1")
    local = await open_at(factory, f"file://{tmp_path}/src", v)
    await publish(local, MODEL, v, FILES)
    empty = await open_at(factory, f"file://{tmp_path}/dst", v)
    sink = MemorySink()
    for source, dst in [(missing, empty), (local, missing)]:  # as the source, as a destination
        region = "src-missing" if source is missing else "dst-missing"
        report = await job(source, {region: dst}, sink, v, build_missing_manifest=True).run()
        assert "no-such-bucket" in report.regions[region].reason, report.regions[region]
        assert sink.phases(region)[-1] is Phase.FAILED
