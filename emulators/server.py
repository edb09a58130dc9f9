"""What the three emulators share: start, stop, and the ``/_emulator`` control routes.

Each emulator adds its provider's routes (:meth:`EmulatorServer.add_routes`)
and says how its provider words a bad request (:meth:`EmulatorServer.bad_request`),
so a test that sets a malformed fault gets the same error shape as a client
of that provider would.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web

from emulators.faults import Faults


class EmulatorServer:
    """One emulated server on a loopback port; subclasses set ``faults`` and ``stats``."""

    client_max_size = 1024**2  # the provider's request-body cap
    faults: Faults
    stats: Any  # a dataclass of counters, served by GET /_emulator/stats

    def __init__(self) -> None:
        self._inflight: set[asyncio.Transport] = set()
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._closing = False

    def add_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    def bad_request(self, message: str) -> web.Response:
        raise NotImplementedError

    @property
    def url(self) -> str:
        if self._url is None:
            raise RuntimeError("emulator not started")
        return self._url

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.client_max_size)
        self.add_routes(app)
        app.router.add_get("/_emulator/faults", self._get_faults)
        app.router.add_post("/_emulator/faults", self._set_faults)
        app.router.add_delete("/_emulator/faults", self._clear_faults)
        app.router.add_get("/_emulator/stats", self._stats)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        runner = web.AppRunner(
            self.app(), handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        await web.TCPSite(runner, host, port, backlog=1024).start()
        self._runner = runner
        self._url = f"http://{f'[{host}]' if ':' in host else host}:{runner.addresses[0][1]}"
        return self._url

    async def stop(self) -> None:
        """Stop at once: in-flight requests are aborted (a stalled stream never ends)."""
        if self._runner is None:
            return
        self._closing = True
        try:
            for transport in list(self._inflight):
                transport.abort()
            await self._runner.cleanup()
        finally:
            self._runner, self._url, self._closing = None, None, False

    async def _get_faults(self, request: web.Request) -> web.Response:
        return _json(self.faults.as_dict())

    async def _set_faults(self, request: web.Request) -> web.Response:
        try:
            self.faults.update(orjson.loads(await request.read()))
        except (orjson.JSONDecodeError, ValueError) as exc:
            return self.bad_request(str(exc))
        return _json(self.faults.as_dict())

    async def _clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        return _json(self.faults.as_dict())

    async def _stats(self, request: web.Request) -> web.Response:
        return _json(asdict(self.stats))


def _json(data: Any) -> web.Response:
    return web.Response(body=orjson.dumps(data), content_type="application/json")
