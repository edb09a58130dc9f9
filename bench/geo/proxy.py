"""A latency-injecting TCP proxy: one inter-region link, in user space.

netem is not available on these machines, so every connection that crosses
regions goes through a :class:`Link`: a listener in the client's region that
forwards to a target in another region. Each chunk read from one side is
written to the other ``one_way_s`` later (a reader task queues it with its
delivery time, a writer task sleeps until then), so pipelined traffic keeps
its spacing and a link's bandwidth is not capped by its delay. A new
connection also pays the handshake: the client's first bytes arrive no
sooner than one RTT plus one way after it connected, as over real TCP.

Every queue is bounded (``_QUEUE_CHUNKS`` reads of at most ``_READ_BYTES``):
when the far side does not drain, the proxy stops reading the near side.

A link can be:

- **cut** (a partition): it becomes a black hole. Bytes already on the wire
  and everything sent afterwards are dropped, connections stay open and
  silent (no RST, no FIN), and new connections are accepted and then hear
  nothing, which is what a client sees when packets are dropped.
- **healed**: connections that lost bytes while cut are closed (their byte
  streams have holes; a real TCP stack would have retransmitted, a proxy
  cannot), and new ones pass again.
- **retargeted**: new connections go to another server with another delay
  (a DNS or endpoint failover); open ones are closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from bench.procs import free_port

_READ_BYTES = 64 * 1024
_QUEUE_CHUNKS = 64  # ≤ 4 MiB queued per direction per connection


@dataclass(frozen=True, slots=True)
class Target:
    host: str
    port: int
    region: str


class _Conn:
    __slots__ = ("accepted_at", "link", "tainted", "tasks", "writers")

    def __init__(self, link: Link) -> None:
        self.link = link
        self.accepted_at = time.monotonic()
        self.tainted = False
        self.tasks: list[asyncio.Task[None]] = []
        self.writers: list[asyncio.StreamWriter] = []

    def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        for writer in self.writers:
            with contextlib.suppress(Exception):
                writer.transport.abort()


class Link:
    """Listens on ``listen_host`` (a port the kernel picks) and forwards to a target."""

    def __init__(
        self, name: str, source: str, listen_host: str, target: Target, one_way_s: float
    ) -> None:
        self.name = name
        self.source = source  # the region the listener is in
        self.listen_host = listen_host
        self.target = target
        self.one_way_s = one_way_s
        self.cut = False
        self._server: asyncio.Server | None = None
        self._conns: set[_Conn] = set()
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.listen_host}:{self.port}"

    async def start(self) -> None:
        # a port from free_port, not the kernel's pick at bind: that could be one already
        # given to a child which has not bound it yet
        self.port = free_port(self.listen_host)
        self._server = await asyncio.start_server(self._accept, self.listen_host, self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    def set_cut(self, cut: bool) -> None:
        self.cut = cut
        if not cut:
            for conn in [c for c in self._conns if c.tainted]:
                conn.close()
                self._conns.discard(conn)

    def retarget(self, target: Target, one_way_s: float) -> None:
        self.target = target
        self.one_way_s = one_way_s
        for conn in list(self._conns):
            conn.close()
        self._conns.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(self)
        self._conns.add(conn)
        conn.writers.append(writer)
        try:
            await self._serve(conn, reader, writer)
        finally:
            conn.close()
            self._conns.discard(conn)

    async def _serve(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # The far end's SYN arrives one way after the client's: connect then.
        await asyncio.sleep(self.one_way_s)
        while self.cut:  # a black hole: hold the client, never connect
            conn.tainted = True
            await asyncio.sleep(0.05)
        if conn not in self._conns:
            return  # closed by heal or retarget while it waited
        target = self.target
        try:
            up_reader, up_writer = await asyncio.open_connection(target.host, target.port)
        except OSError:
            return  # the far server is gone: the client sees the connection close
        conn.writers.append(up_writer)
        handshake_until = conn.accepted_at + 2 * self.one_way_s
        c2s = asyncio.ensure_future(self._pipe(conn, reader, up_writer, handshake_until))
        s2c = asyncio.ensure_future(self._pipe(conn, up_reader, writer, 0.0))
        conn.tasks += [c2s, s2c]
        await asyncio.wait([c2s, s2c], return_when=asyncio.FIRST_COMPLETED)

    async def _pipe(
        self,
        conn: _Conn,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        not_before: float,
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(_QUEUE_CHUNKS)
        deliver = asyncio.ensure_future(self._deliver(queue, writer))
        conn.tasks.append(deliver)
        try:
            while True:
                data = await reader.read(_READ_BYTES)
                if not data:
                    break
                if self.cut:
                    conn.tainted = True
                    continue
                now = time.monotonic()
                await queue.put((max(now, not_before) + self.one_way_s, data))
            await queue.put((time.monotonic() + self.one_way_s, b""))
            await deliver
        except (OSError, ConnectionError):
            pass
        finally:
            deliver.cancel()

    async def _deliver(
        self, queue: asyncio.Queue[tuple[float, bytes]], writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                at, data = await queue.get()
                wait = at - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if self.cut:
                    continue  # dropped on the wire
                if not data:
                    if writer.can_write_eof():
                        writer.write_eof()
                    return
                writer.write(data)
                await writer.drain()
        except (OSError, ConnectionError):
            return


async def measure_rtt_ms(host: str, port: int, samples: int = 5, timeout_s: float = 5.0) -> float:
    """Median time of a Redis ``PING`` round trip over one warm connection through a link."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    times: list[float] = []
    try:
        for _ in range(samples + 1):  # the first one pays the handshake
            t0 = time.perf_counter()
            writer.write(b"PING\r\n")
            await writer.drain()
            await asyncio.wait_for(reader.readline(), timeout_s)
            times.append((time.perf_counter() - t0) * 1000)
    finally:
        writer.transport.abort()
    rest = sorted(times[1:])
    return rest[len(rest) // 2]
