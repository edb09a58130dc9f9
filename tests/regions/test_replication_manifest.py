"""Manifests, locations, the local store's guard rails and the job's refusals: local disk only."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest

from gateway.config.model import ConfigError, parse
from regions.replication import (
    FileEntry,
    JobOptions,
    Manifest,
    MemorySink,
    Phase,
    ReplicationError,
    ReplicationJob,
    StoreError,
    Target,
    parse_location,
)
from regions.replication.local import LocalStore
from regions.replication.manifest import MANIFEST

SHA = hashlib.sha256(b"x").hexdigest()


def doc(**overrides: object) -> bytes:
    d: dict[str, object] = {
        "format": 1,
        "model": "m",
        "version": "v1",
        "created": "2026-11-22T08:00:00Z",
        "files": [{"path": "a/b.bin", "size": 1, "sha256": SHA}],
    }
    d.update(overrides)
    return orjson.dumps(d)


def test_manifest_round_trips_and_sorts_files() -> None:
    m = Manifest(
        "m",
        "v1",
        "2026-11-22T08:00:00Z",
        (FileEntry("z", 1, SHA), FileEntry("a", 2, SHA, "AAAAAA==")),
    )
    again = Manifest.from_json(m.to_json())
    assert [f.path for f in again.files] == ["a", "z"] and again.total_bytes == 3
    assert again.same_files(Manifest.from_json(again.to_json()))


@pytest.mark.parametrize(
    ("files", "words"),
    [
        ([{"path": "../etc/passwd", "size": 1, "sha256": SHA}], "not a safe relative path"),
        ([{"path": "/abs", "size": 1, "sha256": SHA}], "not a safe relative path"),
        ([{"path": "a//b", "size": 1, "sha256": SHA}], "not a safe relative path"),
        ([{"path": "a\\b", "size": 1, "sha256": SHA}], "not a safe relative path"),
        ([{"path": "a", "size": -1, "sha256": SHA}], "bad size or sha256"),
        ([{"path": "a", "size": 1, "sha256": "xyz"}], "bad size or sha256"),
        ([{"path": "a", "size": 1, "sha256": SHA}] * 2, "listed twice"),
        ([{"path": MANIFEST, "size": 1, "sha256": SHA}], "reserved"),
        ([{"path": "a", "size": 1}], "malformed"),
    ],
)
def test_unsafe_or_malformed_manifests_are_refused(files: object, words: str) -> None:
    with pytest.raises(ReplicationError, match=words):
        Manifest.from_json(doc(files=files))


def test_model_and_version_names_are_single_safe_segments() -> None:
    with pytest.raises(ReplicationError, match="bad version name"):
        Manifest.from_json(doc(version="../v1"))
    with pytest.raises(ReplicationError, match="format-1"):
        Manifest.from_json(doc(format=2))


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://weights-use1/models/", "s3://weights-use1/models"),
        ("gs://my_bucket", "gs://my_bucket"),
        ("file:///srv/weights/", "file:///srv/weights"),
    ],
)
def test_locations_parse(url: str, expected: str) -> None:
    loc = parse_location(url)
    assert str(loc) == expected
    assert str(loc.child("m", "v1")) == expected + "/m/v1"


@pytest.mark.parametrize(
    "url",
    [
        "http://x/y",
        "s3://UPPER/x",
        "s3://b",
        "file://relative/x",
        "file:///a/../b",
        "s3://bkt/a/../b",
        "gs",
    ],
)
def test_bad_locations_are_refused(url: str) -> None:
    with pytest.raises(ValueError):
        parse_location(url)


def test_config_points_at_a_bad_weights_location() -> None:
    text = """
regions:
  - name: "aws:us-east-1"
    weights: "s3://bkt/../x"
models: [{name: m, versions: {v1: 100}}]
backends: [{name: b, model: m, version: v1, region: "aws:us-east-1", provider: vllm,
            url: "http://127.0.0.1:1", served_model: s}]
