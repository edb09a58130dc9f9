"""Replication through a real gateway: the admin API runs the job, routing follows its status.

Real parts only: vLLM emulators as backends, moto's S3 server and the GCS
emulator as weight stores, local folders as a GPU node's disk, the CLI's
``main`` in a thread against the in-process gateway.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.admin.replication import Replicator
from gateway.app.server import Gateway
from gateway.cli.main import main
from gateway.config.model import Config
from gateway.store.state import replica_key
from regions.replication import MANIFEST, Location, ObjectStore, Phase, StoreFactory, parse_location
from tests.conftest import (
    ADMIN_TOKEN,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)
from tests.gateway.control_kit import admin, chat
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

MODEL = "test-model"
FILES = {"config.json": b"{}", "model.safetensors": pattern(3 << 20, 7)}
REGIONS = {"aws:us-east-1": ["US"], "aws:eu-west-1": ["EU"], "onprem:fra1": ["EU", "DE"]}


def config(rows: list[Any], servers: Servers, tmp: Path) -> Config:
    base = gateway_config(rows, regions=REGIONS).model_dump(mode="json")
    weights = {
        "aws:us-east-1": "s3://weights-use1/models",
        "aws:eu-west-1": "gs://weights-euw4/models",
        "onprem:fra1": f"file://{tmp}/fra1",
    }
    for region in base["regions"]:
        region["weights"] = weights[region["name"]]
    base["replication"] = {
        "origin": f"s3://weights-use1/releases-{tmp.name}",
        "s3_endpoint_url": servers.s3_endpoint,
        "gcs_endpoint": servers.gcs_endpoint,
        "gcs_project": "test",
        "gcs_credentials": "anonymous",
        "chunk_mb": 1,
        "publish_every_s": 0,
    }
    return Config.model_validate(base)


async def origin(gw: Gateway, servers: Servers, files: dict[str, bytes] = FILES) -> None:
    url = gw.config.replication.origin
    assert url is not None
    store = await servers.factory().open(parse_location(url).child(MODEL, "v1"))
    await publish(store, MODEL, "v1", files)


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 15.0) -> None:
    """Poll an async condition until it holds; fail at the deadline."""
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def regions_served(s: aiohttp.ClientSession, gw: Gateway, n: int) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        status, headers, _ = await chat(s, gw)
        assert status == 200
        seen[headers["x-meridian-region"]] += 1
    return seen


async def replicate(s: aiohttp.ClientSession, gw: Gateway, **body: Any) -> dict[str, Any]:
    """Start a job over the admin API and wait for it to end."""
    status, job = await admin(s, gw, "POST", "/admin/v1/replications", body)
    assert status == 202, job
    path = f"/admin/v1/replications/{job['job']}"

    async def finished() -> bool:
        nonlocal job
        _, job = await admin(s, gw, "GET", path)
        return bool(job["state"] != "running")

    await until(finished)
    return dict(job)


@pytest.fixture
async def gw(
    emulators: EmulatorFactory, gateways: GatewayFactory, servers: Servers, tmp_path: Path
) -> Gateway:
    us, fra = await emulators(), await emulators()
    rows = [
        ("us", "aws:us-east-1", "v1", us.url),
        ("fra", "onprem:fra1", "v1", fra.url, {"replica_ready": False}),
    ]
    return await gateways(config(rows, servers, tmp_path))


async def test_a_region_gets_traffic_only_once_its_replica_is_verified(
    gw: Gateway, servers: Servers, tmp_path: Path
) -> None:
    await origin(gw, servers)
    async with aiohttp.ClientSession() as s:
        assert await regions_served(s, gw, 12) == Counter({"aws:us-east-1": 12})

        job = await replicate(s, gw, model=MODEL, version="v1", to=["onprem:fra1"])

        assert job["state"] == "done", job
        fra = job["regions"][0]
        assert (fra["status"], fra["files_copied"]) == ("verified", 2)
        assert await asyncio.to_thread(Path(tmp_path, "fra1", MODEL, "v1", MANIFEST).is_file)
        _, replicas = await admin(s, gw, "GET", f"/admin/v1/replicas/{MODEL}")
        row = next(r for r in replicas["replicas"] if r["region"] == "onprem:fra1")
        assert row["status"] == "verified" and row["ready"] and row["source"] == "store"
        # No restart: the very next requests may go to the newly verified region.
        assert (await regions_served(s, gw, 20))["onprem:fra1"] > 0
        _, audit = await admin(s, gw, "GET", "/admin/v1/audit?limit=50")
        actions = [e["action"] for e in audit["entries"] if "onprem:fra1" in e["key"]]
        assert actions[0] == "replicate.pending" and actions[-1] == "replicate.verified"
        assert "replicate.copying" in actions


async def test_a_broken_source_fails_the_job_and_keeps_the_region_out(
    gw: Gateway, servers: Servers
) -> None:
    await origin(gw, servers)
    url = gw.config.replication.origin
    assert url is not None
    store = await servers.factory().open(parse_location(url).child(MODEL, "v1"))
    await store.delete("model.safetensors")
    async with aiohttp.ClientSession() as s:
        job = await replicate(s, gw, model=MODEL, version="v1", to=["onprem:fra1"])
        assert job["state"] == "failed"
        reason = job["regions"][0]["reason"]
        assert reason.startswith("source file model.safetensors is missing at s3://weights-use1/")
        _, replicas = await admin(s, gw, "GET", f"/admin/v1/replicas/{MODEL}")
        row = next(r for r in replicas["replicas"] if r["region"] == "onprem:fra1")
        assert (row["status"], row["ready"]) == ("failed", False) and row["detail"] == reason
        assert await regions_served(s, gw, 12) == Counter({"aws:us-east-1": 12})


async def test_bad_requests_are_refused_without_side_effects(gw: Gateway) -> None:
    cases = [
        ({"model": "nope", "version": "v1", "to": ["onprem:fra1"]}, 404, "unknown model"),
        ({"model": MODEL, "version": "v9", "to": ["onprem:fra1"]}, 400, "has no version 'v9'"),
        ({"model": MODEL, "version": "v1", "to": []}, 400, "non-empty list"),
        ({"model": MODEL, "version": "v1", "to": ["mars:1"]}, 404, "unknown region 'mars:1'"),
        (
            {"model": MODEL, "version": "v1", "to": ["onprem:fra1"], "from": "onprem:fra1"},
            400,
            "both source and destination",
        ),
        ({"model": MODEL, "version": "v1", "to": ["onprem:fra1"], "reverify": "y"}, 400, "true"),
    ]
    async with aiohttp.ClientSession() as s:
        for body, status, words in cases:
            got, err = await admin(s, gw, "POST", "/admin/v1/replications", body)
            assert (got, words in err["error"]["message"]) == (status, True), (body, err)
        _, jobs = await admin(s, gw, "GET", "/admin/v1/replications")
        assert jobs["jobs"] == []
        got, err = await admin(s, gw, "GET", "/admin/v1/replications/r-nothere")
        assert got == 404


async def test_cli_replicates_to_two_clouds_and_reports(
    gw: Gateway,
    servers: Servers,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    await origin(gw, servers)
    flags = [f"--admin-url={gw.admin_url}", f"--token={ADMIN_TOKEN}"]

    code = await asyncio.to_thread(
        main, ["replicate", f"{MODEL}@v1", "--to", "aws:eu-west-1,onprem:fra1", *flags]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    assert "verified" in out and "aws:eu-west-1" in out and "onprem:fra1" in out

    code = await asyncio.to_thread(
        main, ["replicate", f"{MODEL}@v1", "--to", "onprem:fra1", "--json", *flags]
    )
    job = json.loads(capsys.readouterr().out)
    assert code == 0 and job["state"] == "done"
    assert job["regions"][0]["files_copied"] == 0 and job["regions"][0]["files_kept"] == 2

    for argv, words, want in [
        (["replicate", MODEL, "--to", "onprem:fra1"], "expected MODEL@VERSION", 2),
        (["replicate", f"{MODEL}@v1", "--to", "moon:1"], "404: unknown region 'moon:1'", 1),
        (["replicate", f"{MODEL}@v1", "--to", "onprem:fra1,"], "--to: expected", 2),
    ]:
        code = await asyncio.to_thread(main, [*argv, *flags])
        err = capsys.readouterr().err
        assert code == want and words in err and len(err.strip().splitlines()) == 1, err


async def test_one_job_per_replica_at_a_time_across_gateway_replicas(
    gw: Gateway, servers: Servers
) -> None:
    """Another replica's job holds the lease: a second start is refused, then allowed."""
    await origin(gw, servers)
    assert gw.runtime is not None and gw.runtime.control is not None
    store = gw.runtime.control.store
    lease = f"replicate/{MODEL}@v1/onprem:fra1"
    assert await store.lease(lease, "other-replica/r-1", 60)
    body = {"model": MODEL, "version": "v1", "to": ["aws:eu-west-1", "onprem:fra1"]}
    async with aiohttp.ClientSession() as s:
        status, err = await admin(s, gw, "POST", "/admin/v1/replications", body)
        assert status == 409
        assert (
            err["error"]["message"] == f"a replication of {MODEL}@v1/onprem:fra1 is already running"
        )
        # The refused start released what it had taken: eu-west-1 is free.
        assert await store.lease(f"replicate/{MODEL}@v1/aws:eu-west-1", "probe", 1)
        await store.release_lease(f"replicate/{MODEL}@v1/aws:eu-west-1", "probe")
        await store.release_lease(lease, "other-replica/r-1")
        job = await replicate(s, gw, **body)
        assert job["state"] == "done"
        status, again = await admin(s, gw, "DELETE", f"/admin/v1/replications/{job['job']}")
        assert status == 200 and again["state"] == "done"  # cancelling a finished job: no-op
        assert await store.lease(lease, "after", 1)  # released when the job ended


