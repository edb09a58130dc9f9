"""Writing an execution's events to the client: SSE stream or one JSON body.

Pass-through: when the serving backend speaks the client's OpenAI format, each
chunk's upstream bytes are written unchanged except for the model name, which
is rewritten to the logical name the client asked for: every ``"model"``
member, however the upstream spaced it and whatever name it wrote, so a
backend can never show a client its served name. (The adapters have already
reduced each event to its ``data:`` line and dropped anything after the
finish reason.)

Backpressure: the transport's write buffer is capped at ``buffer_bytes``;
once a write takes it past that the stream waits for the client to drain, and
while it waits the upstream is not read, so a slow client costs bounded memory
(the upstream's TCP window does the rest).

Writes: after the first, each chunk is framed here and handed to the
transport (:class:`_Wire`): one call and no await unless the client is behind,
where aiohttp's ``StreamResponse.write`` took five calls and two awaits. The
bytes are aiohttp's own chunked framing.

Endings: success writes ``data: [DONE]``; a failure after the first token
writes an error event and no ``[DONE]``; a shutdown cut writes an error event
saying so. A client that disconnects cancels the handler, which closes the
upstream attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass

import orjson
from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http_writer import StreamWriter

from failover.executor import Execution
from gateway.app.lifecycle import Lifecycle
from gateway.http.assemble import Assembler
from gateway.http.chunks import DONE, ChunkWriter, error_event
from gateway.http.errors import error_response
from regions.events import Event, Finish, StreamError, TokenDelta, Usage
from regions.request import Kind

_MODEL_MEMBER = re.compile(rb'"model"[ \t\r\n]*:[ \t\r\n]*"(?:[^"\\]|\\.)*"')
"""A ``"model": "…"`` member with any JSON whitespace and any (escaped) string value.
Inside a JSON string every quote is escaped, so this cannot match string content."""


_MAX_ID = 256  # an upstream id longer than this is not adopted (it would repeat in every chunk)


@dataclass(slots=True)
class Result:
    response: web.StreamResponse
    status: int


class _Encoder:
    """Turns events into the bytes this client gets.

    The model rewrite learns: once a chunk had exactly one ``"model"`` member,
    the served one as the usual upstream writes it, the bytes up to its end (the
    stream's constant envelope: ``id``, ``object``, ``created``, ``model``) and
    their rewritten form are kept, and a later chunk that starts with them and
    has no other ``"model"`` only swaps that prefix: one comparison and one search
    instead of a replace and two counts over the whole chunk."""

    __slots__ = (
        "adopted",
        "compact",
        "cut",
        "include_usage",
        "member",
        "passthrough",
        "prefix",
        "rewritten",
        "scan",
        "writer",
    )

    def __init__(
        self, writer: ChunkWriter, passthrough: bool, include_usage: bool, served_model: str
    ) -> None:
        self.writer = writer
        self.passthrough = passthrough
        self.include_usage = include_usage
        self.adopted = False
        self.member = b'"model":' + orjson.dumps(writer.model)
        # The usual upstream writes the served name compactly: a plain replace
        # covers it; the regex is only for anything else.
        served = b'"model":' + orjson.dumps(served_model)
        self.compact = served if served != self.member else None
        self.prefix = b""  # learnt: the original envelope up to the end of its model member
        self.rewritten = b""
        self.cut = 0  # len(prefix), once learnt (only ever in pass-through)
        self.scan = 0  # from inside the prefix: a member cannot straddle its end unseen

    def encode(self, event: Event) -> bytes:
        # The usual chunk first, with the fewest checks: a pass-through token
        # once the envelope is learnt (learning it adopted the id already).
        if self.cut and type(event) is TokenDelta:
            raw = event.raw
            if (
                raw is not None
                and raw.startswith(self.prefix)
                and raw.find(b'"model"', self.scan) < 0
            ):
                return self.rewritten + raw[self.cut :]
        raw = event.raw if self.passthrough and not isinstance(event, StreamError) else None
        if raw is not None:
            if not self.adopted and raw:
                self._adopt_id(raw)
            if isinstance(event, Usage) and not self.include_usage:
                return b""
            prefix = self.prefix
            if prefix and raw.startswith(prefix) and raw.find(b'"model"', self.scan) < 0:
                return self.rewritten + raw[self.cut :]
            return self._rewrite(raw)
        if isinstance(event, TokenDelta):
            return self.writer.chunk(event.text)
        if isinstance(event, Finish):
            return self.writer.chunk(None if self.writer.kind is Kind.CHAT else "", event.reason)
        if isinstance(event, Usage):
            return self.writer.usage(event) if self.include_usage else b""
        return error_event(event.message, event.code)

    def _rewrite(self, raw: bytes) -> bytes:
        """Every ``"model"`` member is the logical name's, however it was written."""
        # find, not `in`: bytes.__contains__ first tries the needle as an int
        # and formats a TypeError, which costs more than the search.
        first = raw.find(b'"model"')
        if first < 0:
            return raw
        member = self.member
        usual = self.compact or member
        if raw.find(b'"model"', first + 1) < 0 and raw.startswith(usual, first):
            end = first + len(usual)
            self.prefix, self.rewritten = raw[:end], raw[:first] + member
            self.cut, self.scan = end, end - 6
            return self.rewritten + raw[end:]
        if self.compact is not None:
            raw = raw.replace(self.compact, member)
        if raw.count(b'"model"') != raw.count(member):
            raw = _MODEL_MEMBER.sub(lambda _: member, raw)
        return raw

    def _adopt_id(self, raw: bytes) -> None:
        """Chunks the gateway writes itself (after a resumption) reuse the upstream's
        ``id`` and ``created``, so the client sees one stream without any rewriting
        of the pass-through bytes."""
        self.adopted = True
        try:
            first = orjson.loads(raw.removeprefix(b"data: "))
        except orjson.JSONDecodeError:
            return
        if not isinstance(first, dict):
            return
        upstream_id = first.get("id")
        if isinstance(upstream_id, str) and 0 < len(upstream_id) <= _MAX_ID:
            self.writer.id = upstream_id
        if isinstance(first.get("created"), int):
            self.writer.created = first["created"]


class _EventStream(web.StreamResponse):
    # web.Response's setting (a private aiohttp attribute, pinned by
    # tests/gateway/test_stream_writes.py): prepare() keeps the serialised head
    # and the first write sends it with the first events, one send instead of two.
    # Were aiohttp to drop it, the head would go out alone again, as it used to.
    _send_headers_immediately = False


class _Wire:
    """The chunked body of a prepared response, written straight to its transport.

    Only public aiohttp attributes: the payload writer ``prepare`` returns, its
    ``chunked``, ``output_size`` (what ``body_length`` and so the access log
    report), ``protocol.writing_paused`` and ``drain``. ``aiohttp``'s own
    ``write`` waits only once 64 KiB went out since its last wait; this waits
    whenever the transport is over its high-water mark, so a slow client's
    buffer stays within ``buffer_bytes`` plus one write."""

    __slots__ = ("_protocol", "_transport", "_writer")

    def __init__(self, writer: StreamWriter, transport: asyncio.Transport) -> None:
        self._writer = writer
        self._transport = transport
        self._protocol = writer.protocol

    @staticmethod
    def of(response: web.StreamResponse, writer: AbstractStreamWriter | None) -> _Wire | None:
        """The fast path when the body is plainly chunked (not HTTP/1.0, not compressed)."""
        if not isinstance(writer, StreamWriter) or writer.transport is None:
            return None
        if not writer.chunked or response.compression or writer.on_body_write is not None:
            return None
        return _Wire(writer, writer.transport)

    def send(self, data: bytes) -> bool:
        """Write one chunk; whether the client must be waited for (``await drain()``)."""
        transport = self._transport
        if transport.is_closing():
            raise ConnectionResetError("Cannot write to closing transport")
        framed = b"%x\r\n%b\r\n" % (len(data), data)
        transport.write(framed)
        self._writer.output_size += len(framed)
        return self._protocol.writing_paused

    async def drain(self) -> None:
        await self._writer.drain()


async def stream(
    request: web.Request,
    execution: Execution,
    head: list[Event],
    writer: ChunkWriter,
    headers: dict[str, str],
    *,
    passthrough: bool,
    served_model: str,
    lifecycle: Lifecycle,
    buffer_bytes: int,
) -> Result:
    encoder = _Encoder(writer, passthrough, execution.request.include_usage, served_model)
    response = _EventStream(
        status=200,
        headers={
            **headers,
            "Content-Type": "text/event-stream",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        },
    )
    payload = await response.prepare(request)
    transport = request.transport
    if transport is not None:
        transport.set_write_buffer_limits(high=buffer_bytes)
    status = 200
    try:
        # The response head and everything up to the first token: one write (one syscall).
        pending: list[bytes] = []
        if not passthrough and writer.kind is Kind.CHAT:
            pending.append(writer.chunk("", role=True))
        pending.extend(encoder.encode(event) for event in head)
        await response.write(b"".join(pending))  # aiohttp's: it sends what it buffered
        pending.clear()
        # The events in a task of their own: each upstream read wakes it alone, not
        # the handler's chain of coroutines (web_protocol, middlewares, the route)
        # above this one. A cancellation of the handler reaches it through the await.
        status = await asyncio.get_running_loop().create_task(
            _pump(execution, encoder, response, _Wire.of(response, payload), pending)
        )
        if status == 200:
            pending.append(DONE)
        # The last bytes and the chunked terminator in one write.
        await response.write_eof(b"".join(pending))
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not lifecycle.cutting or task is None:
            raise
        task.uncancel()
        status = 503
        with contextlib.suppress(ConnectionResetError):
            await response.write(error_event("the gateway is shutting down", "shutting_down", 503))
            await response.write_eof()
    except ConnectionResetError:
        status = 499
    return Result(response, status)


async def _pump(
    execution: Execution,
    encoder: _Encoder,
    response: web.StreamResponse,
    wire: _Wire | None,
    pending: list[bytes],
) -> int:
    """Write the events after the head; the status. ``pending`` keeps what is left
    to write with the end."""
    status = 200
    async with contextlib.aclosing(execution.events()) as events:
        async for event in events:
            data = encoder.encode(event)
            if type(event) is TokenDelta and event.more:
                pending.append(data)  # more from the same upstream read: one write
                continue
            if pending:
                pending.append(data)
                data = b"".join(pending)
                pending.clear()
            if not data:
                pass
            elif wire is None:
                await response.write(data)
            elif wire.send(data):
                await wire.drain()
            if isinstance(event, StreamError):
                status = 502
    return status


async def collect(
    execution: Execution, head: list[Event], writer: ChunkWriter, headers: dict[str, str]
) -> Result:
    """A non-streaming answer, assembled from the upstream stream.

    Streaming from the upstream even here keeps one code path and lets
    timeouts and first-token failover work the same for both kinds of client;
    :mod:`gateway.http.assemble` keeps every choice, tool call and logprob.
    """
    assembler = Assembler(writer.kind)
    failure: StreamError | None = None

    def take(event: Event) -> None:
        nonlocal failure
        if isinstance(event, StreamError):
            failure = event
        else:
            assembler.take(event)

    for event in head:
        take(event)
    async with contextlib.aclosing(execution.events()) as events:
        async for event in events:
            take(event)
    if failure is not None:
        return Result(error_response(502, failure.message, failure.code, headers=headers), 502)
    body = assembler.body(writer, execution.usage)
    return Result(web.Response(body=body, content_type="application/json", headers=headers), 200)