tenants: [{name: t, api_keys: ["env:X"]}]
replication: {gcs_credentials: anonymous}
"""
    with pytest.raises(ConfigError) as info:
        parse(text, "m.yaml")
    lines = str(info.value).splitlines()
    assert any(line.startswith("m.yaml:4: regions.0.weights:") for line in lines), lines
    assert any("anonymous is for an http:// emulator" in line for line in lines), lines


async def test_local_store_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "root")
    with pytest.raises(StoreError, match="escapes the root"):
        await store.stat("../outside")


async def test_a_manifest_for_another_version_is_refused(tmp_path: Path) -> None:
    source, dest = LocalStore(tmp_path / "src"), LocalStore(tmp_path / "dst")
    await source.put("a", b"x")
    await source.put(MANIFEST, doc(files=[{"path": "a", "size": 1, "sha256": SHA}], version="v2"))
    sink = MemorySink()
    report = await ReplicationJob("j", "m", "v1", source, [Target("r", dest)], sink).run()
    assert "describes m@v2, not m@v1" in report.regions["r"].reason
    assert sink.phases("r") == [Phase.FAILED]


async def test_a_region_without_manifest_is_never_made_a_source(tmp_path: Path) -> None:
    """A half-finished replication in X (files, no manifest) must not be published as m@v1."""
    x, y = LocalStore(tmp_path / "x"), LocalStore(tmp_path / "y")
    await x.put("a.safetensors", b"A" * 1000)  # b.safetensors never arrived
    for source_region, options in [(None, None), ("X", JobOptions(build_missing_manifest=True))]:
        sink = MemorySink()
        job = ReplicationJob(
            "j", "m", "v1", x, [Target("Y", y)], sink, options, source_region=source_region
        )
        report = await job.run()
        reason = report.regions["Y"].reason
        if source_region:
            assert reason.startswith(
                "region X holds no verified copy of m@v1: replicate to it first"
            )
        else:  # an origin gets a manifest built only when asked (the admin API: the origin only)
            assert reason.startswith(f"{x.url} has no {MANIFEST}")
        assert not report.manifest_built and sink.phases("Y") == [Phase.FAILED]
        assert await x.get(MANIFEST) is None and await y.list() == []


async def test_a_destination_that_cannot_be_read_keeps_its_status(tmp_path: Path) -> None:
    """Broken source + a store error reading a region's manifest: that region is left alone."""
    source = LocalStore(tmp_path / "src")
    await source.put(MANIFEST, doc())  # lists a/b.bin, which is missing: a broken source
    unreadable, empty = LocalStore(tmp_path / "unreadable"), LocalStore(tmp_path / "empty")
    (tmp_path / "unreadable" / MANIFEST).mkdir(parents=True)  # reading it: a StoreError
    sink = MemorySink()
    targets = [Target("kept", unreadable), Target("new", empty)]
    report = await ReplicationJob("j", "m", "v1", source, targets, sink).run()
    assert "its status was left as it was" in report.regions["kept"].reason
    assert sink.phases("kept") == [] and sink.phases("new") == [Phase.FAILED]


class Exploding(LocalStore):
    """A destination whose SDK fails in a way no store maps (a bug, an unexpected error)."""

    async def write(self, key: str, chunks: AsyncIterator[bytes], size: int) -> None:
        raise RuntimeError("disk controller on fire")


async def test_an_unexpected_error_fails_that_region_with_a_reason(tmp_path: Path) -> None:
    source = LocalStore(tmp_path / "src")
    await source.put("a/b.bin", b"x")
    await source.put(MANIFEST, doc())
    sink = MemorySink()
    targets = [
        Target("bad", Exploding(tmp_path / "bad")),
        Target("good", LocalStore(tmp_path / "g")),
    ]
    report = await ReplicationJob("j", "m", "v1", source, targets, sink).run()
    assert report.regions["bad"].reason == "RuntimeError: disk controller on fire"
    assert sink.phases("bad")[-1] is Phase.FAILED  # not left at copying
    assert report.regions["good"].phase is Phase.VERIFIED