async def test_a_source_region_must_hold_a_verified_copy(
    gw: Gateway, servers: Servers, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A half-finished copy in fra1 (files, no manifest) is never replicated onwards."""
    fra1 = await servers.factory().open(
        parse_location(f"file://{tmp_path}/fra1").child(MODEL, "v1")
    )
    await fra1.put("config.json", FILES["config.json"])  # model.safetensors never arrived
    assert gw.runtime is not None and gw.runtime.control is not None
    control, key = gw.runtime.control, replica_key(MODEL, "v1", "onprem:fra1")
    await control.write({key: {"status": "failed", "detail": "x"}}, actor="t", action="t")
    body = {"model": MODEL, "version": "v1", "to": ["aws:eu-west-1"], "from": "onprem:fra1"}
    words = f"region onprem:fra1 holds no verified copy of {MODEL}@v1"
    async with aiohttp.ClientSession() as s:
        status, err = await admin(s, gw, "POST", "/admin/v1/replications", body)
        assert status == 400 and err["error"]["message"].startswith(words), err
        flags = [f"--admin-url={gw.admin_url}", f"--token={ADMIN_TOKEN}"]
        argv = ["replicate", f"{MODEL}@v1", "--from", "onprem:fra1", "--to", "aws:eu-west-1"]
        code = await asyncio.to_thread(main, [*argv, *flags])
        err_text = capsys.readouterr().err
        assert code == 1 and len(err_text.strip().splitlines()) == 1 and words in err_text
        # No stored status at all: the job itself refuses a source without a manifest.
        await control.write({key: None}, actor="t", action="t")
        job = await replicate(s, gw, **body)
    assert job["state"] == "failed" and not job["manifest_built"]
    assert job["regions"][0]["reason"].startswith(f"{words}: replicate to it first")
    assert await fra1.get(MANIFEST) is None


class StalledOrigin(StoreFactory):
    """Stores as configured, but the origin's reads wait for ``gate``: a job that runs on."""

    def __init__(self, servers: Servers, gate: asyncio.Event) -> None:
        super().__init__(servers.settings())
        self.gate = gate

    async def open(self, location: Location) -> ObjectStore:
        store = await super().open(location)
        return Counting(store, gate=self.gate) if "/releases-" in str(location) else store


async def test_a_job_that_loses_its_lease_stops_and_says_so(gw: Gateway, servers: Servers) -> None:
    await origin(gw, servers)
    assert gw.runtime is not None and gw.runtime.control is not None
    control, gate = gw.runtime.control, asyncio.Event()
    rep = Replicator(gw.runtime, factory=StalledOrigin(servers, gate), lease_ttl_s=0.3)
    body = {"model": MODEL, "version": "v1", "to": ["onprem:fra1"]}
    handle = await rep.start(body, control, "tester")
    fra = handle.job.progress["onprem:fra1"]
    lease = f"replicate/{MODEL}@v1/onprem:fra1"

    async def copying() -> bool:
        return fra.phase is Phase.COPYING

    async def stolen() -> bool:  # another replica takes it (between two renewals)
        await control.store.release_lease(lease, handle.holder)
        return await control.store.lease(lease, "other-replica/r-2", 60)

    async def ended() -> bool:
        return handle.task is not None and handle.task.done()

    try:
        await until(copying)
        await until(stolen)
        await until(ended)
    finally:
        gate.set()
        await rep.close()
    reason = f"lease lost: {MODEL}@v1/onprem:fra1 is held by another job"
    assert (handle.state, handle.error, fra.reason) == ("failed", reason, reason)
    stored = control.state.replicas[(MODEL, "v1", "onprem:fra1")]
    assert (stored.status, stored.detail) == ("failed", reason)
    await control.store.release_lease(lease, "other-replica/r-2")
