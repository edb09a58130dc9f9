"""The parsers alone, fed anything: they answer or raise the stream's error, nothing else.

Faster and wider than the end-to-end property test (test_hostile_streams.py):
arbitrary JSON in every member the chunk parsers read, arbitrary bytes into
the SSE splitter, the payload decoder and the event-stream decoder. Each may
only return events or raise BackendError/FrameError, and never holds more
than its cap. 150 examples each (a few seconds in all).
"""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from regions.errors import BackendError
from regions.events import Finish, TokenDelta, Usage
from regions.eventstream import FrameDecoder, FrameError, payload_part
from regions.openai_chunks import parse_chunk
from regions.sagemaker_payloads import PayloadDecoder
from regions.sse import SseSplitter, event_data

EXAMPLES = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)
choice_like = st.fixed_dictionaries(
    {},
    optional={
        "delta": json_values | st.fixed_dictionaries({}, optional={"content": json_values}),
        "text": json_values,
        "finish_reason": json_values,
    },
)
chunk_like = st.fixed_dictionaries(
    {},
    optional={
        "choices": json_values | st.lists(choice_like | json_values, max_size=2),
        "usage": json_values
        | st.fixed_dictionaries(
            {}, optional={"prompt_tokens": json_values, "completion_tokens": json_values}
        ),
        "error": json_values,
        "token": json_values | st.fixed_dictionaries({}, optional={"text": json_values}),
        "details": json_values
        | st.fixed_dictionaries(
            {}, optional={"finish_reason": json_values, "generated_tokens": json_values}
        ),
    },
)


@EXAMPLES
@given(obj=chunk_like | json_values, chat=st.booleans())
def test_the_chunk_parser_checks_every_member_it_reads(obj: Any, chat: bool) -> None:
    try:
        parsed = parse_chunk(obj, chat)
    except BackendError:
        return
    assert isinstance(parsed.text, str)
    assert parsed.reason is None or isinstance(parsed.reason, str)
    if parsed.usage is not None:
        assert all(isinstance(n, int) and n >= 0 for n in parsed.usage)


def _lines(objs: list[Any]) -> bytes:
    out = b""
    for obj in objs:
        data = json.dumps(obj, separators=(",", ":")).encode()  # any int, unlike orjson
        out += (b"data: " + data if len(data) % 2 else data) + b"\n"
    return out


@EXAMPLES
@given(
    objs=st.lists(chunk_like | json_values, max_size=5),
    junk=st.binary(max_size=40),
    cuts=st.lists(st.integers(0, 400), max_size=6),
    chat=st.booleans(),
    passthrough=st.booleans(),
)
def test_the_payload_decoder_only_raises_a_broken_stream(
    objs: list[Any], junk: bytes, cuts: list[int], chat: bool, passthrough: bool
) -> None:
    data = _lines(objs) + junk
    decoder = PayloadDecoder(chat, passthrough, max_line_bytes=256)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    try:
        for a, b in itertools.pairwise(points):
            for event in decoder.feed(data[a:b]):
                assert isinstance(event, TokenDelta | Finish | Usage)
        decoder.close()
    except BackendError:
        pass


@EXAMPLES
@given(data=st.binary(max_size=600), cuts=st.lists(st.integers(0, 600), max_size=8))
def test_the_sse_splitter_takes_any_bytes_within_its_cap(data: bytes, cuts: list[int]) -> None:
    splitter = SseSplitter(max_event_bytes=128)
    points = sorted({min(c, len(data)) for c in cuts} | {0, len(data)})
    try:
        for a, b in itertools.pairwise(points):
            for event in splitter.feed(data[a:b]):
                assert len(event) <= 128
                event_data(event)
            assert len(splitter.pending) <= 128
    except BackendError:
        pass


@EXAMPLES
@given(
    payloads=st.lists(st.binary(max_size=50), max_size=4),
    junk=st.binary(max_size=60),
    position=st.integers(0, 400),
)
def test_the_frame_decoder_takes_any_bytes_within_its_cap(
    payloads: list[bytes], junk: bytes, position: int
) -> None:
    data = b"".join(payload_part(p) for p in payloads)
    position = min(position, len(data))
    data = data[:position] + junk + data[position:]
    decoder = FrameDecoder(max_frame_bytes=256)
    try:
        for i in range(0, len(data), 7):
            decoder.feed(data[i : i + 7])
            assert len(decoder._pending) <= 256 + 7
    except FrameError:
        pass


@pytest.mark.parametrize("cap", [1, 16])
def test_a_cap_below_a_frame_refuses_it(cap: int) -> None:
    with pytest.raises(FrameError):
        FrameDecoder(max_frame_bytes=cap).feed(payload_part(b"x" * 32))
