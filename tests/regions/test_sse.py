from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from types import FrameType

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions.errors import BackendError
from regions.events import Finish, TokenDelta
from regions.openai_chunks import StreamParser
from regions.sse import MAX_EVENT_BYTES, SseSplitter, event_data
from tests.hostile_backend import chunk, sse

LIMIT = 64  # a small event cap, so the cases around it are short

STREAM = (
    b'data: {"a":1}\n\n: keep-alive comment\n\nevent: x\ndata: {"b":\ndata: 2}\n\ndata: [DONE]\n\n'
)


@given(
    cuts=st.lists(st.integers(0, len(STREAM)), max_size=12),
    line_end=st.sampled_from([b"\n", b"\r\n", b"\r"]),
)
def test_events_survive_any_split(cuts: list[int], line_end: bytes) -> None:
    """Any line ends the SSE spec allows (LF, CRLF, CR alone), any read boundaries: each
    event comes out of the read that completes it (a CR at a read's end is a line end
    already; the LF of a CRLF split there is not a second one)."""
    stream = STREAM.replace(b"\n", line_end)
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    splitter = SseSplitter()
    events = []
    for a, b in itertools.pairwise(points):
        events.extend(splitter.feed(stream[a:b]))
    assert [event_data(e) for e in events] == [b'{"a":1}', None, b'{"b":\n2}', b"[DONE]"]
    assert splitter.pending == b""


def test_a_cr_only_stream_that_ends_at_its_finish_chunk_finishes() -> None:
    """No usage chunk, no [DONE]: the finish chunk is the body's last event, its blank
    line the body's last two bytes (CR CR). It was never parsed (its last CR was held for
    an LF): the stream failed as ended before a finish reason and was resumed elsewhere."""
    body = (sse(chunk(" a", role=True)) + sse(chunk(" b", "stop"))).replace(b"\n", b"\r")
    parser = StreamParser(True, 1, MAX_EVENT_BYTES)
    events = parser.feed(body)
    assert [(type(e), getattr(e, "text", None)) for e in events] == [
        (TokenDelta, " a"),
        (TokenDelta, " b"),
        (Finish, None),
    ]
    parser.end()  # finished: no failure


def test_a_cr_only_event_comes_out_of_the_read_that_ends_it() -> None:
    """A CR-only backend's first token is not held until its second arrives (nor its
    [DONE] until the body ends): the read whose last byte is the event's last CR has it."""
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\r\r") == [b"data: a"]
    assert splitter.feed(b"\ndata: b\r\n\r\n") == [b"data: b"]  # one CRLF split at a read
    assert splitter.feed(b"data: c\r") == []
    assert splitter.feed(b"\r") == [b"data: c"]


def python_calls(fn: Callable[[], object]) -> list[str]:
    """The Python functions ``fn`` calls (C functions and builtins not counted)."""
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event == "call":
            calls.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls[1:]  # fn itself


def test_a_read_of_whole_events_is_one_python_call() -> None:
    # Every read of every stream goes through here: no layer or helper per read.
    splitter = SseSplitter()
    piece = b'data: {"a":1}\n\ndata: {"b":2}\n\ndata: {"c"'
    assert python_calls(lambda: splitter.feed(piece)) == ["Delimited.feed"]
    assert python_calls(lambda: splitter.feed(b":3}\n\n")) == ["Delimited.feed"]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("size", range(LIMIT - 2, LIMIT + 3))
def test_the_event_cap_does_not_depend_on_where_reads_split(size: int, line_end: bytes) -> None:
    """An event of at most the cap passes and a longer one is refused, wherever one read
    ends (before, one at the cap was refused when a read ended between its two line
    ends: the unfinished event was held to the cap with its first line end in it)."""
    event = b"data: " + b"x" * (size - 6)
    stream = (event + b"\n\n" + b"data: y\n\n").replace(b"\n", line_end)
    for cut in range(len(stream) + 1):
        splitter = SseSplitter(LIMIT)
        try:
            events = splitter.feed(stream[:cut]) + splitter.feed(stream[cut:])
        except BackendError:
            assert size > LIMIT, cut
        else:
            assert size <= LIMIT, cut
            assert events == [event, b"data: y"], cut
