"""``--workers 2``: one scrape covers the node, and every worker logs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ADMIN_TOKEN, GLOBAL_KEY, MODEL, SERVED, EmulatorFactory, sha, wait_for
from tests.redis_server import free_port

MERIDIAN = [sys.executable, "-m", "gateway.cli.main"]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _config(path: Path, http: int, admin: int, url: str, store: Path) -> Path:
    path.write_text(
        f"""
listen: {{http: "127.0.0.1:{http}", admin: "127.0.0.1:{admin}", grpc: null}}
admin: {{token: "{sha(ADMIN_TOKEN)}"}}
store: {{kind: embedded, path: "{store}"}}
regions: [{{name: "aws:us-east-1", tags: [US]}}]
models: [{{name: {MODEL}, versions: {{v1: 100}}}}]
backends:
  - {{name: a, model: {MODEL}, version: v1, region: "aws:us-east-1", provider: vllm,
      url: "{url}", served_model: {SERVED}}}
tenants: [{{name: t, api_keys: ["{sha(GLOBAL_KEY)}"]}}]
"""
    )
    return path


def _workers(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


async def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    # A new session each time, so a new connection: either worker may take it.
    try:
        async with aiohttp.ClientSession() as s, s.get(url, headers=headers) as r:
            return r.status, await r.text()
    except aiohttp.ClientError:
        return 0, ""


async def _chat(http: int) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    url = f"http://127.0.0.1:{http}/v1/chat/completions"
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, json=body, headers={"Authorization": f"Bearer {GLOBAL_KEY}"}) as r,
    ):
        assert r.status == 200
        return r.headers["x-request-id"]


def _requests_total(text: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "meridian_requests_total"
    )


@pytest.mark.timeout(90)
async def test_one_scrape_covers_every_worker_and_every_worker_logs(
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

    reader = asyncio.create_task(read_log())
    try:
        # Both workers serving (each logs it once its listeners are bound).
        await wait_for(lambda: sum("meridian serving" in ln for ln in lines) == 2, timeout=30)
        ids = [await _chat(http) for _ in range(8)]
        seen: list[float] = []
        for _ in range(12):
            status, text = await _get(f"http://127.0.0.1:{admin}/metrics", ADMIN)
            assert status == 200
            seen.append(_requests_total(text))
        assert seen == [8.0] * 12, seen  # every scrape: the whole node
        ids.append(await _chat(http))
        status, text = await _get(f"http://127.0.0.1:{admin}/metrics", ADMIN)
        assert _requests_total(text) == 9.0  # monotonic
        workers = _workers(proc.pid)
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
    log = "".join(lines)
    assert log.count("meridian serving") == 2, log
    assert log.count("draining: refusing new requests") == 2, log
    logged = {
        json.loads(line.partition("meridian.access: ")[2])["request_id"]
        for line in log.splitlines()
        if "meridian.access: " in line
    }
    assert logged == set(ids)
    assert len(workers) == 2
