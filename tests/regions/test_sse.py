from __future__ import annotations

import itertools
import sys
from collections.abc import Callable
from types import FrameType

from hypothesis import given
from hypothesis import strategies as st

from regions.sse import SseSplitter, event_data

STREAM = (
    b'data: {"a":1}\n\n: keep-alive comment\n\nevent: x\ndata: {"b":\ndata: 2}\n\ndata: [DONE]\n\n'
)


@given(cuts=st.lists(st.integers(0, len(STREAM)), max_size=12), crlf=st.booleans())
def test_events_survive_any_split(cuts: list[int], crlf: bool) -> None:
    stream = STREAM.replace(b"\n", b"\r\n") if crlf else STREAM
    points = sorted({min(c, len(stream)) for c in cuts} | {0, len(stream)})
    splitter = SseSplitter()
    events = []
    for a, b in itertools.pairwise(points):
        events.extend(splitter.feed(stream[a:b]))
    assert [event_data(e) for e in events] == [b'{"a":1}', None, b'{"b":\n2}', b"[DONE]"]
    assert splitter.pending == b""


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
