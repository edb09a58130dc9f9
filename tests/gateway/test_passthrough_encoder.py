"""The pass-through encoder's learnt model rewrite gives the bytes the full rewrite
gives: every ``"model"`` member the logical name, whatever each chunk holds."""

from __future__ import annotations

import pytest

from gateway.http.chunks import ChunkWriter
from gateway.http.streaming import _Encoder
from regions.events import TokenDelta
from regions.request import Kind

SERVED = "org/served-model"
LOGICAL = "logical"


def chunk(text: str, model: bytes = b'"model":"org/served-model"', extra: bytes = b"") -> bytes:
    """A chunk as the upstream wrote it (by default with the served name, compactly)."""
    return (
        b'data: {"id":"c1","object":"chat.completion.chunk","created":1,'
        + model
        + b',"choices":[{"index":0,"delta":{"content":"'
        + text.encode()
        + b'"}'
        + extra
        + b"}]}\n\n"
    )


def encoder(served: str = SERVED) -> _Encoder:
    return _Encoder(ChunkWriter(Kind.CHAT, "r", LOGICAL), True, True, served)


def raws(served: str) -> list[bytes]:
    usual = b'"model":"' + served.encode() + b'"'
    return [
        chunk("a", usual),
        chunk("b", usual),
        chunk("c", usual, extra=b',"model":"inner"'),  # a second member after the envelope
        chunk("d", b'"model" : "org/served-model"'),  # spaced: the regex's case
        chunk("e", b'"model":"other"'),  # another name
        chunk("model", usual),  # the word in the text is no member
        chunk("f", usual),
    ]


@pytest.mark.parametrize("served", [SERVED, LOGICAL])  # LOGICAL: the served name is the logical
def test_learnt_rewrite_is_the_full_rewrite(served: str) -> None:
    learning = encoder(served)
    for raw in raws(served):
        full = encoder(served)._rewrite(raw)  # a fresh encoder: nothing learnt
        assert learning.encode(TokenDelta("x", raw)) == full
        assert b'"model":"logical"' in full
        assert b"org/served-model" not in full and b'"other"' not in full
    assert learning.prefix  # it did learn


def test_a_chunk_with_another_envelope_takes_the_full_rewrite() -> None:
    learning = encoder()
    learning.encode(TokenDelta("x", chunk("a")))
    other = chunk("b").replace(b'"id":"c1"', b'"id":"c2"')
    assert learning.encode(TokenDelta("x", other)) == encoder()._rewrite(other)
