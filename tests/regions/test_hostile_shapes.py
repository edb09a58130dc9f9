"""Valid JSON of the wrong shape is a broken stream of that backend (issue 20, item 2).

Before: AttributeError/TypeError inside the adapter, the attempt recorded as
``cancelled`` (so the breaker never saw it), a cut TCP stream with no error
event when streaming and a 500 when not, though another backend was healthy.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from emulators.text import expected_text, generate, render_chat
from regions.errors import BackendError, FailureClass
from regions.openai_chunks import parse_chunk
from regions.sagemaker_payloads import PayloadDecoder
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.hostile_backend import HostileBackend, Script, chunk, sse

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
PROMPT = "Tell me about the sea"
CONTEXT = render_chat([("user", PROMPT)], False)

WRONG_SHAPES: list[bytes] = [
    b"[1,2]",
    b"null",
    b"5",
    b'"text"',
    b'{"choices":"abc"}',
    b'{"choices":[5]}',
    b'{"choices":[{"index":0,"delta":"x","finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":5},"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":["a"]},"finish_reason":null}]}',
    b'{"choices":[{"index":0,"delta":{"content":"x"},"finish_reason":7}]}',
    b'{"choices":[],"usage":{"prompt_tokens":"abc","completion_tokens":1}}',
    b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":-1}}',
    b'{"choices":[],"usage":{"prompt_tokens":true,"completion_tokens":1}}',
    b'{"choices":[],"usage":{"prompt_tokens":1.5,"completion_tokens":1}}',
    b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":99999999999999999999}}',
    b'{"choices":[],"usage":[1,2]}',
    b'{"error":5}',
    b'{"error":{"message":["x"]}}',
    b'{"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}',
    b'{"choices":[{"index":1,"delta":{"content":"b"},"finish_reason":null}]}',
]


@pytest.mark.parametrize("data", WRONG_SHAPES, ids=lambda d: d.decode()[:40])
def test_wrong_shapes_are_stream_broken_in_the_chunk_parser(data: bytes) -> None:
    with pytest.raises(BackendError) as caught:
        parse_chunk(orjson.loads(data), chat=True)
    assert caught.value.failure is FailureClass.STREAM_BROKEN


@pytest.mark.parametrize(
    "line",
    [
        *(b"data: " + d for d in WRONG_SHAPES if d.startswith(b"{")),
        b'{"token":[1]}',
        b'{"token":{"text":5}}',
        b'{"token":{"text":"a"},"details":"x"}',
        b'{"token":{"text":"a"},"details":{"finish_reason":3}}',
        b'{"token":{"text":"a"},"details":{"finish_reason":"length","generated_tokens":"abc"}}',
    ],
    ids=lambda d: d.decode()[:40],
)
def test_wrong_shapes_are_stream_broken_in_the_payload_decoder(line: bytes) -> None:
    decoder = PayloadDecoder(chat=True, passthrough=True)
    with pytest.raises(BackendError) as caught:
        decoder.feed(line + b"\n")
    assert caught.value.failure is FailureClass.STREAM_BROKEN


def partial_answer(tokens: int, bad: bytes) -> Script:
    """The first ``tokens`` tokens a correct backend would send, then ``bad``."""
    words = generate(CONTEXT, tokens)
    return Script([sse(chunk("", role=True)), *(sse(chunk(w)) for w in words), sse(bad)])


async def hostile_and_healthy(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostile: HostileBackend, **failover: Any
) -> Any:
    good = await emulators()
    await hostile.start()
    gw = await gateways(
        gateway_config(
            [
                ("hostile", "aws:eu-west-1", "v1", hostile.url, {"weight": 1e6}),
                ("good", "onprem:fra1", "v1", good.url, {"weight": 1e-6}),
            ],
            failover={"health_checks": {"enabled": False}, "hedge": False, **failover},
        )
    )
    return gw


@pytest.fixture
async def hostiles() -> AsyncIterator[list[HostileBackend]]:
    started: list[HostileBackend] = []
    yield started
    for backend in started:
        await backend.stop()


async def post(gw: Any, stream: bool, max_tokens: int = 8) -> tuple[int, bytes]:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": PROMPT}],
        "stream": stream,
        "max_tokens": max_tokens,
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        return resp.status, await resp.read()


def attempts(gw: Any, backend: str, outcome: str) -> float:
    value = gw.runtime.metrics.registry.get_sample_value(
        "meridian_backend_attempts_total",
        {"backend": backend, "region": "aws:eu-west-1", "outcome": outcome},
    )
    return value or 0.0


def streamed_text(raw: bytes) -> tuple[str, list[str]]:
    text, finishes = "", []
    for event in raw.split(b"\n\n"):
        if event.startswith(b"data: {"):
            obj = orjson.loads(event[6:])
            assert "error" not in obj, raw
            for choice in obj.get("choices") or []:
                text += (choice.get("delta") or {}).get("content") or ""
                if choice.get("finish_reason"):
                    finishes.append(choice["finish_reason"])
    return text, finishes


@pytest.mark.parametrize("bad", WRONG_SHAPES[:10], ids=lambda d: d.decode()[:40])
async def test_wrong_shape_mid_stream_resumes_on_the_healthy_backend(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    hostiles: list[HostileBackend],
    bad: bytes,
) -> None:
    hostile = HostileBackend(partial_answer(3, bad))
    hostiles.append(hostile)
    gw = await hostile_and_healthy(emulators, gateways, hostile)
    status, raw = await post(gw, stream=True)
    assert status == 200
    assert raw.endswith(b"data: [DONE]\n\n")
    text, finishes = streamed_text(raw)
    assert text == expected_text(CONTEXT, 8)
    assert finishes == ["length"]
    assert attempts(gw, "hostile", "stream_broken") == 1  # counted against it, not "cancelled"
    assert attempts(gw, "hostile", "cancelled") == 0


@pytest.mark.parametrize("bad", [WRONG_SHAPES[0], WRONG_SHAPES[7], WRONG_SHAPES[10]])
async def test_wrong_shape_before_the_first_token_fails_over_non_stream(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    hostiles: list[HostileBackend],
    bad: bytes,
) -> None:
    hostile = HostileBackend(partial_answer(0, bad))
    hostiles.append(hostile)
    gw = await hostile_and_healthy(emulators, gateways, hostile)
    status, raw = await post(gw, stream=False)
    assert status == 200, raw
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == expected_text(CONTEXT, 8)


async def test_wrong_shape_under_50_concurrent_streams_costs_nothing_and_trips_the_breaker(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    """The issue's acceptance test: 0 failed requests, the breaker opens."""
    hostile = HostileBackend(partial_answer(2, b'{"choices":[{"index":0,"delta":"x"}]}'))
    hostiles.append(hostile)
    gw = await hostile_and_healthy(
        emulators,
        gateways,
        hostile,
        breaker={"minimum_calls": 5, "window_size": 10, "open_s": 60},
        ejection={"consecutive_errors": 1000},
    )
    results = await asyncio.gather(*(post(gw, stream=True) for _ in range(50)))
    for status, raw in results:
        assert status == 200
        assert raw.endswith(b"data: [DONE]\n\n")
        assert streamed_text(raw) == (expected_text(CONTEXT, 8), ["length"])
    breaker = gw.runtime.health.status(time.monotonic())["hostile"]["breaker"]
    assert breaker in ("open", "half_open")
    assert hostile.stats.requests >= 5


