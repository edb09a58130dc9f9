"""Reloads racing requests (review of issue 14's frozen Runtime and its Live part).

Requests run without pause while reloads swap the one backend and the tenant's key
back and forth: the snapshot that routes a request and the providers that serve it
are one reload's pair (swapped with no await between), so each request is a 200
from a backend of some config, or the 401 of a key that config no longer has;
never a 5xx. (The key is checked before the body is read, so a request whose body
arrives across a reload may be routed in the next world: not asserted here.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import pytest

from gateway.app.server import Gateway
from gateway.config.model import load
from tests.conftest import ADMIN_TOKEN, GLOBAL_KEY, MODEL, EmulatorFactory
from tests.gateway.test_reload import _data, _write

OTHER_KEY = "sk-test-other-world"


@pytest.mark.timeout(60)
async def test_requests_racing_reloads_each_see_one_world(
    emulators: EmulatorFactory, tmp_path: Path
) -> None:
    a, b = await emulators(), await emulators()
    worlds = [
        _data([("a", a.url)], [("global", GLOBAL_KEY)]),
        _data([("b", b.url)], [("global", OTHER_KEY)]),
    ]
    path = tmp_path / "meridian.yaml"
    _write(path, worlds[0])
    gw = Gateway(load(path), config_path=str(path))
    await gw.start()
    seen: list[tuple[str, int, str]] = []
    stop = asyncio.Event()

    async def ask(s: aiohttp.ClientSession, key: str) -> None:
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        while not stop.is_set():
            headers = {"Authorization": f"Bearer {key}"}
            url = f"{gw.http_url}/v1/chat/completions"
            async with s.post(url, json=body, headers=headers) as r:
                await r.read()
                seen.append((key, r.status, r.headers.get("x-meridian-backend", "")))

    try:
        async with aiohttp.ClientSession() as s:
            askers = [asyncio.create_task(ask(s, k)) for k in (GLOBAL_KEY, OTHER_KEY) * 3]
            admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            for i in range(1, 13):
                _write(path, worlds[i % 2])
                async with s.post(f"{gw.admin_url}/admin/v1/reload", headers=admin) as r:
                    assert r.status == 200, await r.text()
                for _ in range(1000):  # some requests between two reloads
                    if len(seen) >= 4 * i:
                        break
                    await asyncio.sleep(0.001)
            stop.set()
            await asyncio.gather(*askers)
    finally:
        await gw.stop(grace=0.5)
    assert seen
    assert {status for _, status, _ in seen} <= {200, 401}, seen
    assert {backend for _, status, backend in seen if status == 200} == {"a", "b"}
