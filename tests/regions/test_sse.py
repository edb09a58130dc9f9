from __future__ import annotations

import itertools

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