async def test_wrong_shape_mid_stream_with_no_other_backend_ends_with_an_error_event(
    gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    """Nothing can continue: the stream says so (an error event, no [DONE]) rather than
    being cut, and a non-streaming client gets a JSON 502, not a 500."""
    hostile = HostileBackend(partial_answer(2, b'{"choices":[{"index":0,"delta":{"content":1}}]}'))
    hostiles.append(hostile)
    await hostile.start()
    gw = await gateways(
        gateway_config(
            [("hostile", "aws:eu-west-1", "v1", hostile.url)],
            failover={"health_checks": {"enabled": False}, "hedge": False},
        )
    )
    status, raw = await post(gw, stream=True)
    assert status == 200
    last = orjson.loads(raw.split(b"\n\n")[-2][6:])
    assert last["error"]["code"] == "stream_failed" and b"[DONE]" not in raw
    status, raw = await post(gw, stream=False)
    assert status == 502 and orjson.loads(raw)["error"]["code"] == "stream_failed"


@pytest.mark.parametrize("value", ["inf", "1e999", "nan", "-5", "1e308"])
async def test_a_hostile_retry_after_is_no_500(
    gateways: GatewayFactory, hostiles: list[HostileBackend], value: str
) -> None:
    """429s whose Retry-After is infinite, NaN or absurd: the client gets a 503 with
    a sane Retry-After (was a 500 and a traceback: round(inf) in the error headers)."""
    hostile = HostileBackend(
        Script([b'{"error":{"message":"slow down"}}'], status=429, headers={"Retry-After": value})
    )
    hostiles.append(hostile)
    await hostile.start()
    gw = await gateways(
        gateway_config(
            [("hostile", "aws:eu-west-1", "v1", hostile.url)],
            failover={"health_checks": {"enabled": False}, "hedge": False},
        )
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status == 503
        retry_after = resp.headers.get("Retry-After")
        await resp.read()
    assert retry_after is None or 1 <= int(retry_after) <= 86400


async def test_a_redirect_from_a_backend_is_not_followed(
    emulators: EmulatorFactory, gateways: GatewayFactory, hostiles: list[HostileBackend]
) -> None:
    """A backend answering 307 elsewhere is a misconfigured backend (SERVER), not a
    reason to send the request, and its credentials, to whatever host it names."""
    elsewhere = HostileBackend(partial_answer(0, b"[1]"))
    hostiles.append(elsewhere)
    await elsewhere.start()
    hostile = HostileBackend(
        Script([], status=307, headers={"Location": elsewhere.url + "/v1/chat/completions"})
    )
    hostiles.append(hostile)
    gw = await hostile_and_healthy(emulators, gateways, hostile)
    status, raw = await post(gw, stream=False)
    assert status == 200, raw
    assert orjson.loads(raw)["choices"][0]["message"]["content"] == expected_text(CONTEXT, 8)
    assert hostile.stats.requests == 1 and elsewhere.stats.requests == 0
    assert attempts(gw, "hostile", "server") == 1
