"""The bench's floors (``bench/floor.py``, ``bench/relay.py``) as real processes.

Their CPU figures are only comparable with nginx's if they relay as it does:
every byte and status, each upstream read as it comes (not buffered to the
end), keep-alive connections reused, and nothing left open when a client goes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from bench.procs import free_port

ROOT = Path(__file__).resolve().parents[2]
FIRST, REST = b'data: {"a": 1}\n\n', b'data: {"b": 2}\n\ndata: [DONE]\n\n'


async def _until(check: Callable[[], bool], what: str, seconds: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not check():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.02)


@asynccontextmanager
async def _started(script: str, upstream: str, log: Path) -> AsyncIterator[str]:
    """The script listening on a free port, relaying to ``upstream``; its URL."""
    port = free_port()
    with log.open("wb") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, str(ROOT / "bench" / script), "--port", str(port),
            "--upstream", upstream, stdout=err, stderr=err,
        )  # fmt: skip
    try:

        async def listens() -> bool:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                return False
            writer.close()
            return True

        deadline = asyncio.get_running_loop().time() + 30.0
        while not await listens():
            assert proc.returncode is None, f"{script} exited: {log.read_text()[-2000:]}"
            assert asyncio.get_running_loop().time() < deadline, f"{script} never listened"
            await asyncio.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        await proc.wait()


class _Upstream:
    """An upstream whose stream holds its second part until ``release`` is set, and
    which records the peer (connection) of every request."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.peers: list[object] = []

    async def stream(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.peers.append(
            request.transport.get_extra_info("peername") if request.transport else None
        )
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "X-Up": "1"})
        await resp.prepare(request)
        await resp.write(FIRST)
        await self.release.wait()
        await resp.write(REST)
        return resp

    async def fail(self, request: web.Request) -> web.Response:
        return web.json_response({"error": {"message": "nope"}}, status=503)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[str, _Upstream]]:
    up = _Upstream()
    app = web.Application()
    app.router.add_post("/ok", up.stream)
    app.router.add_post("/fail", up.fail)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}", up
    await runner.cleanup()


@pytest.mark.parametrize("script", ["floor.py", "relay.py"])
async def test_a_floor_streams_each_read_and_relays_status_headers_and_keep_alive(
    upstream: tuple[str, _Upstream], script: str, tmp_path: Path
) -> None:
    url, up = upstream
    async with _started(script, url, tmp_path / "log") as proxy:
        connector = aiohttp.TCPConnector(limit=1)  # one client connection for all
        async with aiohttp.ClientSession(connector=connector) as session:
            for _ in range(2):
                up.release.clear()
                async with session.post(proxy + "/ok", data=b"{}") as resp:
                    assert resp.status == 200
                    assert resp.headers["Content-Type"] == "text/event-stream"
                    assert resp.headers["X-Up"] == "1"  # the upstream's own header
                    # the first part arrives while the upstream holds the rest: streamed
                    assert await resp.content.readany() == FIRST
                    up.release.set()
                    assert await resp.read() == REST
            async with session.post(proxy + "/fail", data=b"{}") as resp:
                assert resp.status == 503
                assert await resp.json() == {"error": {"message": "nope"}}
            async with session.get(proxy + "/absent") as resp:
                assert resp.status == 404  # the upstream's answer, not the floor's
    assert len(up.peers) == 2 and up.peers[0] == up.peers[1]  # one upstream connection, reused


async def test_the_relay_closes_the_upstream_side_of_a_client_that_left(tmp_path: Path) -> None:
    """Clients that send and leave at once, before or after their pair is linked,
    leave no upstream connection open (the upstream here never answers)."""
    open_now: set[asyncio.StreamWriter] = set()
    made = 0

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal made
        made += 1
        open_now.add(writer)
        try:
            while await reader.read(65536):
                pass
        finally:
            open_now.discard(writer)
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, _started("relay.py", f"http://127.0.0.1:{port}", tmp_path / "log") as relay:
        host, relay_port = relay.removeprefix("http://").split(":")
        # the readiness probe's own pair, connected and gone
        await _until(lambda: made == 1 and not open_now, "the readiness probe's pair stayed open")
        before = made
        for _ in range(50):
            _, writer = await asyncio.open_connection(host, int(relay_port))
            writer.write(b"POST /ok HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
            writer.close()
        await _until(lambda: made - before == 50, "an upstream connection per client")
        await _until(lambda: not open_now, f"{len(open_now)} upstream connections left open")
