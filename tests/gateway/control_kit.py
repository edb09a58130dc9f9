"""Helpers for the control-plane tests: admin calls, client requests, steady load."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import Counter
from typing import Any

import aiohttp

from gateway.app.server import Gateway
from gateway.config.model import Config
from tests.conftest import ADMIN_TOKEN, GLOBAL_KEY, MODEL, gateway_config
from tests.redis_server import RedisServer

_ids = itertools.count()


def redis_config(
    backends: list[Any], server: RedisServer, prefix: str = "t", **overrides: Any
) -> Config:
    store = {"kind": "redis", "url": server.url, "prefix": prefix, "resync_s": 0.5}
    store.update(overrides.pop("store", {}))
    return gateway_config(backends, store=store, **overrides)


async def admin(
    s: aiohttp.ClientSession,
    gw: Gateway,
    method: str,
    path: str,
    body: Any = None,
    actor: str | None = None,
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    if actor:
        headers["x-meridian-actor"] = actor
    async with s.request(method, gw.admin_url + path, json=body, headers=headers) as r:
        return r.status, await r.json()


async def chat(
    s: aiohttp.ClientSession, gw: Gateway, key: str = GLOBAL_KEY, *, stream: bool = False
) -> tuple[int, dict[str, str], Any]:
    """One small request with its own session id (so the version split applies per request)."""
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 2,
        "stream": stream,
    }
    headers = {"Authorization": f"Bearer {key}", "x-meridian-session": f"s{next(_ids)}"}
    async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r:
        payload = await r.read()
        return r.status, dict(r.headers), payload


class Load:
    """``workers`` request loops spread over the gateways until stopped."""

    def __init__(self, gateways: list[Gateway], workers: int = 4) -> None:
        self.gateways = gateways
        self.statuses: Counter[int] = Counter()
        self.versions: Counter[str] = Counter()
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._workers = workers

    async def __aenter__(self) -> Load:
        self._session = aiohttp.ClientSession()
        self._tasks = [asyncio.create_task(self._loop(i)) for i in range(self._workers)]
        return self

    async def _loop(self, i: int) -> None:
        for n in itertools.count():
            if self._stop.is_set():
                return
            gw = self.gateways[(i + n) % len(self.gateways)]
            try:
                status, headers, body = await chat(self._session, gw)
            except aiohttp.ClientError as exc:
                self.failures.append(repr(exc))
                continue
            self.statuses[status] += 1
            self.versions[headers.get("x-meridian-version", "")] += 1
            if status != 200:
                self.failures.append(f"{status} {body[:200]!r}")

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    async def __aexit__(self, *exc: object) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._session.close()
