"""What the OpenAI-compatible adapter sends upstream, now that the session gives the
fixed headers once (issue 22 item 2): the same meaning on the wire, no header added
per request by aiohttp, and every failure still classified; and the pool's
connections skip aiohttp's re-parse after each read, with flow control intact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from aiohttp.client_proto import ResponseHandler

from regions.body_reader import BodyReader
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta
from regions.inventory import BackendSpec, ProviderKind, Region
from regions.provider import Provider
from regions.registry import SessionPool, build_provider
from regions.request import GenerationRequest, Kind, Message
from regions.trace_context import TRACE_HEADERS
from tests.conftest import wait_for
from tests.hostile_backend import RESET, HostileBackend, Script, answer

EU = Region("onprem:fra1", frozenset({"EU"}))
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def _request(request_id: str = "req-1", *, body: bool = True) -> GenerationRequest:
    return GenerationRequest(
        Kind.CHAT,
        "m",
        request_id,
        messages=(Message("user", "hi"),),
        stream=True,
        body={"model": "m", "messages": [{"role": "user", "content": "hi"}]} if body else None,
    )


async def _events(provider: Provider, request: GenerationRequest) -> list[Event]:
    return [event async for event in provider.stream(request)]


@pytest.fixture
async def pool() -> AsyncIterator[SessionPool]:
    pool = SessionPool(connect_timeout=2.0)
    yield pool
    await pool.close()


def _provider(pool: SessionPool, url: str) -> Provider:
    return build_provider(BackendSpec("b", "m", "v1", EU, ProviderKind.VLLM, url, "s"), pool)


class _Recorder:
    """A vLLM route answering a correct stream, keeping each request's raw header lines."""

    def __init__(self) -> None:
        self.raw: list[list[tuple[str, str]]] = []
        self.bodies: list[bytes] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        self.raw.append([(k.decode(), v.decode()) for k, v in request.raw_headers])
        self.bodies.append(await request.read())
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for event in answer([" a", " b"], "length"):
            await response.write(event)
        await response.write_eof()
        return response


@pytest.fixture
async def recorder() -> AsyncIterator[_Recorder]:
    recorder = _Recorder()
    await recorder.start()
    yield recorder
    await recorder.stop()


@pytest.mark.parametrize("body", [True, False], ids=["client-body", "built-body"])
async def test_each_header_is_sent_once_and_chosen_by_the_gateway(
    pool: SessionPool, recorder: _Recorder, body: bool
) -> None:
    """Host, the request id, the trace context, a fixed User-Agent, ``Accept: */*``,
    ``Accept-Encoding: identity`` and the JSON body's type and length: each once,
    nothing of aiohttp's own (before, no User-Agent went and the session kept a
    skip list that aiohttp merged into every request)."""
    provider = _provider(pool, recorder.url)
    TRACE_HEADERS.set({"traceparent": TRACEPARENT})
    events = await _events(provider, _request("req-42", body=body))
    assert [e.text for e in events if isinstance(e, TokenDelta)] == ["", " a", " b"]
    assert any(isinstance(e, Finish) for e in events)
    (raw,) = recorder.raw
    names = [name.lower() for name, _ in raw]
    assert sorted(names) == sorted(
        [
            "host",
            "x-request-id",
            "traceparent",
            "user-agent",
            "accept",
            "accept-encoding",
            "content-type",
            "content-length",
        ]
    )
    sent = {name.lower(): value for name, value in raw}
    assert sent["x-request-id"] == "req-42"
    assert sent["traceparent"] == TRACEPARENT
    assert sent["user-agent"] == "meridian"
    assert sent["accept"] == "*/*"
    assert sent["accept-encoding"] == "identity"
    assert sent["content-type"] == "application/json"
    assert sent["content-length"] == str(len(recorder.bodies[0]))


async def test_without_trace_context_no_trace_header_goes(
    pool: SessionPool, recorder: _Recorder
) -> None:
    await _events(_provider(pool, recorder.url), _request())
    assert "traceparent" not in {name.lower() for name, _ in recorder.raw[0]}


async def test_the_session_gives_aiohttp_nothing_to_add_or_skip(pool: SessionPool) -> None:
    """Every automatic header is a session default, so aiohttp's per-request skip
    list is empty (its fast path), and bodies are never decompressed."""
    session = pool.for_url("http://127.0.0.1:1")
    assert not session.skip_auto_headers
    assert {"User-Agent", "Accept", "Accept-Encoding"} <= set(session.headers)
    assert session.auto_decompress is False


