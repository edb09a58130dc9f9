"""``serve --workers 2``: each request is counted in the fleet's usage once, and
whichever worker takes the admin call answers for both (one embedded store file)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.conftest import EmulatorFactory, wait_for
from tests.gateway.test_metrics_workers import ADMIN, MERIDIAN, _chat, _config, _get, _workers
from tests.redis_server import free_port


@pytest.mark.timeout(90)
async def test_two_workers_count_each_request_once(
    emulators: EmulatorFactory, tmp_path: Path
) -> None:
    em = await emulators()
    http, admin = free_port(), free_port()
    config = _config(tmp_path / "m.yaml", http, admin, em.url, tmp_path / "state.db")
    env = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    proc = await asyncio.create_subprocess_exec(
        *MERIDIAN, "serve", "--config", str(config), "--workers", "2",
        stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    lines: list[str] = []

    async def read_log() -> None:
        assert proc.stderr is not None
        async for line in proc.stderr:
            lines.append(line.decode())

    async def requests() -> list[int]:
        answers = [await _get(f"http://127.0.0.1:{admin}/admin/v1/usage", ADMIN) for _ in range(6)]
        assert all(status == 200 for status, _ in answers), answers
        return [json.loads(body)["totals"]["requests"] for _, body in answers]

    reader = asyncio.create_task(read_log())
    try:
        await wait_for(lambda: sum("meridian serving" in ln for ln in lines) == 2, timeout=30)
        for _ in range(10):
            await _chat(http)
        seen: list[int] = []

        async def counted() -> bool:
            seen[:] = await requests()
            return seen == [10] * 6

        async with asyncio.timeout(20):  # each worker flushes its counts within a second
            while not await counted():
                assert all(n <= 10 for n in seen), seen  # never counted twice
                await asyncio.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(30):
            await proc.wait()
            await reader
    finally:
        if proc.returncode is None:
            for pid in _workers(proc.pid):
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            await proc.wait()
        reader.cancel()
