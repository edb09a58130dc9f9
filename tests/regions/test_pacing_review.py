"""Review of regions.pacing (issue 22 item 3): every paced wait ends, and only what should wait does.

The adapter tests put a pacer whose beat never comes (an hour's period, forced
lagging) in place of the process's: a read that is paced then waits until the
test ends, so "this read is not paced" is "its event arrives before a deadline".
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import cast

import aiohttp
import pytest
from aiohttp import web

from gateway.app.server import Gateway
from regions import openai_compat
from regions.events import Event, Finish, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind, Region
from regions.openai_chunks import StreamParser
from regions.pacing import ENTER_LAG_S, PACER, PERIOD_S, Pacer
from regions.registry import SessionPool, build_provider
from regions.request import GenerationRequest, Kind, Message
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, gateway_config, wait_for
from tests.hostile_backend import DONE, chunk, sse, usage_chunk

DEADLINE_S = 5.0
EU = Region("onprem:fra1", frozenset({"EU"}))


class _Upstream:
    """A vLLM route that writes what the test puts in its queue, one write each, as it comes;
    None ends the body."""

    def __init__(self) -> None:
        self.writes: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.requests: list[web.Request] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        await request.read()
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionResetError):  # the client went away
            while (data := await self.writes.get()) is not None:
                await response.write(data)
            await response.write_eof()
        return response


@pytest.fixture
async def upstream() -> AsyncIterator[_Upstream]:
    server = _Upstream()
    await server.start()
    yield server
    server.writes.put_nowait(None)
    await server.stop()


@pytest.fixture
async def pool() -> AsyncIterator[SessionPool]:
    pool = SessionPool(connect_timeout=2.0)
    yield pool
    await pool.close()


@pytest.fixture
async def never(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Pacer]:
    """The adapter's pacer, lagging, with no beat before the test ends."""
    pacer = Pacer(period_s=3600.0)
    assert pacer.watch(asyncio.get_running_loop())
    pacer.lagging = True
    monkeypatch.setattr(openai_compat, "PACER", pacer)
    yield pacer
    pacer.unwatch()


def _stream(pool: SessionPool, url: str) -> AsyncGenerator[Event]:
    provider = build_provider(BackendSpec("b", "m", "v1", EU, ProviderKind.VLLM, url, "s"), pool)
    request = GenerationRequest(
        Kind.CHAT,
        "m",
        "req-1",
        messages=(Message("user", "hi"),),
        stream=True,
        body={"model": "m", "messages": [{"role": "user", "content": "hi"}]},
    )
    # the adapter's stream is an async generator; the Provider protocol says iterator
    return cast(AsyncGenerator[Event], provider.stream(request))


async def _next(events: AsyncIterator[Event]) -> Event:
    return await asyncio.wait_for(anext(events), DEADLINE_S)


# --- the pacer itself -------------------------------------------------------------------


def test_a_watch_left_on_a_closed_loop_moves_to_the_next_loop() -> None:
    """A start that failed after its watch, or a test cut short, closes its loop without
    unwatch: before, every later watch was refused (the process never paced again) and a
    stale ``lagging`` stayed as it was."""
    pacer = Pacer(period_s=3600.0)

    async def left_watched() -> None:
        assert pacer.watch(asyncio.get_running_loop())
        pacer.beat()  # a read waiting when the loop went away
        pacer.lagging = True

    async def next_loop() -> tuple[bool, bool, bool]:
        watched = pacer.watch(asyncio.get_running_loop())
        waits = not pacer.beat().done()
        lagging = pacer.lagging
        pacer.unwatch()
        return watched, waits, lagging

    asyncio.run(left_watched())
    assert asyncio.run(next_loop()) == (True, True, False)
    assert not pacer.lagging


async def test_an_unwatch_from_another_loop_leaves_the_watch_alone() -> None:
    pacer = Pacer(period_s=3600.0)
    assert pacer.watch(asyncio.get_running_loop())
    try:
        await asyncio.to_thread(asyncio.run, _unwatch(pacer))
        assert not pacer.beat().done()  # still watched here
    finally:
        pacer.unwatch()
    assert pacer.beat().done()


async def _unwatch(pacer: Pacer) -> None:
    pacer.unwatch()


async def test_ten_thousand_waits_end_at_one_beat_and_none_is_kept() -> None:
    """The waiting list holds one future per paced read until the next beat: 10,000
    streams, 10,000 futures, none left after the beat, the cancelled ones included."""
    pacer = Pacer(period_s=PERIOD_S)
    pacer.watch(asyncio.get_running_loop())
    try:
        beats = [pacer.beat() for _ in range(10_000)]
        for gone in beats[::3]:
            gone.cancel()  # those clients went away
        await asyncio.wait_for(asyncio.gather(*beats[1::3]), DEADLINE_S)
        assert all(beat.done() for beat in beats)
        assert pacer._waiting == []
    finally:
        pacer.unwatch()


