"""regions.body_reader: upstream bodies read whole, without aiohttp's per-HTTP-chunk
bookkeeping (issue 22 item 2). Judged against aiohttp's own StreamReader: for any
chunked body split into socket reads anywhere, both give the same body, and the
lean one keeps its buffer within the marks and takes all of it in each read; waits,
EOF, errors and partial reads behave as aiohttp's. That the pool's responses get
it: tests/regions/test_upstream_request_cost.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator

import pytest
from aiohttp import ClientPayloadError
from aiohttp.client_proto import ResponseHandler
from aiohttp.helpers import TimerContext
from aiohttp.streams import StreamReader
from hypothesis import given, settings
from hypothesis import strategies as st

from regions.body_reader import BodyReader
from regions.registry import _upstream_handler
from tests.conftest import wait_for

LIMIT = 64  # a small read buffer: the scripts below cross its high-water marks
HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"


def _chunked(pieces: list[bytes]) -> list[bytes]:
    """Each piece as one HTTP chunk, then the last chunk."""
    return [b"%x\r\n%b\r\n" % (len(p), p) for p in pieces if p] + [b"0\r\n\r\n"]


_PEERS: list[socket.socket] = []  # the far ends, open until the test ends


@pytest.fixture(autouse=True)
def _close_peers() -> Iterator[None]:
    yield
    while _PEERS:
        _PEERS.pop().close()


async def _connect(protocol: ResponseHandler) -> None:
    """A real connection (a socket pair) under the protocol, as the pool's have."""
    ours, theirs = socket.socketpair()
    _PEERS.append(theirs)
    await asyncio.get_running_loop().create_connection(lambda: protocol, sock=ours)


async def _response(lean: bool) -> tuple[ResponseHandler, StreamReader]:
    """A protocol whose response head has arrived: the pool's (lean) or aiohttp's own."""
    loop = asyncio.get_running_loop()
    protocol = _upstream_handler(loop) if lean else ResponseHandler(loop)
    await _connect(protocol)
    protocol.set_response_params(read_bufsize=LIMIT, auto_decompress=False)
    protocol.data_received(HEAD)
    _, reader = await protocol.read()
    assert type(reader) is (BodyReader if lean else StreamReader)
    return protocol, reader


async def _play(lean: bool, wire: bytes, cuts: list[int], reads: list[bool]) -> list[bytes]:
    """The wire bytes split into socket reads by ``cuts``, a body read after each one
    the script says (and after each one a paused connection held back); the reads.
    Checked throughout: a read takes everything buffered, and the buffer stays within
    the high-water marks (a peer's bytes are bounded, however it splits them)."""
    protocol, reader = await _response(lean)
    high, count = reader._high_water, reader._high_water_chunks
    out: list[bytes] = []
    at, step = 0, 0
    while at < len(wire) or reader._buffer:
        if at < len(wire) and not protocol._reading_paused:  # a paused socket is not read
            cut = cuts[step % len(cuts)]
            protocol.data_received(wire[at : at + cut])
            at += cut
        assert reader._size == sum(map(len, reader._buffer))
        if lean:  # at most one socket read past a mark (90-byte pieces, 120-byte reads)
            assert reader._size <= high + 120 and len(reader._buffer) <= count + 120
            assert protocol._reading_paused == (reader._size > high or len(reader._buffer) > count)
        read = reads[step % len(reads)] or protocol._reading_paused or at >= len(wire)
        if reader._buffer and read:
            held = b"".join(reader._buffer)
            out.append(await reader.readany())
            # All of it; a resume may have let the parser refill the buffer since.
            assert out[-1] == held
        step += 1
    out.extend([c async for c in reader.iter_any()])
    assert reader.at_eof()
    assert protocol.transport is not None
    protocol.transport.close()
    return out


@settings(max_examples=150, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=1, max_size=90), max_size=30),
    cuts=st.lists(st.integers(min_value=1, max_value=120), min_size=1, max_size=30),
    reads=st.lists(st.booleans(), min_size=1, max_size=30),
)
def test_reads_and_flow_control_match_aiohttps_reader(
    pieces: list[bytes], cuts: list[int], reads: list[bool]
) -> None:
    """The wire bytes of a chunked body (pieces of up to 90 bytes against a 128-byte
    mark), split into socket reads anywhere, through the pool's protocol and through
    aiohttp's own: the same body, in order, and the lean reader pauses the connection
    exactly while it holds more than a mark (bytes, or pieces: aiohttp counts HTTP
    chunks, this counts what the socket reads cut them into, so it may pause sooner)."""

    async def run() -> None:
        wire = b"".join(_chunked(pieces))
        body = b"".join(pieces)
        assert b"".join(await _play(False, wire, cuts, reads)) == body
        assert b"".join(await _play(True, wire, cuts, reads)) == body

    asyncio.run(run())


async def test_a_waiting_read_wakes_on_data_on_eof_and_on_an_error() -> None:
    protocol, lean = await _response(lean=True)
    read = asyncio.ensure_future(lean.readany())
    await asyncio.sleep(0)
    protocol.data_received(b"".join(_chunked([b"data: 1\n\n"])[:1]))
    assert await read == b"data: 1\n\n"

    read = asyncio.ensure_future(lean.readany())
    await asyncio.sleep(0)
    read.cancel()  # a client that went away: the next read may wait again
    with pytest.raises(asyncio.CancelledError):
        await read
    assert lean._waiter is None

    read = asyncio.ensure_future(lean.readany())
    await asyncio.sleep(0)
    with pytest.raises(RuntimeError, match="another read"):
        await lean.readany()
    lean.set_exception(ConnectionResetError("reset"))
    with pytest.raises(ConnectionResetError):
        await read
    with pytest.raises(ConnectionResetError):
        await lean.readany()

    protocol, lean = await _response(lean=True)
    read = asyncio.ensure_future(lean.readany())
    await asyncio.sleep(0)
    protocol.data_received(_chunked([])[0])  # the last chunk: the body's end
    assert await read == b""
    assert lean.at_eof()


async def test_a_read_after_the_connection_closed_fails_as_aiohttps_does() -> None:
    for lean in (False, True):
        protocol, reader = await _response(lean)
        assert protocol.transport is not None
        protocol.transport.close()
        await wait_for(lambda: not protocol.connected)  # noqa: B023 (awaited here)
        with pytest.raises(ClientPayloadError, match="not completed"):
            await reader.readany()


async def test_a_partial_read_by_size_is_continued_whole() -> None:
    """``read(n)`` (an error body read capped) leaves an offset into the first piece."""
    protocol, lean = await _response(lean=True)
    protocol.data_received(b"".join(_chunked([b"abcdef", b"gh"])[:2]))
    assert await lean.read(4) == b"abcd"
    assert await lean.readany() == b"efgh"
    assert lean._size == 0


async def test_only_plain_readers_without_a_timer_are_adopted() -> None:
    loop = asyncio.get_running_loop()
    protocol = _upstream_handler(loop)
    protocol.set_response_params(timer=TimerContext(loop))  # a session's total timeout
    protocol.data_received(HEAD)
    _, timed = await protocol.read()
    assert type(timed) is StreamReader
    _, plain = await _response(lean=True)
    BodyReader.adopt(plain)  # once is enough; again changes nothing
    assert type(plain) is BodyReader
