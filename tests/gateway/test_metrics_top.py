"""``meridian top``: per-backend rates between scrapes, live in a terminal, ``q`` quits."""

from __future__ import annotations

import asyncio
import os
import pty
import select
import signal
import sys
import time

import aiohttp
import pytest

from gateway.app.server import Gateway
from gateway.cli.top_view import parse, quantile, rows
from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)

ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def test_quantiles_interpolate_as_histogram_quantile_does() -> None:
    buckets = {0.1: 10.0, 0.2: 20.0, float("inf"): 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.1)
    assert quantile(0.95, buckets) == pytest.approx(0.19)
    assert quantile(0.5, {0.1: 0.0, float("inf"): 0.0}) is None
    assert quantile(0.99, {0.1: 1.0, float("inf"): 10.0}) == 0.1  # beyond the last bound


async def _served(s: aiohttp.ClientSession, gw: Gateway, n: int) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 5}
    for _ in range(n):
        async with s.post(
            gw.http_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
        ) as r:
            assert r.status == 200


async def test_rates_per_backend_between_two_scrapes(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        await _served(s, gw, 4)
        async with s.get(gw.admin_url + "/metrics", headers=ADMIN) as r:
            first = parse(await r.text(), at=10.0)
        await _served(s, gw, 6)
        async with s.get(gw.admin_url + "/metrics", headers=ADMIN) as r:
            second = parse(await r.text(), at=12.0)
        async with s.get(gw.admin_url + "/admin/v1/status", headers=ADMIN) as r:
            status = await r.json()
    (since_start,) = rows(None, first, status)
    assert since_start.requests_per_s is None and since_start.requests == 4
    (row,) = rows(first, second, status)
    assert (row.backend, row.region, row.model) == ("fra", "onprem:fra1", f"{MODEL}@v1")
    assert row.requests_per_s == pytest.approx(3.0)  # 6 requests in 2 s
    assert row.tokens_per_s == pytest.approx(15.0)  # 30 completion tokens in 2 s
    assert row.error_rate == 0.0 and row.breaker == "closed"
    assert row.ttft_p50_s is not None and row.ttft_p95_s is not None
    assert 0 < row.ttft_p50_s <= row.ttft_p95_s


def _read_until(fd: int, wanted: bytes, deadline: float) -> bytes:
    seen = b""
    while wanted not in seen:
        left = deadline - time.monotonic()
        assert left > 0, f"never saw {wanted!r} in {seen[-2000:]!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            try:
                seen += os.read(fd, 65536)
            except OSError:  # the child closed the terminal
                break
    return seen


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("stop", "code"), [("q", 0), ("ctrl-c", 130)])
async def test_top_redraws_in_a_terminal_until_q_or_ctrl_c(
    emulators: EmulatorFactory, gateways: GatewayFactory, stop: str, code: int
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    primary, secondary = pty.openpty()
    env = {**os.environ, "COLUMNS": "200", "TERM": "xterm"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli.main", "top", "--interval", "0.2",
        f"--admin-url={gw.admin_url}", f"--token={ADMIN_TOKEN}",
        stdin=secondary, stdout=secondary, stderr=secondary, env=env, start_new_session=True,
    )  # fmt: skip
    os.close(secondary)
    try:
        deadline = time.monotonic() + 30
        await asyncio.to_thread(_read_until, primary, b"traffic per backend", deadline)
        async with aiohttp.ClientSession() as s:
            await _served(s, gw, 3)
        await asyncio.to_thread(_read_until, primary, b"req/s", deadline)  # a redrawn frame
        if stop == "q":
            os.write(primary, b"q")
        else:
            os.killpg(proc.pid, signal.SIGINT)
        async with asyncio.timeout(20):
            assert await proc.wait() == code
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        os.close(primary)
