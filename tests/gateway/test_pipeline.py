"""The pipeline's stages (gateway/pipeline/): what the front ends ask of them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from gateway.app.server import Gateway
from gateway.config.model import load
from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    gateway_config,
    sha,
    wait_for,
)


def _write(path: Path, backends: list[tuple[str, str]]) -> None:
    config = gateway_config([(n, "onprem:fra1", "v1", url) for n, url in backends])
    data: dict[str, Any] = json.loads(config.model_dump_json(exclude_defaults=True))
    data["listen"] = {"http": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": None}
    data["admin"] = {"token": sha(ADMIN_TOKEN)}
    data["tenants"] = [{"name": "global", "api_keys": [sha(GLOBAL_KEY)]}]
    for b in data["backends"]:
        b.setdefault("served_model", SERVED)
    path.write_text(yaml.safe_dump(data))


async def _stream(gw: Gateway) -> tuple[int, str, int]:
    """(status, serving backend, content chunks) of one streamed chat."""
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    body["max_tokens"] = 5
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(f"{gw.http_url}/v1/chat/completions", json=body, headers=headers) as r,
    ):
        chunks = 0
        async for raw in r.content:
            line = raw.decode().strip()
            if line.startswith("data: {"):
                event = json.loads(line[6:])
                chunks += bool(event.get("choices") and event["choices"][0]["delta"].get("content"))
        return r.status, r.headers.get("x-meridian-backend", ""), chunks


@pytest.mark.timeout(60)
async def test_a_reload_removing_the_backend_before_its_first_token_does_not_fail_the_stream(
    emulators: EmulatorFactory, tmp_path: Path
) -> None:
    """The encode stage asks the execution's own providers whether to pass the bytes
    through; the front end used to look the backend up in the current registry, which
    a reload during the wait for the first token had already dropped it from (a 500)."""
    slow = await emulators(ttft_s=3.0)  # the reload lands inside this wait
    other = await emulators()
    path = tmp_path / "meridian.yaml"
    _write(path, [("slow", slow.url)])
    gw = Gateway(load(path), config_path=str(path))
    await gw.start()
    try:
        stream = asyncio.create_task(_stream(gw))
        await wait_for(lambda: slow.stats.requests == 1)
        _write(path, [("other", other.url)])
        assert gw.reloader is not None
        outcome = await gw.reloader.reload("test")
        assert outcome.applied, outcome.problems
        assert slow.stats.tokens_sent == 0 and not stream.done()  # still before its first token
        assert await stream == (200, "slow", 5)
    finally:
        await gw.stop(grace=0.5)
