"""The adapter's fast path for plain content chunks yields exactly what the full
parse yields, and refuses exactly what it refuses.

Each stream is parsed twice: as the adapter does (the first plain chunk parsed
in full, later ones matched against its envelope) and with the template
switched off (every chunk through ``orjson`` and ``parse_chunk``). Events and
failures must be the same, whatever the later chunks hold.
"""

from __future__ import annotations

import orjson
import pytest

from regions import openai_chunks
from regions.errors import BackendError
from regions.events import Event

ENVELOPE = b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
ROLE = (
    ENVELOPE
    + b'"choices":[{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}'
)


def content(token: bytes) -> bytes:
    return (
        ENVELOPE
        + b'"choices":[{"index":0,"delta":{"content":'
        + token
        + b'},"logprobs":null,"finish_reason":null}],"usage":null}'
    )


FINISH = (
    ENVELOPE
    + b'"choices":[{"index":0,"delta":{"content":""},"logprobs":null,"finish_reason":"stop"}]}'
)
USAGE = ENVELOPE + b'"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}'


def sse(*datas: bytes) -> bytes:
    return b"".join(b"data: " + d + b"\n\n" for d in datas)


def run(body: bytes, *, reads: int = 1, chat: bool = True) -> tuple[list[Event], str | None, bool]:
    parser = openai_chunks.StreamParser(chat, 1, 1 << 20)
    size = max(1, len(body) // reads)
    events: list[Event] = []
    failure = None
    for at in range(0, len(body), size):
        try:
            events.extend(parser.feed(body[at : at + size]))
        except BackendError as exc:
            failure = str(exc)
            break
        if parser.failure is not None:
            failure = str(parser.failure)
            break
        if parser.done:
            break
    return events, failure, parser._head is not None


def both(
    monkeypatch: pytest.MonkeyPatch, body: bytes, reads: int = 1
) -> tuple[list[Event], str | None, bool]:
    fast = run(body, reads=reads)
    with monkeypatch.context() as m:
        m.setattr(openai_chunks, "_template", lambda *_: None)
        full = run(body, reads=reads)
    assert fast[:2] == full[:2]
    return fast


TOKENS = [
    b'"plain"',
    b'" with space"',
    b'"\\n"',  # an escaped newline: decoded by orjson, still the fast path's shape
    b'"quote \\" inside"',
    b'"\\u00e9\\ud83d\\ude00"',
    "ünïcödé 😀".encode(),
    b'"a\\\\"',  # an escaped backslash at the end
]


@pytest.mark.parametrize("reads", [1, 3, 7])
def test_plain_tokens_are_the_full_parse(monkeypatch: pytest.MonkeyPatch, reads: int) -> None:
    tokens = [t if t.startswith(b'"') else orjson.dumps(t.decode()) for t in TOKENS]
    body = sse(ROLE, *(content(t) for t in tokens), FINISH, USAGE) + b"data: [DONE]\n\n"
    events, failure, learnt = both(monkeypatch, body, reads)
    assert failure is None and learnt
    texts = [e.text for e in events if hasattr(e, "text")]
    assert texts[1:8] == [orjson.loads(t) for t in tokens]


@pytest.mark.parametrize(
    "bad",
    [
        b'"raw \x01 control"',  # a control character JSON forbids
        b'"lone \\ud800"',  # a lone surrogate
        b'"bad \\q escape"',
        b'"two" , "strings"',
        b'"a","content":"b"',  # a second member after the string
        b'"unterminated',
        b"42",
        b'"\xff\xfe"',  # not UTF-8
        b'""',  # the same envelope, an empty string: full parse, no token
    ],
)
def test_a_later_chunk_off_the_template_is_judged_by_the_full_parse(
    monkeypatch: pytest.MonkeyPatch, bad: bytes
) -> None:
    body = sse(content(b'"first"'), content(b'"second"'), content(bad), FINISH)
    events, _, learnt = both(monkeypatch, body)
    assert learnt
    assert [e.text for e in events[:2]] == ["first", "second"]  # type: ignore[union-attr]


def test_a_shadowed_content_member_is_not_a_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """Duplicate keys: the parsed text is the last member's; the template is proved by
    re-parsing, so it can never cut at the shadowed one."""
    shadowed = (
        ENVELOPE
        + b'"choices":[{"index":0,"delta":{"content":"x","content":"real"},'
        + b'"logprobs":null,"finish_reason":null}]}'
    )
    events, failure, _ = both(monkeypatch, sse(shadowed, shadowed, FINISH))
    assert failure is None
    assert [e.text for e in events[:2]] == ["real", "real"]  # type: ignore[union-attr]


def test_events_before_a_failure_in_the_same_read_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = sse(content(b'"a"'), content(b'"b"'), b"{not json")
    events, failure, _ = both(monkeypatch, body)
    assert [e.text for e in events] == ["a", "b"]  # type: ignore[union-attr]
    assert failure is not None and "not JSON" in failure


def test_after_the_finish_templated_text_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    body = sse(content(b'"a"'), FINISH, content(b'"late"'), USAGE) + b"data: [DONE]\n\n"
    events, failure, _ = both(monkeypatch, body)
    assert failure is None
    assert "late" not in [getattr(e, "text", None) for e in events]


def test_completions_use_the_text_member(monkeypatch: pytest.MonkeyPatch) -> None:
    def chunk(token: bytes) -> bytes:
        return (
            b'{"id":"cmpl-1","object":"text_completion","created":1,"model":"m",'
            b'"choices":[{"index":0,"text":' + token + b',"logprobs":null,'
            b'"finish_reason":null,"stop_reason":null}],"usage":null}'
        )

    body = sse(chunk(b'"a"'), chunk(b'"b\\tc"'), chunk(b'"d"'))
    fast = run(body, chat=False)
    with monkeypatch.context() as m:
        m.setattr(openai_chunks, "_template", lambda *_: None)
        full = run(body, chat=False)
    assert fast[:2] == full[:2] and fast[2]
    assert [e.text for e in fast[0]] == ["a", "b\tc", "d"]  # type: ignore[union-attr]


def test_the_template_serves_the_rest_of_the_read_it_was_learnt_in() -> None:
    """A gateway behind on its reads gets a stream in a few large reads: the chunks
    after the first plain one in that same read already take the fast path."""
    parser = openai_chunks.StreamParser(True, 1, 1 << 20)
    parsed: list[bytes] = []
    full = openai_chunks.parse_chunk

    def counting(obj: object, chat: bool, allowed: int = 1) -> openai_chunks.Chunk:
        parsed.append(b"")
        return full(obj, chat, allowed)

    body = sse(ROLE, *(content(b'"t%d"' % i) for i in range(10)), FINISH)
    with pytest.MonkeyPatch.context() as m:
        m.setattr(openai_chunks, "parse_chunk", counting)
        events = parser.feed(body)
    assert [getattr(e, "text", None) for e in events][1:11] == [f"t{i}" for i in range(10)]
    # the role chunk, the first content chunk (and its template's proof), the finish
    assert len(parsed) == 4
