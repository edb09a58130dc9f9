"""Every buffer a backend feeds is bounded (issue 20, item 3).

Before: an upstream that never sent a blank line grew the SSE splitter's
buffer without limit and re-scanned it on every read (one stream took the
gateway from 83 to 285 MB in 22 s); the SageMaker payload decoder's line
buffer did the same, and an event-stream frame could claim 24 MiB.
"""

from __future__ import annotations

import binascii
import gzip
import struct
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from emulators.text import expected_text, generate, render_chat
from regions.errors import BackendError, FailureClass
from regions.eventstream import FrameDecoder, FrameError, payload_part
from regions.sagemaker_payloads import PayloadDecoder
from regions.sse import MAX_EVENT_BYTES, SseSplitter
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.hostile_backend import STALL, HostileBackend, Raw, Repeat, Script, chunk, sse

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
PROMPT = "Tell me about the sea"
CONTEXT = render_chat([("user", PROMPT)], False)


def test_an_event_without_an_end_is_refused_at_the_cap() -> None:
    splitter = SseSplitter()
    piece = b"data: " + b"x" * 4090
    fed = 0
    with pytest.raises(BackendError) as caught:
        while fed <= 2 * MAX_EVENT_BYTES:
            assert splitter.feed(piece) == []
            fed += len(piece)
            assert len(splitter.pending) <= MAX_EVENT_BYTES
    assert caught.value.failure is FailureClass.STREAM_BROKEN
    assert fed <= MAX_EVENT_BYTES + len(piece)


def test_the_cap_is_configurable_and_counts_complete_events_too() -> None:
    splitter = SseSplitter(max_event_bytes=100)
    assert splitter.feed(b"data: " + b"a" * 90 + b"\n\n") == [b"data: " + b"a" * 90]
    with pytest.raises(BackendError):
        splitter.feed(b"data: " + b"b" * 200 + b"\n\ndata: c\n\n")


def test_small_reads_of_one_long_event_cost_linear_time() -> None:
    """20 000 reads of 50 bytes: the old splitter copied and re-split the whole
    tail on each (≈ 10 GB of copying); now each byte is searched once."""
    splitter = SseSplitter(max_event_bytes=2 * MAX_EVENT_BYTES)
    piece = b"y" * 50
    started = time.perf_counter()
    for _ in range(20_000):
        splitter.feed(piece)
    events = splitter.feed(b"\n\ndata: z\n\n")
    assert time.perf_counter() - started < 1.0
    assert [len(e) for e in events] == [1_000_000, 7]


def test_a_terminator_split_across_reads_is_found() -> None:
    splitter = SseSplitter()
    assert splitter.feed(b"data: a\n") == []
    assert splitter.feed(b"\ndata: b\r") == [b"data: a"]
    assert splitter.feed(b"\n\r\n") == [b"data: b"]
    assert splitter.pending == b""


def test_payload_lines_are_capped() -> None:
    decoder = PayloadDecoder(chat=True, max_line_bytes=1000)
    with pytest.raises(BackendError) as caught:
        for _ in range(30):
            decoder.feed(b"z" * 100)
    assert caught.value.failure is FailureClass.STREAM_BROKEN


def test_a_frame_longer_than_the_cap_is_refused_before_it_is_buffered() -> None:
    prelude = struct.pack(">II", 20 << 20, 0)
    claim = prelude + struct.pack(">I", binascii.crc32(prelude))
    decoder = FrameDecoder()
    with pytest.raises(FrameError):
        decoder.feed(claim + b"\0" * 100)
    assert not decoder.pending
    small = FrameDecoder(max_frame_bytes=64)
    with pytest.raises(FrameError):
        small.feed(payload_part(b"p" * 100))


@pytest.fixture
async def hostiles() -> AsyncIterator[list[HostileBackend]]:
    started: list[HostileBackend] = []
    yield started
    for backend in started:
        await backend.stop()


async def setup(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostile: HostileBackend
) -> Any:
    good = await emulators()
    await hostile.start()
    return await gateways(
        gateway_config(
            [
                ("hostile", "aws:eu-west-1", "v1", hostile.url, {"weight": 1e6}),
                ("good", "onprem:fra1", "v1", good.url, {"weight": 1e-6}),
            ],
            failover={"health_checks": {"enabled": False}, "hedge": False},
        )
    )


@pytest.mark.parametrize("tokens", [0, 2], ids=["before-first-token", "mid-stream"])
async def test_an_endless_event_moves_the_stream_to_a_healthy_backend(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    hostiles: list[HostileBackend],
    tokens: int,
) -> None:
    """4 MiB without a blank line: refused at 1 MiB, the answer comes from elsewhere
    at once (not after the 30 s idle timeout)."""
    words = generate(CONTEXT, tokens)
    hostile = HostileBackend(
        Script(
            [
                sse(chunk("", role=True)),
                *(sse(chunk(w)) for w in words),
                b"data: ",
                Repeat(b"x" * 65536, 64),
                STALL,  # the old splitter kept all of it and waited for more
            ]
        )
    )
    hostiles.append(hostile)
    gw = await setup(emulators, gateways, hostile)
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": True,
        "max_tokens": 8,
    }
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status == 200
        raw = await resp.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    text = ""
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: {"):
            for choice in orjson.loads(event[6:]).get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
    assert text == expected_text(CONTEXT, 8)


@pytest.mark.parametrize("route", ["vllm", "sagemaker"])
async def test_a_compressed_stream_is_not_inflated(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    hostiles: list[HostileBackend],
    route: str,
) -> None:
    """64 MiB of zeros in 64 KiB of gzip, sent although the gateway asked for
    ``identity``: refused unread (a broken stream), not inflated in one read."""
    bomb = gzip.compress(b"\0" * (64 << 20), compresslevel=9)
    hostile = HostileBackend(Script([Raw(bomb), STALL], headers={"Content-Encoding": "gzip"}))
    hostiles.append(hostile)
    extra: dict[str, Any] = (
        {}
        if route == "vllm"
        else {
            "provider": "sagemaker",
            "sagemaker": {"endpoint_name": "e", "container": "vllm", "credentials": "emulator"},
        }
    )
    good = await emulators()
    await hostile.start()
    gw = await gateways(
        gateway_config(
            [
                ("hostile", "aws:eu-west-1", "v1", hostile.url, {"weight": 1e6, **extra}),
                ("good", "onprem:fra1", "v1", good.url, {"weight": 1e-6}),
            ],
            failover={"health_checks": {"enabled": False}, "hedge": False},
        )
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status == 200
        answer = await resp.json()
    assert answer["choices"][0]["message"]["content"] == expected_text(CONTEXT, 8)
    assert hostile.stats.headers[0]["Accept-Encoding"] == "identity"


async def test_the_gateway_holds_at_most_about_one_event_of_an_endless_one(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    """32 MiB without a blank line, measured: the process's peak of traced memory
    during the request stays within a few MiB (the cap is 1 MiB; the old splitter
    kept all 32)."""
    hostile = HostileBackend(
        Script([sse(chunk("", role=True)), b"data: ", Repeat(b"x" * 65536, 512), STALL])
    )
    hostiles.append(hostile)
    gw = await setup(emulators, gateways, hostile)
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 8}
    tracemalloc.start()
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
        ):
            assert resp.status == 200
            answer = await resp.json()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert answer["choices"][0]["message"]["content"] == expected_text(CONTEXT, 8)
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB"
