"""AWS event-stream framing: our encoder against botocore's decoder, and our frame decoder."""

from __future__ import annotations

import binascii
import struct

import pytest
from botocore.eventstream import EventStreamBuffer

from regions.eventstream import (
    FrameDecoder,
    FrameError,
    encode_message,
    error_frame,
    exception_frame,
    payload_part,
)


def test_botocore_decodes_what_we_encode() -> None:
    buf = EventStreamBuffer()
    buf.add_data(payload_part(b'data: {"x":1}\n\n') + exception_frame("ModelStreamError", "m", "E"))
    first, second = list(buf)
    assert first.headers == {
        ":event-type": "PayloadPart",
        ":content-type": "application/octet-stream",
        ":message-type": "event",
    }
    assert first.payload == b'data: {"x":1}\n\n'
    assert second.headers[":exception-type"] == "ModelStreamError"
    assert second.to_response_dict()["status_code"] == 400


def test_layout_and_crcs_follow_the_spec() -> None:
    frame = encode_message([("a", "b")], b"xyz")
    total, headers_len, prelude_crc = struct.unpack(">III", frame[:12])
    assert total == len(frame) == 12 + headers_len + 3 + 4
    assert headers_len == 1 + 1 + 1 + 2 + 1  # name len, name, type, value len, value
    assert prelude_crc == binascii.crc32(frame[:8])
    assert struct.unpack(">I", frame[-4:])[0] == binascii.crc32(frame[:-4])


def test_decoder_survives_every_split_and_reports_frames() -> None:
    data = (
        payload_part(b"one")
        + payload_part(b"")
        + exception_frame("ModelStreamError", "boom", "StreamBroken")
        + exception_frame("InternalStreamFailure", "down")
        + error_frame("InternalServerException", "unmodeled")
    )
    for step in (1, 3, 7, 64, len(data)):
        decoder = FrameDecoder()
        frames = []
        for i in range(0, len(data), step):
            frames += decoder.feed(data[i : i + step])
        assert not decoder.pending
        assert [(f.kind, f.name) for f in frames] == [
            ("event", "PayloadPart"),
            ("event", "PayloadPart"),
            ("exception", "ModelStreamError"),
            ("exception", "InternalStreamFailure"),
            ("error", "InternalServerException"),
        ]
        assert frames[0].payload == b"one"
        assert frames[2].error_code == "StreamBroken" and frames[2].message == "boom"
        assert frames[2].failure == "ModelStreamError (StreamBroken): boom"
        assert frames[3].error_code is None and frames[3].message == "down"
        assert frames[4].message == "unmodeled"


def test_pending_means_a_cut_frame() -> None:
    decoder = FrameDecoder()
    frame = payload_part(b"hello")
    assert decoder.feed(frame[:-1]) == []
    assert decoder.pending
    assert len(decoder.feed(frame[-1:])) == 1
    assert not decoder.pending


@pytest.mark.parametrize("index", [5, 20, -2])
def test_corruption_is_a_frame_error(index: int) -> None:
    frame = bytearray(payload_part(b"hello world"))
    frame[index] ^= 0xFF
    with pytest.raises(FrameError):
        FrameDecoder().feed(bytes(frame))


def test_repeated_headers_reuse_the_parse_but_still_check_the_crc() -> None:
    decoder = FrameDecoder()
    first, second = payload_part(b"first"), bytearray(payload_part(b"second"))
    assert [f.payload for f in decoder.feed(first + bytes(second))] == [b"first", b"second"]
    second[-6] ^= 0x01  # a payload byte of a frame whose headers match the last one
    with pytest.raises(FrameError, match="message checksum"):
        decoder.feed(bytes(second))


def test_garbage_length_fails_fast_instead_of_waiting() -> None:
    prelude = struct.pack(">II", 2**31, 0)
    with pytest.raises(FrameError, match="frame length"):
        FrameDecoder().feed(prelude + struct.pack(">I", binascii.crc32(prelude)))
