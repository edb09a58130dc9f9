"""Incremental Server-Sent Events framing over arbitrary byte boundaries.

Upstreams deliver SSE in TCP-sized pieces that split events anywhere. The
splitter buffers only the unfinished tail, so memory per stream is bounded by
one event. It keeps each event's bytes intact so they can be forwarded as-is.
"""

from __future__ import annotations


class SseSplitter:
    __slots__ = ("_cr", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._cr = False

    def feed(self, data: bytes) -> list[bytes]:
        """Complete events (without their blank-line terminator) found so far.

        Line ends may be LF, CRLF or CR (the SSE spec allows all three); a CR
        at the end of a read is held back in case its LF is in the next one.
        """
        if self._cr:
            data = b"\r" + data
            self._cr = False
        if b"\r" in data:
            if data.endswith(b"\r"):
                data = data[:-1]
                self._cr = True
            data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        buf = self._tail + data if self._tail else data
        parts = buf.split(b"\n\n")
        self._tail = parts.pop()
        return parts

    @property
    def pending(self) -> bytes:
        return self._tail


def event_data(event: bytes) -> bytes | None:
    """The ``data`` field of one event, or None for comments and data-less events."""
    if event.startswith(b"data: ") and b"\n" not in event:
        return event[6:]
    data: list[bytes] = []
    for line in event.split(b"\n"):
        if line.startswith(b"data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(b" ") else value)
    return b"\n".join(data) if data else None
