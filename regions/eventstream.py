"""AWS event-stream framing (``application/vnd.amazon.eventstream``), both directions.

SageMaker's ``InvokeEndpointWithResponseStream`` answers with binary frames
(reference/protocols.md §1.3)::

    uint32 total_length | uint32 headers_length | uint32 prelude_crc
    headers | payload | uint32 message_crc          (big-endian, CRC32)

Decoding uses botocore's own low-level :class:`botocore.eventstream.EventStreamBuffer`
so the adapter parses exactly what boto3 parses. We stop at that layer on
purpose: boto3's response parser keeps only ``Code`` and ``Message`` of an
in-stream exception and drops the ``ErrorCode`` detail (docs/design.md §10), which
we want in our failure messages.

Encoding exists for the emulators (botocore has no encoder). It writes string
headers only, which is all SageMaker sends.
"""

from __future__ import annotations

import binascii
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import orjson
from botocore.eventstream import EventStreamBuffer, ParserError

_PRELUDE = struct.Struct(">II")
_CRC = struct.Struct(">I")
_STRING = 7
MAX_FRAME_BYTES = 2 << 20
"""Default cap on one frame: a ``PayloadPart`` carries what the container flushed
(a few hundred bytes); botocore's own limits (128 KiB of headers, 24 MiB of
payload) would let one peer make the gateway buffer 24 MiB per stream."""


def encode_message(headers: Iterable[tuple[str, str]], payload: bytes) -> bytes:
    """One frame with string headers (type 7) and ``payload``, with both CRCs."""
    encoded = bytearray()
    for name, value in headers:
        raw_name, raw_value = name.encode(), value.encode()
        encoded += bytes((len(raw_name),)) + raw_name
        encoded += bytes((_STRING,)) + struct.pack(">H", len(raw_value)) + raw_value
    total = 12 + len(encoded) + len(payload) + 4
    prelude = _PRELUDE.pack(total, len(encoded))
    head = prelude + _CRC.pack(binascii.crc32(prelude)) + bytes(encoded) + payload
    return head + _CRC.pack(binascii.crc32(head))


def payload_part(data: bytes) -> bytes:
    """A ``PayloadPart`` event carrying container bytes."""
    return encode_message(
        (
            (":event-type", "PayloadPart"),
            (":content-type", "application/octet-stream"),
            (":message-type", "event"),
        ),
        data,
    )


def exception_frame(exception_type: str, message: str, error_code: str | None = None) -> bytes:
    """A modeled in-stream exception (``ModelStreamError``, ``InternalStreamFailure``)."""
    body: dict[str, str] = {"Message": message}
    if error_code is not None:
        body["ErrorCode"] = error_code
    return encode_message(
        (
            (":exception-type", exception_type),
            (":content-type", "application/json"),
            (":message-type", "exception"),
        ),
        orjson.dumps(body),
    )


def error_frame(code: str, message: str) -> bytes:
    """An unmodeled error frame: headers only."""
    return encode_message(
        ((":error-code", code), (":error-message", message), (":message-type", "error")), b""
    )


class FrameError(ValueError):
    """The bytes are not a valid event stream (bad CRC, bad lengths, bad headers)."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One decoded message.

    ``kind`` is ``:message-type`` (``event``, ``exception`` or ``error``);
    ``name`` the event type, exception type or error code; for exceptions and
    errors ``message`` and ``error_code`` are filled from the payload/headers.
    """

    kind: str
    name: str
    payload: bytes
    message: str = ""
    error_code: str | None = None

    @property
    def failure(self) -> str:
        """A one-line description of an exception or error frame."""
        detail = f" ({self.error_code})" if self.error_code else ""
        return f"{self.name}{detail}: {self.message}"[:300]


class FrameDecoder:
    """Bytes of any size in, complete frames out.

    Frame boundaries come from each prelude's ``total_length`` (its CRC is
    checked first, so garbage cannot make us wait for gigabytes, and a length
    over ``max_frame_bytes`` is refused before any of it is buffered); a whole
    frame then goes through botocore's ``EventStreamBuffer``, which checks
    both CRCs and parses the headers. Handing botocore one frame at a time
    keeps its buffer tiny: fed a large read holding hundreds of frames, it
    would copy the remainder of the read once per frame.

    Every ``PayloadPart`` of a stream carries byte-identical headers, and
    botocore's pure-Python header parsing is most of its cost per frame
    (~15 µs), so a frame whose header bytes equal the previous event's reuses
    that parse; its message CRC is still checked, here, with ``binascii``.
    """

    __slots__ = ("_buffer", "_last", "_limit", "_pending")

    def __init__(self, max_frame_bytes: int = MAX_FRAME_BYTES) -> None:
        self._buffer = EventStreamBuffer()
        self._pending = bytearray()
        self._last: tuple[bytes, dict[str, object]] = (b"", {})
        self._limit = max_frame_bytes

    def feed(self, data: bytes) -> list[Frame]:
        pending = self._pending
        pending += data
        frames: list[Frame] = []
        while len(pending) >= 12:
            total, headers_length = _PRELUDE.unpack_from(pending)
            if _CRC.unpack_from(pending, 8)[0] != binascii.crc32(pending[:8]):
                raise FrameError("invalid event stream: prelude checksum mismatch")
            if total < 16 + headers_length or total > self._limit:
                self._pending.clear()
                raise FrameError(f"invalid event stream: frame length {total}")
            if len(pending) < total:
                break
            frame = bytes(pending[:total])
            del pending[:total]  # O(1) from the front of a bytearray
            frames.append(self._decode(frame, headers_length))
        return frames

    def _decode(self, frame: bytes, headers_length: int) -> Frame:
        raw_headers = frame[12 : 12 + headers_length]
        last_raw, last_headers = self._last
        if raw_headers == last_raw:
            if _CRC.unpack_from(frame, len(frame) - 4)[0] != binascii.crc32(frame[:-4]):
                raise FrameError("invalid event stream: message checksum mismatch")
            return _frame(last_headers, frame[12 + headers_length : -4])
        self._buffer.add_data(frame)
        try:
            message = self._buffer.next()
        except (ParserError, StopIteration, struct.error, UnicodeDecodeError) as exc:
            self._buffer = EventStreamBuffer()
            raise FrameError(f"invalid event stream: {type(exc).__name__}") from None
        if message.headers.get(":message-type") == "event":
            self._last = (raw_headers, message.headers)
        return _frame(message.headers, message.payload)

    @property
    def pending(self) -> bool:
        """Bytes of an unfinished frame are buffered (a truncated stream if it ends now)."""
        return bool(self._pending)


def _frame(headers: Mapping[str, object], payload: bytes) -> Frame:
    kind = str(headers.get(":message-type", ""))
    if kind == "event":
        return Frame(kind, str(headers.get(":event-type", "")), payload)
    if kind == "exception":
        message, code = "", None
        try:
            body = orjson.loads(payload) if payload else {}
        except orjson.JSONDecodeError:
            body = {}
        if isinstance(body, dict):
            message = str(body.get("Message") or body.get("message") or "")
            code = body.get("ErrorCode")
        return Frame(
            kind,
            str(headers.get(":exception-type", "")),
            payload,
            message,
            None if code is None else str(code),
        )
    if kind == "error":
        return Frame(
            kind,
            str(headers.get(":error-code", "")),
            payload,
            str(headers.get(":error-message", "")),
        )
    raise FrameError(f"unknown event-stream message type {kind!r}")
