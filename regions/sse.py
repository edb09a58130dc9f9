"""Incremental Server-Sent Events framing over arbitrary byte boundaries.

Upstreams deliver SSE in TCP-sized pieces that split events anywhere. The
splitter buffers only the unfinished tail, and that tail is capped: an event
longer than ``max_event_bytes`` (1 MiB by default; a real chunk is a few
hundred bytes) is a broken stream (STREAM_BROKEN), so memory per stream is
bounded by one event whatever the upstream sends. Each byte is searched for a
terminator once, however the event is split. It keeps each event's bytes
intact so they can be forwarded as-is.
"""

from __future__ import annotations

from regions.errors import BackendError, FailureClass

MAX_EVENT_BYTES = 1 << 20


class Delimited:
    """Records separated by ``sep``, fed in pieces; at most ``limit`` bytes per record.

    The unfinished record is kept in a bytearray and only its new bytes are
    searched for the separator, so an upstream that never sends one costs
    linear time and at most ``limit`` bytes before it is refused.
    """

    __slots__ = ("_buf", "_cr", "_limit", "_line_ends", "_room", "_sep", "_what")

    def __init__(self, sep: bytes, limit: int, what: str, *, line_ends: bool = False) -> None:
        if limit <= 0:
            raise ValueError("the record limit must be positive")
        self._sep = sep
        self._limit = limit
        # What the unfinished record may hold: a record at the limit and the start of
        # its separator (else whether it passes would depend on where the reads split).
        self._room = limit + len(sep) - 1
        self._what = what
        self._buf = bytearray()
        self._line_ends = line_ends  # CR and CRLF read as LF (SSE)
        self._cr = False  # a CR ended the last piece: an LF starting the next is its CRLF

    def feed(self, data: bytes) -> list[bytes]:
        """Complete records (without their separator) found so far.

        With ``line_ends``, line ends may be LF, CRLF or CR (the SSE spec allows
        all three). A CR ends its line at once, even at the end of a piece (a
        CR-only stream's event is not held for the next read); an LF that then
        starts the next piece is that CR's CRLF and is dropped.
        Raises BackendError (STREAM_BROKEN) for a record over the limit.
        """
        # One call per piece on the common path (no CR, nothing buffered, records
        # under the limit): this runs for every read of every stream.
        if self._line_ends:
            if self._cr and data:
                self._cr = False
                if data.startswith(b"\n"):
                    data = data[1:]
            if data.find(13) >= 0:  # b"\r": an int is a memchr; `in` tries int() first
                self._cr = data.endswith(b"\r")
                data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        sep = self._sep
        buf = self._buf
        limit = self._limit
        first: bytes | None = None
        if buf:
            # A separator may straddle the old end: search from just before it.
            start = max(len(buf) - len(sep) + 1, 0)
            buf += data
            end = buf.find(sep, start)
            if end < 0:
                if len(buf) > self._room:
                    self._check(len(buf))
                return []
            first = bytes(buf[:end])
            data = bytes(buf[end + len(sep) :])
            buf.clear()
            if len(first) > limit:
                self._check(len(first))
        records = data.split(sep)
        tail = records.pop()
        if tail:
            if len(tail) > self._room:
                self._check(len(tail))
            buf += tail
        if len(data) > limit:  # else no part of it can be over the limit
            for part in records:
                self._check(len(part))
        if first is not None:
            records.insert(0, first)
        return records

    def _check(self, size: int) -> None:
        if size > self._limit:
            self._buf.clear()
            raise BackendError(
                FailureClass.STREAM_BROKEN, f"{self._what} longer than {self._limit} bytes"
            )

    @property
    def pending(self) -> bytes:
        return bytes(self._buf)

    def take_rest(self) -> bytes:
        """The unfinished record, which the buffer then forgets (the input ended)."""
        rest = bytes(self._buf)
        self._buf.clear()
        return rest


class SseSplitter(Delimited):
    """SSE events (without their blank-line terminator), whatever the line ends."""

    __slots__ = ()

    def __init__(self, max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        super().__init__(b"\n\n", max_event_bytes, "an SSE event", line_ends=True)


def event_data(event: bytes) -> bytes | None:
    """The ``data`` field of one event, or None for comments and data-less events."""
    if event.startswith(b"data: ") and event.find(10) < 0:  # no b"\n"
        return event[6:]
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None
