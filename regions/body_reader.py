"""An upstream body as the adapters read it: whole reads, nothing kept per HTTP chunk.

aiohttp's ``StreamReader`` serves every way of reading a body (``read(n)``,
``readline``, ``readchunk``), and pays for it on every HTTP chunk: the parser
calls back into Python at each chunk's start and end to record its boundary
for ``readchunk``, ``readany`` takes the buffer a chunk at a time through three
more calls, and each wait enters and leaves a timer context. A streaming
backend writes each SSE event as its own HTTP chunk, so that was about a dozen
Python calls for each event: a tenth of the gateway's instructions per streamed
request (``python -m bench.instructions``: 5.42 -> 4.86 M with this reader).

The adapters read upstream bodies only whole (``readany``, ``iter_any``,
``read`` of an error body), never by HTTP chunk, so :class:`BodyReader`
records no boundaries and takes everything buffered in one join. It is
aiohttp's reader with those three paths replaced, on the same state, so
every other method (``read(n)``, ``feed_eof``, ``set_exception``, the
protocol's flow control) works on it unchanged. The upstream protocol
(``regions.registry``) gives each response's reader this class when the
response arrives, before anything reads it (unless aiohttp's reader has
paused the connection by then: see ``_UpstreamHandler``).

It relies on aiohttp's private ``StreamReader`` attributes; the test
``tests/regions/test_body_reader.py`` checks it against aiohttp's own reader
for any feeds and reads, so an aiohttp that changes them fails there.
"""

from __future__ import annotations

from aiohttp.helpers import TimerNoop
from aiohttp.streams import StreamReader


class BodyReader(StreamReader):
    """aiohttp's ``StreamReader`` for bodies read whole: no HTTP chunk bookkeeping."""

    __slots__ = ()

    @classmethod
    def adopt(cls, reader: StreamReader) -> None:
        """Make an aiohttp reader one of these, if it is a plain one without a timer
        (the sessions' total timeout is off: the failover watchdog times reads)."""
        if type(reader) is StreamReader and type(reader._timer) is TimerNoop:
            reader.__class__ = cls
            reader._http_chunk_splits = None  # what the parser recorded so far: unused

    def begin_http_chunk_receiving(self) -> None:
        """Chunk boundaries only serve ``readchunk``, which nothing calls."""

    def end_http_chunk_receiving(self) -> None:
        """As :meth:`begin_http_chunk_receiving`; ``feed_data`` wakes the reader."""

    def feed_data(self, data: bytes, size: int = 0) -> bool:
        if not data:
            return False
        n = len(data)
        self._size += n
        self._buffer.append(data)
        self.total_bytes += n
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
        # As aiohttp's: paused past the byte mark, or past its count of pieces (a peer's
        # one-byte chunks would otherwise hold ~40 bytes of objects for each byte).
        if self._size > self._high_water or len(self._buffer) > self._high_water_chunks:
            self._protocol.pause_reading()
        return False

    async def readany(self) -> bytes:
        """Everything buffered, once there is something (b"" at the end)."""
        if self._exception is not None:
            raise self._exception
        while not self._buffer and not self._eof:
            if not self._protocol.connected:
                raise RuntimeError("Connection closed.")
            if self._waiter is not None:
                raise RuntimeError("readany() called while another read is waiting")
            waiter = self._waiter = self._loop.create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        buffer = self._buffer
        if not buffer:
            return b""
        if self._buffer_offset:
            buffer[0] = buffer[0][self._buffer_offset :]
            self._buffer_offset = 0
        if len(buffer) == 1:
            data = buffer.popleft()
        else:
            data = b"".join(buffer)
            buffer.clear()
        n = len(data)
        self._size -= n
        self._cursor += n
        if self._size < self._low_water and self._protocol._reading_paused:
            self._protocol.resume_reading()  # unpaused, it would have nothing to do
        return data
