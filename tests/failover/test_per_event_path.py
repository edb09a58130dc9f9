"""What one streamed text chunk costs on the per-event path (issue 22): structural,
counted calls, not timed. Each chunk of every stream runs the parser's fast path
and the splice's text branch; these pin how few calls they make."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable
from types import CodeType, FrameType

import orjson
import pytest

from failover import splice
from failover.executor import Budgets, Execution
from failover.policy import FailoverPolicy, TimeoutPolicy
from gateway.http import streaming
from regions import openai_chunks
from regions.events import Event, Finish, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind, Region
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.failover.test_executor import Sink

EU = Region("aws:eu-west-1", frozenset({"EU"}))

ENVELOPE = (
    b'{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m",'
    b'"choices":[{"index":0,"delta":{"content":%b},"finish_reason":null}]}'
)


def chunk(text: bytes) -> bytes:
    return b"data: " + ENVELOPE % text + b"\n\n"


def calls_in(codes: set[CodeType], fn: Callable[[], object]) -> list[str]:
    """The C functions called from the frames of ``codes``, and each entry (call or
    resumption) of those frames; Python functions they call are not listed."""
    calls: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if frame.f_code not in codes:
            return
        if event == "c_call":
            calls.append(getattr(arg, "__qualname__", repr(arg)))
        elif event == "call":
            calls.append(frame.f_code.co_qualname)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return calls


def test_a_templated_chunk_is_checked_by_its_envelope_and_decoded() -> None:
    parser = openai_chunks.StreamParser(True, 1, 1 << 20)
    assert [e.text for e in parser.feed(chunk(b'"learnt"'))] == ["learnt"]  # type: ignore[union-attr]
    codes = {openai_chunks.StreamParser.feed.__code__, openai_chunks._templated.__code__}
    seen: list[Event] = []
    calls = calls_in(codes, lambda: seen.extend(parser.feed(chunk(b'" next"'))))
    assert seen == [TokenDelta(" next", chunk(b'" next"'), False)]
    # The envelope's two ends and the text's: no scan for a line break, no length
    # arithmetic over the learnt parts, no helper call for a plain string.
    assert calls == [
        "StreamParser.feed",  # and the splitter's feed, a call from it
        "len",
        "bytes.startswith",
        "bytes.endswith",
        "len",
        "Pattern.search",
        "bytes.decode",
        "list.append",  # after TokenDelta's __init__, a call from the loop
    ]


@pytest.mark.parametrize(
    "text",
    [b'"a \\"quoted\\" word"', b'"caf\\u00e9"', b'"line\\nbreak"', b'"raw \x01 control"'],
)
def test_a_chunk_the_template_cannot_take_still_reads_as_the_full_parse(text: bytes) -> None:
    fast = openai_chunks.StreamParser(True, 1, 1 << 20)
    fast.feed(chunk(b'"learnt"'))
    full = openai_chunks.StreamParser(True, 1, 1 << 20)
    body = chunk(text)
    got = fast.feed(body)
    want = full.feed(body)
    assert (got, repr(fast.failure)) == (want, repr(full.failure))


class Tokens:
    def __init__(self, n: int) -> None:
        self.n = n

    def passthrough(self, kind: Kind) -> bool:
        return False

    async def close(self) -> None:
        pass

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        for i in range(self.n):
            yield TokenDelta(f"t{i}")
        yield Finish("stop")
        yield Usage(3, self.n)


def splice_calls(tokens: int) -> list[str]:
    """The calls made from the splice's frame over a whole request of ``tokens`` texts."""

    async def run() -> list[Event]:
        spec = BackendSpec("a", "m", "v1", EU, ProviderKind.VLLM, "http://x", "s")
        policy = FailoverPolicy(
            TimeoutPolicy(first_token=5.0, idle=5.0), resume=False, hedge=False, rounds=1
        )
        plan = Plan("m", "v1", (Candidate(spec, "test"),))
        request = GenerationRequest(Kind.CHAT, "m", "rid")
        ex = Execution(request, plan, {"a": Tokens(tokens)}, policy, Sink(), Budgets())  # type: ignore[dict-item]
        return [*await ex.start(), *[e async for e in ex.events()]]

    def go() -> None:
        events = asyncio.run(run())
        assert [e.text for e in events if isinstance(e, TokenDelta)] == [
            f"t{i}" for i in range(tokens)
        ]

    return calls_in({splice.stream.__code__}, go)


def test_a_text_event_through_the_splice_costs_three_calls() -> None:
    few, more = splice_calls(3), splice_calls(13)
    extra = list(more)
    for call in few:
        extra.remove(call)
    # Per text event: the generator's resumption, its text's append and one clock
    # read (feeding the watchdog and the idle check); no isinstance chain.
    assert sorted(extra) == sorted(["stream", "list.append", "monotonic"] * 10)


async def _handler_resumptions(port: int, tokens: int) -> int:
    """How often the HTTP front end's handler frame (gateway.http.streaming.stream)
    ran, entered or resumed, over one streamed request of ``tokens`` tokens."""
    body = orjson.dumps(
        {
            "model": MODEL,
            "stream": True,
            "max_tokens": tokens,
            "messages": [{"role": "user", "content": "hello"}],
        }
    )
    code = streaming.stream.__code__
    entries = 0

    def profile(frame: FrameType, event: str, arg: object) -> None:
        nonlocal entries
        if event == "call" and frame.f_code is code:
            entries += 1

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {GLOBAL_KEY}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        + body
    )
    sys.setprofile(profile)  # this thread runs the gateway's loop too
    try:
        answer = await reader.read(-1)  # Connection: close: the end of the stream
    finally:
        sys.setprofile(None)
    writer.close()
    assert answer.count(b'"content":') == tokens + 1  # the role chunk and the tokens
    assert answer.rstrip().endswith(b"data: [DONE]\n\n\r\n0")
    return entries


async def test_an_upstream_read_wakes_the_stream_not_the_handler_above_it(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    # Each chunk's read resumes the task it wakes, every coroutine frame of it: the
    # events run in a task of their own, so the request handler's frames
    # (web_protocol, middlewares, the route, this one) wait for its end instead.
    em = await emulators(itl_s=0.002)
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    port = int(gw.http_url.rsplit(":", 1)[1])
    few = await _handler_resumptions(port, 4)
    many = await _handler_resumptions(port, 24)
    assert many == few
