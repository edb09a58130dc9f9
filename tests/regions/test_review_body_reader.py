"""Review of regions.body_reader / the pool's protocol: a read that never woke (helper-47).

A response whose first socket read carries the head and more than
``_high_water_chunks`` (16384 with the default 256 KiB read buffer) HTTP chunks
is parsed before ``BodyReader.adopt`` runs, so aiohttp's own
``end_http_chunk_receiving`` pauses the protocol, setting the C parser's
``_paused`` flag outside ``on_body``. When that read ends on a chunk boundary
no ``on_body`` clears the flag; the next segment's first ``on_body`` then
stops llhttp (HPE_PAUSED) and leaves the rest of the segment in the parser's
tail while the protocol is *not* paused. aiohttp's own reader re-parses the
tail on its next read (``resume_reading`` feeds ``b""``); the pool's protocol
skipped that resume while unpaused (since 3d5b91f), so the bytes sat in the
parser until the peer sent more: with a peer that has sent everything, never.
Now such a response keeps aiohttp's reader and aiohttp's resume.
"""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from regions.registry import SessionPool
from tests.conftest import wait_for

FIRST = 16385  # one over the default _high_water_chunks: max(4, 2**18 // 16), read_bufsize 256 KiB
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
PART1 = HEAD + b"1\r\na\r\n" * FIRST  # ends on a chunk boundary
TAIL_PIECES = [b"data: %d\n\n" % i for i in range(20)]
PART2 = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in TAIL_PIECES) + b"0\r\n\r\n"
EXPECTED = b"a" * FIRST + b"".join(TAIL_PIECES)


async def _serve(go_on: asyncio.Event) -> tuple[asyncio.Server, str]:
    async def handle(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        while (await r.readline()) not in (b"\r\n", b""):
            pass
        w.write(PART1)  # one write, one loopback segment, one read at the client
        await w.drain()
        await go_on.wait()  # the client holds all of PART1 before PART2 is sent
        w.write(PART2)
        await w.drain()
        await r.read()  # the peer has said everything; it waits for the client

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}/v1/chat/completions"


async def _read_body(session: aiohttp.ClientSession, url: str, go_on: asyncio.Event) -> bytes:
    async with session.get(url) as resp:
        # The client holds all of PART1 (and nothing more) before PART2 is sent. The
        # scenario also needs PART1 in one socket read, which loopback gives here (the
        # pool case fails before 230b93b); split, the test would pass without it.
        await wait_for(lambda: resp.content.total_bytes >= FIRST, timeout=5.0)
        assert resp.content.total_bytes == FIRST
        go_on.set()
        pieces = []
        async with asyncio.timeout(5.0):  # the deadline: a read that never wakes fails here
            while piece := await resp.content.readany():  # as openai_compat reads
                pieces.append(piece)
        return b"".join(pieces)


@pytest.mark.parametrize("pool", [False, True], ids=["aiohttp-own", "pool-bodyreader"])
async def test_many_chunks_in_first_read_then_rest_is_read(pool: bool) -> None:
    go_on = asyncio.Event()
    server, url = await _serve(go_on)
    if pool:
        session = SessionPool(5.0).for_url(url)
    else:
        session = aiohttp.ClientSession(auto_decompress=False)
    try:
        assert await _read_body(session, url, go_on) == EXPECTED
    finally:
        await session.close()
        server.close()
