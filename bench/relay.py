"""``python bench/relay.py``: the bench's ``relay`` contender, what uvloop itself costs.

A byte relay on asyncio protocols under uvloop: each client connection gets
its own upstream connection, and every read on one side is written to the
other as it is, with each side's flow control pausing the other's reads. It
knows nothing of HTTP (keep-alive works because the two connections live and
die together), so it is no proxy a client could use against a pool of
backends; it is the floor of any proxy written in Python on this loop: a
read and a write system call per packet and two Python calls. Beside nginx
it shows what the interpreter and the loop cost; beside the ``aiohttp``
contender (``bench/floor.py``), what an HTTP library's Python costs on top.

Not part of the product: it exists to be measured (bench/README.md).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
from typing import cast
from urllib.parse import urlsplit

import uvloop


class _Side(asyncio.Protocol):
    """One connection of a pair; what it reads goes to ``peer``, and its end ends the peer."""

    def __init__(self, peer: _Side | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer = peer

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's: not a subclass

    def data_received(self, data: bytes) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.write(data)

    def pause_writing(self) -> None:  # our write buffer is full: stop reading the peer
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None and self.peer.transport is not None:
            self.peer.transport.close()


class _Client(_Side):
    """The client's side: connects its upstream side, holding what the client sends
    until then. The upstream side is made with its peer, so nothing it reads is
    lost; a client gone before the upstream connected closes it at once."""

    def __init__(self, host: str, port: int) -> None:
        super().__init__()
        self._upstream = (host, port)
        self._early: list[bytes] = []
        self._connecting: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    def data_received(self, data: bytes) -> None:
        if self.peer is None:
            self._early.append(data)
        else:
            super().data_received(data)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            up_transport, upstream = await loop.create_connection(
                lambda: _Side(peer=self), *self._upstream
            )
        except OSError:
            if self.transport is not None:
                self.transport.close()
            return
        if self.transport is None or self.transport.is_closing():
            up_transport.close()  # the client left while we connected
            return
        self.peer = upstream
        for data in self._early:
            up_transport.write(data)
        self._early.clear()


async def serve(host: str, port: int, upstream: str) -> None:
    parts = urlsplit(upstream)
    target = (parts.hostname or "127.0.0.1", parts.port or 80)
    server = await asyncio.get_running_loop().create_server(
        lambda: _Client(*target),
        host,
        port,
        backlog=1024,  # as the gateway's listener
    )
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/relay.py", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:8000")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        uvloop.run(serve(args.host, args.port, args.upstream))


if __name__ == "__main__":
    main()
