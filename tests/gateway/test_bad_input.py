"""Bad input gets a clear OpenAI-shaped error, and no backend is called."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.conftest import GLOBAL_KEY, gateway_config, wait_for

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
OK_BODY = b'{"model": "test-model", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture
async def setup(emulators, gateways):  # type: ignore[no-untyped-def]
    em = await emulators()
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)],
            limits={"max_body_bytes": 4096, "header_timeout_s": 0.5, "body_timeout_s": 0.5},
        )
    )
    return em, gw


@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "fragment"),
    [
        ("/v1/chat/completions", b"{not json", AUTH, 400, "not valid JSON"),
        ("/v1/chat/completions", b"[1, 2]", AUTH, 400, "must be a JSON object"),
        ("/v1/chat/completions", b'{"model": "test-model"}', AUTH, 400, "'messages'"),
        ("/v1/completions", b'{"model": "test-model"}', AUTH, 400, "'prompt'"),
        (
            "/v1/chat/completions",
            b'{"model": "test-model", "messages": [{"role": "user", "content": 5}]}',
            AUTH,
            400,
            "messages.0.content",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "test-model", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
            AUTH,
            400,
            "stream: Input should be a valid boolean",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "test-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": "9"}',
            AUTH,
            400,
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            b'{"model": "test-model", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
            AUTH,
            400,
            "not valid JSON",
        ),
        ("/v1/chat/completions", OK_BODY.replace(b"test-model", b"gpt-9"), AUTH, 404, "gpt-9"),
        ("/v1/chat/completions", OK_BODY, {}, 401, "API key"),
        ("/v1/chat/completions", OK_BODY, {"Authorization": "Bearer sk-wrong"}, 401, "API key"),
        ("/v1/chat/completions", b" " * 5000 + OK_BODY, AUTH, 413, "exceeds 4096"),
        ("/v1/nothing-here", OK_BODY, AUTH, 404, "Not Found"),
    ],
)
async def test_bad_requests_get_clear_errors_and_reach_no_backend(  # type: ignore[no-untyped-def]
    setup, path, body, headers, status, fragment
) -> None:
    em, gw = setup
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.http_url + path,
            data=body,
            headers={**headers, "Content-Type": "application/json"},
        ) as resp,
    ):
        payload = await resp.json()
        assert resp.status == status, payload
    assert fragment in payload["error"]["message"]
    assert set(payload["error"]) >= {"message", "type", "code"}
    assert em.stats.requests == 0


async def test_oversized_chunked_body_is_413(setup) -> None:  # type: ignore[no-untyped-def]
    em, gw = setup

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000
        yield OK_BODY

    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", data=chunks(), headers=AUTH) as resp,
    ):
        assert resp.status == 413
    assert em.stats.requests == 0


async def _raw(gw_url: str):  # type: ignore[no-untyped-def]
    host, port = gw_url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def test_slow_headers_are_cut_at_the_header_timeout(setup) -> None:  # type: ignore[no-untyped-def]
    em, gw = setup
    reader, writer = await _raw(gw.http_url)
    writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with asyncio.timeout(5):
        data = await reader.read()  # returns b"" when the gateway closes the connection
    assert data == b""
    assert 0.3 < loop.time() - started < 3
    writer.close()
    assert em.stats.requests == 0


async def test_slow_body_gets_408(setup) -> None:  # type: ignore[no-untyped-def]
    em, gw = setup
    reader, writer = await _raw(gw.http_url)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer "
        + GLOBAL_KEY.encode()
        + b"\r\nContent-Length: 100\r\n\r\n{"
    )
    await writer.drain()
    async with asyncio.timeout(5):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408")
    writer.close()
    assert em.stats.requests == 0


async def test_too_many_headers_is_rejected(setup) -> None:  # type: ignore[no-untyped-def]
    em, gw = setup
    headers = {**AUTH, **{f"x-h{i}": "v" for i in range(150)}}
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", data=OK_BODY, headers=headers) as resp,
    ):
        assert resp.status in (400, 431)
    assert em.stats.requests == 0


def _serves(task: asyncio.Task[object]) -> bool:
    code = getattr(task.get_coro(), "cr_code", None)
    return code is not None and code.co_qualname.startswith(
        ("RequestHandler.", "Execution.", "Attempt", "serve", "chat_completions", "completions")
    )


async def test_nothing_leaks_after_bad_requests(setup) -> None:  # type: ignore[no-untyped-def]
    em, gw = setup
    before = asyncio.all_tasks()

    def serving() -> list[asyncio.Task[object]]:
        """New tasks that serve a connection, a request or an attempt (background
        loops of the control plane may come and go meanwhile)."""
        return [t for t in asyncio.all_tasks() - before if _serves(t)]

    async with aiohttp.ClientSession() as s:
        for body in (b"{", b"[]", b'{"model": 1}', OK_BODY.replace(b"test-model", b"x")):
            for _ in range(5):
                async with s.post(gw.http_url + "/v1/chat/completions", data=body, headers=AUTH):
                    pass
    # the client session is closed: every gateway-side handler task must be gone
    await wait_for(lambda: not serving())
    assert gw.runtime.lifecycle.in_flight == 0
    assert em.stats.requests == 0
