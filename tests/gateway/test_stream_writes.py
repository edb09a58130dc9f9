"""How a stream's chunks reach the client: framed by the gateway, straight to the transport.

The slow client's bound is in test_lifecycle.py; these pin the per-chunk path
(aiohttp's ``StreamWriter.write`` is not on it), the bytes on the wire, and the
fallback for a body that is not chunked (HTTP/1.0)."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.http_writer import StreamWriter

from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config

BODY = orjson.dumps(
    {
        "model": MODEL,
        "stream": True,
        "max_tokens": 40,
        "messages": [{"role": "user", "content": "hello"}],
    }
)


def _request(version: str) -> bytes:
    return (
        f"POST /v1/chat/completions HTTP/{version}\r\nHost: x\r\n"
        f"Authorization: Bearer {GLOBAL_KEY}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(BODY)}\r\nConnection: close\r\n\r\n"
    ).encode() + BODY


async def _raw(port: int, version: str) -> tuple[bytes, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(_request(version))
    answer = await reader.read(-1)  # Connection: close, so the gateway closes at the end
    writer.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    return head, body


def _dechunk(body: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            assert body == b"\r\n", "the chunked terminator ends the body"
            return bytes(out)
        out += body[:size]
        assert body[size : size + 2] == b"\r\n"
        body = body[size + 2 :]


def _events(sse: bytes) -> list[bytes]:
    assert sse.endswith(b"\n\n")
    return sse[:-2].split(b"\n\n")


async def test_chunks_bypass_aiohttp_write_and_frame_as_aiohttp_does(
    emulators: EmulatorFactory, gateways: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    em = await emulators(itl_s=0.002)
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    port = int(gw.http_url.rsplit(":", 1)[1])
    writes: Counter[int] = Counter()  # StreamWriter.write calls per local port
    original = StreamWriter.write

    async def counting(self: StreamWriter, chunk: Any, **kwargs: Any) -> None:
        transport = self.transport
        if transport is not None:
            writes[transport.get_extra_info("sockname")[1]] += 1
        await original(self, chunk, **kwargs)

    monkeypatch.setattr(StreamWriter, "write", counting)
    head, body = await _raw(port, "1.1")
    assert b"Transfer-Encoding: chunked" in head
    events = _events(_dechunk(body))
    assert events[-1] == b"data: [DONE]"
    contents = [e for e in events if b'"content":' in e]
    assert len(contents) == 41  # the role chunk and 40 tokens
    # The first write (the headers and the head events) is aiohttp's; the
    # rest went to the transport directly (one write per event before).
    assert writes[port] == 1


async def test_http_1_0_client_gets_the_unchunked_stream(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators(itl_s=0.002)
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    port = int(gw.http_url.rsplit(":", 1)[1])
    head, body = await _raw(port, "1.0")
    assert head.startswith(b"HTTP/1.0 200") and b"chunked" not in head
    events = _events(body)
    assert events[-1] == b"data: [DONE]"
    assert len([e for e in events if b'"content":' in e]) == 41


async def test_the_response_head_goes_out_with_the_first_events(
    emulators: EmulatorFactory, gateways: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One send for the head and the first events. This rests on aiohttp's private
    ``_send_headers_immediately`` (web.Response's own setting): the spies below
    and this assertion fail loudly if aiohttp renames it or its write helpers."""
    assert web.StreamResponse._send_headers_immediately is True
    assert web.Response._send_headers_immediately is False
    em = await emulators(itl_s=0.002)
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    port = int(gw.http_url.rsplit(":", 1)[1])
    sent: list[bytes] = []  # what aiohttp handed the gateway-side transport, per call
    write, writelines = StreamWriter._write, StreamWriter._writelines

    def ours(writer: StreamWriter) -> bool:
        transport = writer.transport
        return transport is not None and transport.get_extra_info("sockname")[1] == port

    def spy_write(self: StreamWriter, chunk: Any) -> None:
        if ours(self):
            sent.append(bytes(chunk))
        write(self, chunk)

    def spy_writelines(self: StreamWriter, chunks: Any) -> None:
        chunks = tuple(chunks)
        if ours(self):
            sent.append(b"".join(chunks))
        writelines(self, chunks)

    monkeypatch.setattr(StreamWriter, "_write", spy_write)
    monkeypatch.setattr(StreamWriter, "_writelines", spy_writelines)
    head, body = await _raw(port, "1.1")
    assert head.startswith(b"HTTP/1.1 200") and body.endswith(b"0\r\n\r\n")
    assert sent[0].startswith(b"HTTP/1.1 200") and b"\r\n\r\n" in sent[0]
    assert b"data: {" in sent[0].partition(b"\r\n\r\n")[2]