def test_one_stall_paces_for_a_few_beats_and_a_short_hiccup_not_at_all() -> None:
    """A loop that lags only in bursts: a beat 8 ms late (one 13 ms turn) is not lag; one
    stalled 100 ms (a collection, a big config parse) paces until the figure decays, about
    15 on-time beats, not longer."""
    pacer = Pacer()
    pacer.observe(4 * ENTER_LAG_S - 0.0001)
    assert not pacer.lagging
    pacer.observe(0.0)
    pacer.observe(0.1)
    assert pacer.lagging
    beats = 0
    while pacer.lagging:
        pacer.observe(0.0)
        beats += 1
    assert beats <= 15


# --- the adapter's reads ----------------------------------------------------------------


async def test_a_first_event_split_over_reads_is_not_paced(
    pool: SessionPool, upstream: _Upstream, never: Pacer, monkeypatch: pytest.MonkeyPatch
) -> None:
    fed: list[bytes] = []

    class Recording(StreamParser):
        def feed(self, piece: bytes) -> list[Event]:
            fed.append(piece)
            return super().feed(piece)

    monkeypatch.setattr(openai_compat, "StreamParser", Recording)
    events = _stream(pool, upstream.url)
    first = sse(chunk(" a", role=True))
    upstream.writes.put_nowait(first[:10])
    reading = asyncio.ensure_future(_next(events))
    await wait_for(lambda: bool(fed))  # the first read, no whole event in it
    upstream.writes.put_nowait(first[10:])
    event = await reading
    assert isinstance(event, TokenDelta) and event.text == " a"
    assert fed == [first[:10], first[10:]]
    await events.aclose()


async def test_the_first_token_after_a_role_only_chunk_is_not_paced(
    pool: SessionPool, upstream: _Upstream, never: Pacer
) -> None:
    """vLLM and SGLang write the role chunk (``content: ""``) and the first token as two
    writes; when they come in two reads, the token is the first event the client waits for."""
    events = _stream(pool, upstream.url)
    upstream.writes.put_nowait(sse(chunk("", role=True)))
    role = await _next(events)
    assert isinstance(role, TokenDelta) and role.text == ""
    upstream.writes.put_nowait(sse(chunk(" a")))
    token = await _next(events)
    assert isinstance(token, TokenDelta) and token.text == " a"
    await events.aclose()


async def test_the_reads_after_the_finish_are_never_paced(
    pool: SessionPool, upstream: _Upstream, never: Pacer
) -> None:
    """The tail (usage, [DONE]) is read under its own deadline (_TAIL_S), never after a beat."""
    events = _stream(pool, upstream.url)
    upstream.writes.put_nowait(sse(chunk(" a", role=True)))
    assert isinstance(await _next(events), TokenDelta)
    never.lagging = False
    upstream.writes.put_nowait(sse(chunk(" b", "stop")))
    assert isinstance(await _next(events), TokenDelta)
    assert isinstance(await _next(events), Finish)
    never.lagging = True  # from here a paced read would wait for ever
    upstream.writes.put_nowait(sse(usage_chunk(3, 2)))
    assert isinstance(await _next(events), Usage)
    upstream.writes.put_nowait(DONE)
    upstream.writes.put_nowait(None)
    with pytest.raises(StopAsyncIteration):
        await _next(events)


async def test_a_client_gone_during_a_paced_wait_ends_its_read_and_its_connection(
    pool: SessionPool, upstream: _Upstream, never: Pacer
) -> None:
    events = _stream(pool, upstream.url)
    upstream.writes.put_nowait(sse(chunk(" a", role=True)))
    assert isinstance(await _next(events), TokenDelta)
    reading = asyncio.ensure_future(anext(events))
    await wait_for(lambda: bool(never._waiting))  # the next read waits for the beat
    (beat,) = never._waiting
    reading.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reading
    assert beat.cancelled()
    (request,) = upstream.requests
    await wait_for(lambda: request.transport is None or request.transport.is_closing())
    never.unwatch()
    assert never._waiting == []


# --- the gateway --------------------------------------------------------------------------


