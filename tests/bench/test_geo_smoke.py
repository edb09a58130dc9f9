"""The geo lab (bench/geo, docs/geo-lab.md): its link proxy on its own, then a
short run of the lab end to end (steady state + partition), and the full set
under ``-m slow``.

The smoke judges that the lab works and its numbers are sane (the injected
RTT is what the table says, nothing lost where nothing was broken), not the
issue's targets.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench.geo.proxy import Link, Target, measure_rtt_ms
from bench.geo.run import ALL, RunOptions, run_lab


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    # answers every line like a Redis PING, so measure_rtt_ms can time it
    while line := await reader.readline():
        writer.write(b"+PONG\r\n" if line.strip() == b"PING" else line)
        await writer.drain()
    writer.close()


@pytest.fixture
async def echo() -> AsyncIterator[int]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    yield server.sockets[0].getsockname()[1]
    server.close()


async def test_link_delays_each_direction_by_half_the_rtt(echo: int) -> None:
    link = Link("t", "a", "127.0.0.1", Target("127.0.0.1", echo, "b"), 0.040)
    await link.start()
    try:
        rtt = await measure_rtt_ms("127.0.0.1", link.port)
        assert 80 <= rtt <= 96
    finally:
        await link.stop()


async def test_cut_link_is_a_black_hole_and_heal_closes_what_lost_bytes(echo: int) -> None:
    link = Link("t", "a", "127.0.0.1", Target("127.0.0.1", echo, "b"), 0.005)
    await link.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", link.port)
        writer.write(b"hello\n")
        assert await asyncio.wait_for(reader.readline(), 2) == b"hello\n"
        link.set_cut(True)
        writer.write(b"lost\n")
        with pytest.raises(TimeoutError):  # silence, not a reset
            await asyncio.wait_for(reader.readline(), 0.3)
        # a new connection during the cut is accepted and then hears nothing
        r2, w2 = await asyncio.open_connection("127.0.0.1", link.port)
        w2.write(b"x\n")
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(r2.readline(), 0.3)
        link.set_cut(False)
        assert await asyncio.wait_for(reader.read(), 2) == b""  # closed: its stream had a hole
        r3, w3 = await asyncio.open_connection("127.0.0.1", link.port)
        w3.write(b"again\n")
        assert await asyncio.wait_for(r3.readline(), 2) == b"again\n"
        for w in (writer, w2, w3):
            w.close()
    finally:
        await link.stop()


def _dead(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.timeout(90)
async def test_geo_smoke_steady_state_and_partition(tmp_path: Path) -> None:
    t0 = time.monotonic()
    opts = RunOptions(scenarios=("steady", "partition"), replicas=1, requests=12, cut_s=4.0)
    results = await run_lab(tmp_path, opts)
    elapsed = time.monotonic() - t0
    assert elapsed < 60, f"the smoke took {elapsed:.0f} s"
    assert all(_dead(pid) for pid in results["lab"]["pids"]), "the lab left processes behind"
    sc = results["scenarios"]

    for row in sc["links"]["rows"]:
        if row["table_rtt_ms"]:
            assert abs(row["error_pct"]) <= 20, row

    for row in sc["steady"]["rows"]:
        assert row["lost"] == 0, row
        assert row["n"] >= 10
        # the emulator's TTFT is 20 ms; the gateway adds something, never seconds
        assert 15 <= row["direct_p50_ms"] <= 200, row
        assert row["unlimited_p50_ms"] > row["direct_p50_ms"] - 5, row
        assert row["unlimited_p50_ms"] < row["direct_p50_ms"] + 50, row
        assert row["limited_p50_ms"] < row["direct_p50_ms"] + 200, row

    part = sc["partition"]
    for row in part["rows"]:
        assert row["sent_during_cut"] > 0, row
        if not row["cut"]:
            assert row["lost_during_cut"] == 0, row
            assert row["lost_after_heal"] == 0, row
        assert row["cut_streams"] == 0, row
        # a replica cut from its store keeps serving: /readyz stays 200
        assert all(s.startswith("200/") for s in row["readyz/status seen during cut"]), row
    held = part["held"]
    assert held["admitted_total"] >= held["limit_per_min"] * 0.9  # the limit admitted its budget


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_geo_full_set(tmp_path: Path) -> None:
    opts = RunOptions(
        scenarios=ALL,
        replicas=2,
        requests=20,
        limit_warmup_s=20,
        limit_window_s=30,
        changes=5,
        cut_s=6,
    )
    results = await run_lab(tmp_path, opts)
    assert all(_dead(pid) for pid in results["lab"]["pids"])
    sc = results["scenarios"]
    assert set(ALL) <= set(sc)
    assert sum(r["offered"] for r in sc["limits"]["rows"][:-1]) > 0
    prop = sc["propagation"]["rows"]
    assert all(r["weights_p50_ms"] is not None for r in prop)
    assert sc["primary_lost"]["write_ok_after_s"] is not None, sc["primary_lost"]["notes"]
    for row in sc["region_lost"]["rows"]:
        if not row["killed"]:
            assert row["lost_after_kill"] == 0, row
            assert row["ok_after_kill"] > 0, row