@pytest.mark.parametrize("encoding", ["gzip", " GZIP ", "br"])
async def test_a_compressed_stream_is_broken(pool: SessionPool, encoding: str) -> None:
    hostile = HostileBackend(Script(answer([" a"]), headers={"Content-Encoding": encoding}))
    await hostile.start()
    try:
        with pytest.raises(BackendError) as caught:
            await _events(_provider(pool, hostile.url), _request())
    finally:
        await hostile.stop()
    assert caught.value.failure is FailureClass.STREAM_BROKEN
    assert hostile.stats.headers[0]["Accept-Encoding"] == "identity"


@pytest.mark.parametrize("encoding", ["identity", " Identity ", ""])
async def test_an_identity_stream_is_read(pool: SessionPool, encoding: str) -> None:
    hostile = HostileBackend(Script(answer([" a"]), headers={"Content-Encoding": encoding}))
    await hostile.start()
    try:
        events = await _events(_provider(pool, hostile.url), _request())
    finally:
        await hostile.stop()
    assert [e.text for e in events if isinstance(e, TokenDelta)] == ["", " a"]


@pytest.mark.parametrize(
    ("status", "failure"),
    [
        (429, FailureClass.OVERLOADED),
        (408, FailureClass.TIMEOUT),
        (400, FailureClass.CLIENT),
        (503, FailureClass.SERVER),
        (302, FailureClass.SERVER),  # redirects are not followed
    ],
)
async def test_statuses_keep_their_failure_class(
    pool: SessionPool, status: int, failure: FailureClass
) -> None:
    hostile = HostileBackend(
        Script(
            [b'{"error": {"message": "no"}}'],
            status=status,
            content_type="application/json",
            headers={"Retry-After": "3", "Location": "http://127.0.0.1:1/elsewhere"},
        )
    )
    await hostile.start()
    try:
        with pytest.raises(BackendError) as caught:
            await _events(_provider(pool, hostile.url), _request())
    finally:
        await hostile.stop()
    assert caught.value.failure is failure
    assert caught.value.status == status
    assert caught.value.retry_after == 3.0
    assert hostile.stats.requests == 1


async def test_a_reset_mid_stream_is_a_broken_stream(pool: SessionPool) -> None:
    hostile = HostileBackend(Script([*answer([" a", " b"])[:2], RESET]))
    await hostile.start()
    try:
        with pytest.raises(BackendError) as caught:
            await _events(_provider(pool, hostile.url), _request())
    finally:
        await hostile.stop()
    assert caught.value.failure is FailureClass.STREAM_BROKEN


async def test_a_refused_connection_is_a_connect_failure(pool: SessionPool) -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    with pytest.raises(BackendError) as caught:
        await _events(_provider(pool, f"http://127.0.0.1:{port}"), _request())
    assert caught.value.failure is FailureClass.CONNECT


async def test_a_read_does_not_reparse_an_unpaused_connection(
    pool: SessionPool, recorder: _Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiohttp resumes reading after every read; on the pool's connections that
    costs nothing unless reading was paused: no empty chunk goes through the parser
    (before, one per read). Fails too if aiohttp stops making connections with the
    connector's ``_factory``."""
    empty = 0
    received = ResponseHandler.data_received

    def counting(self: ResponseHandler, data: bytes) -> None:
        nonlocal empty
        empty += not data
        received(self, data)

    monkeypatch.setattr(ResponseHandler, "data_received", counting)
    events = await _events(_provider(pool, recorder.url), _request())
    assert [e.text for e in events if isinstance(e, TokenDelta)] == ["", " a", " b"]
    assert empty == 0


async def test_flow_control_still_pauses_and_resumes(pool: SessionPool) -> None:
    """A body far over the read buffer's high-water mark, read only once the
    connection has paused: every byte arrives, in order (a resume that went
    missing would hang here), through the pool's lean reader, on a new
    connection and on a pooled one."""
    piece = bytes(range(256)) * 64  # 16 KiB
    pieces = 64  # 1 MiB, against a 128 KiB high-water mark

    async def big(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(pieces):
            await response.write(piece)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_get("/big", big)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    try:
        session = pool.for_url(url)
        for _ in range(2):  # the second on the pooled connection
            async with session.get(url + "/big") as resp:
                assert resp.connection is not None
                protocol = resp.connection.protocol
                assert isinstance(protocol, ResponseHandler)
                # Read whole, without aiohttp's per-HTTP-chunk work (regions.body_reader)
                assert type(resp.content) is BodyReader
                await wait_for(lambda: protocol._reading_paused, 10.0)  # noqa: B023 (the buffer filled)
                parts = []
                while chunk := await resp.content.readany():
                    parts.append(chunk)
            assert b"".join(parts) == piece * pieces
    finally:
        await runner.cleanup()