async def test_a_stream_waiting_for_a_beat_at_shutdown_finishes_within_the_drain(
    emulators: EmulatorFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stop undoes the watch before draining: the waiting read goes on at once and the
    stream ends whole (none cut), though the beat it waited for never comes."""
    emulator = await emulators(itl_s=0.01, default_max_tokens=8)
    monkeypatch.setattr(PACER, "_period", 3600.0)  # the gateway's watch: no beat in the test
    gateway = Gateway(gateway_config([("b1", "aws:us-east-1", "v1", emulator.url)]))
    await gateway.start()
    stopping: asyncio.Task[int] | None = None
    try:
        PACER.lagging = True
        async with (
            aiohttp.ClientSession() as client,
            client.post(
                gateway.http_url + "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "x"}],
                    "stream": True,
                },
                headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
            ) as response,
        ):
            assert response.status == 200
            first = await asyncio.wait_for(response.content.readline(), DEADLINE_S)
            assert first.startswith(b"data: ")
            await wait_for(lambda: bool(PACER._waiting))  # the next read waits for a beat
            stopping = asyncio.ensure_future(gateway.stop(grace=DEADLINE_S))
            rest = await asyncio.wait_for(response.read(), DEADLINE_S)
        assert rest.rstrip().endswith(b"data: [DONE]")
        assert await stopping == 0
    finally:
        if stopping is None:
            await gateway.stop(grace=0.5)
    assert not PACER.lagging and PACER.beat().done()


async def test_a_stream_slower_than_a_beat_is_not_paced_read_after_read(
    pool: SessionPool, upstream: _Upstream, never: Pacer
) -> None:
    """A paced read that carried one event merged nothing: the next reads go as bytes
    arrive (every read after the first token waited for a beat before)."""
    loop = asyncio.get_running_loop()
    events = _stream(pool, upstream.url)
    upstream.writes.put_nowait(sse(chunk(" a", role=True)))
    assert isinstance(await _next(events), TokenDelta)
    second = asyncio.ensure_future(anext(events))  # paced: waits for a beat
    upstream.writes.put_nowait(sse(chunk(" b")))
    await wait_for(lambda: bool(never._waiting), DEADLINE_S)
    never.unwatch()  # the beat: lets the waiting read go
    assert never.watch(loop)
    never.lagging = True
    assert (await asyncio.wait_for(second, DEADLINE_S)).text == " b"  # type: ignore[union-attr]
    for text in (" c", " d", " e"):  # no beat comes: each read goes unpaced
        upstream.writes.put_nowait(sse(chunk(text)))
        event = await _next(events)
        assert isinstance(event, TokenDelta) and event.text == text
    await events.aclose()


async def test_a_body_read_is_paced_only_once_its_decoder_has_started(
    upstream: _Upstream, never: Pacer
) -> None:
    """SageMaker's and Vertex's reader (``body_pieces``) sees bytes, not events: it paces
    only once the decoder has the answer's first event. Before, every read after the first
    was paced, so a first event split over two reads waited a beat (now 20 ms)."""

    class Progress:
        started = False
        finished = False
        decoded = 0

    progress = Progress()
    async with (
        aiohttp.ClientSession() as session,
        session.post(upstream.url + "/v1/chat/completions", data=b"{}") as resp,
    ):
        pieces = openai_compat.body_pieces(resp, progress)
        for half in (b"the first event's", b" rest"):  # two reads, no beat between
            upstream.writes.put_nowait(half)
            assert await asyncio.wait_for(anext(pieces), DEADLINE_S) == half
        progress.started = True
        reading = asyncio.ensure_future(anext(pieces))
        await wait_for(lambda: bool(never._waiting), DEADLINE_S)  # now paced
        upstream.writes.put_nowait(b"next")
        never._release()  # the beat
        assert await asyncio.wait_for(reading, DEADLINE_S) == b"next"
        await cast(AsyncGenerator[bytes], pieces).aclose()


async def test_a_body_stream_slower_than_a_beat_is_not_paced_read_after_read(
    upstream: _Upstream, never: Pacer
) -> None:
    """SageMaker's and Vertex's reader has the OpenAI-compatible one's slow-stream rule: a
    paced read the decoder found fewer than two events in lets the next reads go as bytes
    arrive (before, a SageMaker stream slower than a beat paid one on every chunk)."""

    class Progress:
        started = True
        finished = False
        decoded = 1

    progress = Progress()
    loop = asyncio.get_running_loop()
    async with (
        aiohttp.ClientSession() as session,
        session.post(upstream.url + "/v1/chat/completions", data=b"{}") as resp,
    ):
        pieces = openai_compat.body_pieces(resp, progress)
        reading = asyncio.ensure_future(anext(pieces))  # paced: waits for a beat
        await wait_for(lambda: bool(never._waiting), DEADLINE_S)
        upstream.writes.put_nowait(b"one event")
        never.unwatch()  # the beat
        assert never.watch(loop)
        never.lagging = True
        assert await asyncio.wait_for(reading, DEADLINE_S) == b"one event"
        progress.decoded += 1  # the caller decoded one event from it
        for data in (b"c", b"d", b"e"):  # no beat comes: each read goes unpaced
            upstream.writes.put_nowait(data)
            assert await asyncio.wait_for(anext(pieces), DEADLINE_S) == data
            progress.decoded += 1
        await cast(AsyncGenerator[bytes], pieces).aclose()
