"""``meridian serve --workers N``: real processes sharing the ports and the store."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import ADMIN_TOKEN, GLOBAL_KEY, MODEL, SERVED, EmulatorFactory, sha
from tests.redis_server import free_port

MERIDIAN = [sys.executable, "-m", "gateway.cli.main"]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def _config(path: Path, http: int, admin: int, urls: list[str], store: str) -> Path:
    path.write_text(
        f"""
listen: {{http: "127.0.0.1:{http}", admin: "127.0.0.1:{admin}", grpc: null}}
admin: {{token: "{sha(ADMIN_TOKEN)}"}}
{store}
regions: [{{name: "aws:us-east-1", tags: [US]}}]
models: [{{name: {MODEL}, versions: {{v1: 100, v2: 0}}}}]
backends:
  - {{name: a, model: {MODEL}, version: v1, region: "aws:us-east-1", provider: vllm,
      url: "{urls[0]}", served_model: {SERVED}}}
  - {{name: b, model: {MODEL}, version: v2, region: "aws:us-east-1", provider: vllm,
      url: "{urls[1]}", served_model: {SERVED}}}
tenants: [{{name: t, api_keys: ["{sha(GLOBAL_KEY)}"]}}]
"""
    )
    return path


def _workers(pid: int) -> list[int]:
    """The serve process's workers (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


async def _chat_version(http: int) -> str:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}", "x-meridian-session": os.urandom(4).hex()}
    url = f"http://127.0.0.1:{http}/v1/chat/completions"
    # a new session, so a new connection: either worker may take it
    async with aiohttp.ClientSession() as s, s.post(url, json=body, headers=headers) as r:
        assert r.status == 200
        return r.headers["x-meridian-version"]


async def test_workers_need_a_shared_store(tmp_path: Path) -> None:
    config = _config(tmp_path / "m.yaml", free_port(), free_port(), ["http://h:1"] * 2, "")
    proc = await asyncio.create_subprocess_exec(
        *MERIDIAN, "serve", "--config", str(config), "--workers", "2", stderr=subprocess.PIPE
    )
    _, err = await proc.communicate()
    assert proc.returncode != 0
    assert err.decode().strip().splitlines() == [
        "meridian: --workers needs a store the workers share: "
        "set store.path (an SQLite file) or use store kind redis"
    ]


@pytest.mark.timeout(90)
async def test_two_workers_share_ports_and_store_and_fail_together(
    emulators: EmulatorFactory, tmp_path: Path
) -> None:
    em1, em2 = await emulators(), await emulators()
    http, admin = free_port(), free_port()
    store = f'store: {{kind: embedded, path: "{tmp_path / "state.db"}"}}'
    config = _config(tmp_path / "m.yaml", http, admin, [em1.url, em2.url], store)
    proc = await asyncio.create_subprocess_exec(
        *MERIDIAN, "serve", "--config", str(config), "--workers", "2", stderr=subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as s:
            deadline = time.monotonic() + 30
            while len(_workers(proc.pid)) < 2 or not await _answers(s, http):
                assert time.monotonic() < deadline, "workers never came up"
                await asyncio.sleep(0.05)
            workers = _workers(proc.pid)
            assert len(workers) == 2
            # both admin listeners bound (SO_REUSEPORT): the second worker did not die
            for _ in range(10):
                async with (
                    aiohttp.ClientSession() as fresh,
                    fresh.get(f"http://127.0.0.1:{admin}/admin/v1/status", headers=ADMIN) as r,
                ):
                    assert r.status == 200
            assert all(Path(f"/proc/{w}").exists() for w in workers)
            # a change through one worker's admin API reaches both (the shared SQLite file)
            async with s.put(
                f"http://127.0.0.1:{admin}/admin/v1/weights/{MODEL}",
                json={"split": {"v1": 0, "v2": 100}},
                headers=ADMIN,
            ) as r:
                assert r.status == 200, await r.text()
            deadline = time.monotonic() + 10
            while True:
                versions = {await _chat_version(http) for _ in range(12)}
                if versions == {"v2"}:
                    break
                assert time.monotonic() < deadline, f"still served by {versions}"
                await asyncio.sleep(0.05)
        # one worker dies: the parent stops the other and exits non-zero
        os.kill(workers[0], signal.SIGKILL)
        async with asyncio.timeout(20):
            _, err = await proc.communicate()
        assert proc.returncode != 0
        assert f"worker {workers[0]} exited with -9; stopping the rest" in err.decode()
        assert not Path(f"/proc/{workers[1]}").exists() or _zombie(workers[1])
    finally:
        if proc.returncode is None:
            for pid in _workers(proc.pid):  # SIGKILL on the parent would orphan them
                os.kill(pid, signal.SIGKILL)
            proc.kill()
            await proc.wait()


async def _answers(s: aiohttp.ClientSession, http: int) -> bool:
    try:
        async with s.get(f"http://127.0.0.1:{http}/readyz") as r:
            return r.status == 200
    except aiohttp.ClientError:
        return False


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True
