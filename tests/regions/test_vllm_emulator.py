"""The vLLM emulator over real loopback HTTP: wire format, faults, metrics, lifecycle.

Wire fidelity is checked with the stock ``openai`` client; faults and raw SSE
with aiohttp, which exposes headers and broken streams exactly.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

import aiohttp
import openai
import orjson
import pytest
from openai.types.chat import ChatCompletionMessageParam

from emulators import text
from emulators.faults import Faults
from emulators.vllm import EmulatorConfig, VllmEmulator, serve_forever

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MESSAGES: list[ChatCompletionMessageParam] = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello"},
]
PROMPT = text.render_chat([("system", "be brief"), ("user", "hello")], False)

Factory = Callable[..., Awaitable[VllmEmulator]]


async def wait_until(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.002)


@pytest.fixture
async def make_emulator() -> AsyncIterator[Factory]:
    started: list[VllmEmulator] = []

    async def make(**config: Any) -> VllmEmulator:
        emulator = VllmEmulator(EmulatorConfig(**config))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield make
    for emulator in started:
        await emulator.stop()


@pytest.fixture
async def emu(make_emulator: Factory) -> VllmEmulator:
    return await make_emulator(default_max_tokens=8)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


@pytest.fixture
async def client(emu: VllmEmulator) -> AsyncIterator[openai.AsyncOpenAI]:
    oai = openai.AsyncOpenAI(base_url=emu.url + "/v1", api_key="x", max_retries=0)
    yield oai
    await oai.close()


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES, "stream": True, **extra}


async def sse(resp: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The data of each SSE event, in order, as the bytes after ``data: ``."""
    buffer = b""
    async for piece in resp.content.iter_any():
        buffer += piece
        while b"\n\n" in buffer:
            event, buffer = buffer.split(b"\n\n", 1)
            assert event.startswith(b"data: ")
            yield event[6:]


def content_of(data: bytes) -> str:
    chunk = orjson.loads(data)
    choice = chunk["choices"][0] if chunk["choices"] else {}
    return str(choice.get("delta", {}).get("content") or choice.get("text") or "")


def metric(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + "{"):
            assert f'model_name="{MODEL}"' in line
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not in /metrics")


# -- wire format, through the openai client -----------------------------------------


async def test_chat_stream_parsed_by_openai(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, max_tokens=5
    )
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[0].choices[0].delta.content == ""
    assert chunks[0].id.startswith("chatcmpl-") and chunks[0].model == MODEL
    assert len({c.id for c in chunks}) == 1
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == text.expected_text(
        PROMPT, 5
    )
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 5 + ["length"]
    assert all(c.usage is None for c in chunks)


async def test_include_usage_adds_a_final_chunk_without_choices(
    client: openai.AsyncOpenAI,
) -> None:
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        stream=True,
        max_tokens=3,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    prompt_tokens = text.count_tokens(PROMPT)
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (prompt_tokens, 3)
    assert last.usage.total_tokens == prompt_tokens + 3
    assert chunks[-2].choices[0].finish_reason == "length"


async def test_raw_chat_chunks_match_vllm_layout(
    emu: VllmEmulator, http: aiohttp.ClientSession
) -> None:
    body = chat_body(max_tokens=2, stream_options={"include_usage": True})
    async with http.post(emu.url + "/v1/chat/completions", json=body) as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        events = [event async for event in sse(resp)]
    assert events[-1] == b"[DONE]"
    role, first, final, usage = (orjson.loads(e) for e in events[:-1])
    assert role["object"] == "chat.completion.chunk" and role["usage"] is None
    assert first["choices"][0] == {
        "index": 0,
        "delta": {"content": text.generate(PROMPT, 1)[0]},
        "logprobs": None,
        "finish_reason": None,
    }
    assert final["choices"][0]["finish_reason"] == "length"
    assert final["choices"][0]["stop_reason"] is None
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == 2
    async with http.post(emu.url + "/v1/chat/completions", json=chat_body(max_tokens=2)) as resp:
        without = [orjson.loads(e) async for e in sse(resp) if e != b"[DONE]"]
    assert all("usage" not in chunk for chunk in without)


async def test_completions_stream_parsed_by_openai(client: openai.AsyncOpenAI) -> None:
    stream = await client.completions.create(
        model=MODEL, prompt="once upon a time", stream=True, max_tokens=4
    )
    chunks = [chunk async for chunk in stream]
    assert all(c.object == "text_completion" and c.id.startswith("cmpl-") for c in chunks)
    assert "".join(c.choices[0].text for c in chunks) == text.expected_text("once upon a time", 4)
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_finish_reason_stop_at_the_default_limit(client: openai.AsyncOpenAI) -> None:
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    chunks = [chunk async for chunk in stream]
    assert len(chunks) == 1 + 8  # the emulator's default_max_tokens
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_max_completion_tokens_wins_over_max_tokens(client: openai.AsyncOpenAI) -> None:
    reply = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=2, max_completion_tokens=3
    )
    assert reply.usage is not None and reply.usage.completion_tokens == 3


async def test_non_stream_chat_and_completion(client: openai.AsyncOpenAI) -> None:
    chat = await client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=6)
    assert chat.object == "chat.completion"
    assert chat.choices[0].message.role == "assistant"
    assert chat.choices[0].message.content == text.expected_text(PROMPT, 6)
    assert chat.choices[0].finish_reason == "length"
    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens) == (
        text.count_tokens(PROMPT),
        6,
    )
    done = await client.completions.create(model=MODEL, prompt="a b c")
    assert done.choices[0].text == text.expected_text("a b c", 8)
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.total_tokens == 3 + 8


async def test_continue_final_message_yields_the_tail(
    emu: VllmEmulator, client: openai.AsyncOpenAI
) -> None:
    full = text.generate(PROMPT, 12)
    prefix = "".join(full[:5])
    stream = await client.chat.completions.create(
        model=MODEL,
        messages=[*MESSAGES, {"role": "assistant", "content": prefix}],
        stream=True,
        max_tokens=7,
        extra_body={"continue_final_message": True, "add_generation_prompt": False},
    )
    tail = "".join([chunk.choices[0].delta.content or "" async for chunk in stream])
    assert tail == "".join(full[5:])
    assert emu.stats.last_request is not None
    assert emu.stats.last_request["continue_final_message"] is True


async def test_completion_continued_from_prompt_plus_prefix(client: openai.AsyncOpenAI) -> None:
    full = text.generate("the quick brown fox", 10)
    reply = await client.completions.create(
        model=MODEL, prompt="the quick brown fox" + "".join(full[:3]), max_tokens=7
    )
    assert reply.choices[0].text == "".join(full[3:])


async def test_models_list(emu: VllmEmulator, client: openai.AsyncOpenAI) -> None:
    models = [model async for model in client.models.list()]
    assert [m.id for m in models] == [MODEL]
    async with aiohttp.ClientSession() as http, http.get(emu.url + "/v1/models") as resp:
        body = await resp.json()
    assert body["object"] == "list"
    assert body["data"][0]["max_model_len"] == EmulatorConfig().max_model_len
    assert body["data"][0]["owned_by"] == "vllm"


# -- bad input ----------------------------------------------------------------------


def _error_shape(body: dict[str, Any], status: int) -> str:
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == status
    return str(body["error"]["type"])


async def test_unknown_model_is_vllm_not_found(
    emu: VllmEmulator, http: aiohttp.ClientSession
) -> None:
    async with http.post(emu.url + "/v1/chat/completions", json=chat_body(model="nope")) as resp:
        assert resp.status == 404
        assert await resp.json() == {
            "error": {
                "message": "The model `nope` does not exist.",
                "type": "NotFoundError",
                "param": "model",
                "code": 404,
            }
        }


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", b"{not json"),
        ("/v1/chat/completions", b"[1, 2]"),
        ("/v1/chat/completions", b'{"model": "%s"}' % MODEL.encode()),
        ("/v1/chat/completions", orjson.dumps({"messages": [], "model": MODEL})),
        ("/v1/chat/completions", orjson.dumps({"messages": ["hi"]})),
        ("/v1/chat/completions", orjson.dumps({"messages": MESSAGES, "max_tokens": "5"})),
        ("/v1/chat/completions", orjson.dumps({"messages": MESSAGES, "max_tokens": True})),
        ("/v1/chat/completions", orjson.dumps({"messages": MESSAGES, "max_tokens": 0})),
        ("/v1/chat/completions", orjson.dumps({"messages": MESSAGES, "model": 7})),
        ("/v1/chat/completions", orjson.dumps({"messages": MESSAGES, "stream": "yes"})),
        (
            "/v1/chat/completions",
            orjson.dumps({"messages": MESSAGES, "stream_options": {"include_usage": True}}),
        ),
        (
            "/v1/chat/completions",
            orjson.dumps({"messages": MESSAGES, "continue_final_message": True}),
        ),
        ("/v1/completions", orjson.dumps({"model": MODEL})),
        ("/v1/completions", orjson.dumps({"prompt": 42})),
        ("/v1/completions", b"\xff\xfe"),
    ],
)
async def test_bad_requests_get_400_with_the_error_shape(
    emu: VllmEmulator, http: aiohttp.ClientSession, path: str, body: bytes
) -> None:
    headers = {"Content-Type": "application/json"}
    async with http.post(emu.url + path, data=body, headers=headers) as resp:
        assert resp.status == 400
        assert _error_shape(await resp.json(), 400) == "BadRequestError"
    assert emu.stats.running == 0 and emu.stats.completed == 0


async def test_prompt_longer_than_the_context_is_400(make_emulator: Factory) -> None:
    emu = await make_emulator(max_model_len=10)
    async with aiohttp.ClientSession() as http:
        body = {"prompt": "w " * 8, "max_tokens": 5}
        async with http.post(emu.url + "/v1/completions", json=body) as resp:
            assert resp.status == 400
            assert "maximum context length is 10" in (await resp.json())["error"]["message"]


# -- faults -------------------------------------------------------------------------


async def test_status_fault_returns_error_body(
    emu: VllmEmulator, client: openai.AsyncOpenAI
) -> None:
    emu.faults.status = 503
    with pytest.raises(openai.InternalServerError) as caught:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    assert caught.value.status_code == 503
    assert _error_shape(caught.value.response.json(), 503) == "ServiceUnavailableError"
    assert emu.stats.last_request is not None and emu.stats.last_request["messages"] == MESSAGES


async def test_429_with_retry_after(emu: VllmEmulator, http: aiohttp.ClientSession) -> None:
    emu.faults.update({"status": 429, "retry_after": 2})
    async with http.post(emu.url + "/v1/chat/completions", json=chat_body()) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "2"
        assert _error_shape(await resp.json(), 429) == "TooManyRequestsError"


async def test_times_applies_to_the_next_n_requests_only(
    emu: VllmEmulator, client: openai.AsyncOpenAI
) -> None:
    emu.faults.update({"status": 500, "times": 2})
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.completions.create(model=MODEL, prompt="hi")
    assert not emu.faults.active
    reply = await client.completions.create(model=MODEL, prompt="hi")
    assert reply.choices[0].text == text.expected_text("hi", 8)


async def test_stall_before_first_token_is_a_client_timeout(
    emu: VllmEmulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.stall_after_tokens = 0
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with http.post(
        emu.url + "/v1/chat/completions", json=chat_body(), timeout=timeout
    ) as resp:
        assert resp.status == 200  # headers are out; no token ever follows
        with pytest.raises(asyncio.TimeoutError):
            await resp.content.read(1)
    await wait_until(lambda: emu.stats.disconnects == 1 and emu.stats.running == 0)


async def test_stall_after_n_tokens(emu: VllmEmulator, http: aiohttp.ClientSession) -> None:
    emu.faults.stall_after_tokens = 3
    received: list[str] = []
    timeout = aiohttp.ClientTimeout(sock_read=0.2)
    async with http.post(
        emu.url + "/v1/chat/completions", json=chat_body(), timeout=timeout
    ) as resp:
        with pytest.raises(asyncio.TimeoutError):
            async for data in sse(resp):
                received.append(content_of(data))
    assert "".join(received) == text.expected_text(PROMPT, 3)


@pytest.mark.parametrize("n", [0, 1, 4])
async def test_reset_after_n_tokens_breaks_the_stream(
    emu: VllmEmulator, http: aiohttp.ClientSession, n: int
) -> None:
    emu.faults.reset_after_tokens = n
    events: list[bytes] = []
    with pytest.raises(aiohttp.ClientError):
        async with http.post(emu.url + "/v1/chat/completions", json=chat_body()) as resp:
            async for data in sse(resp):
                events.append(data)
    assert b"[DONE]" not in events
    assert "".join(content_of(e) for e in events) == text.expected_text(PROMPT, n)
    assert len([e for e in events if content_of(e)]) == n
    await wait_until(lambda: emu.stats.running == 0)
    assert emu.stats.disconnects == 0 and emu.stats.completed == 0


async def test_reset_is_an_error_for_the_openai_client(
    emu: VllmEmulator, client: openai.AsyncOpenAI
) -> None:
    emu.faults.reset_after_tokens = 2
    received: list[str] = []
    stream = await client.chat.completions.create(model=MODEL, messages=MESSAGES, stream=True)
    with pytest.raises(Exception):  # noqa: B017 - the transport's error class is not ours
        async for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "".join(received) == text.expected_text(PROMPT, 2)


async def test_non_stream_reset_drops_the_connection(
    emu: VllmEmulator, http: aiohttp.ClientSession
) -> None:
    emu.faults.reset_after_tokens = 1
    with pytest.raises(aiohttp.ClientError):
        async with http.post(emu.url + "/v1/completions", json={"prompt": "x"}) as resp:
            await resp.read()


async def test_slow_drip_and_ttft_override(emu: VllmEmulator, http: aiohttp.ClientSession) -> None:
    emu.faults.update({"ttft_s": 0.1, "drip_interval_s": 0.04})
    arrivals: list[float] = []
    start = time.monotonic()
    async with http.post(emu.url + "/v1/chat/completions", json=chat_body(max_tokens=4)) as resp:
        async for data in sse(resp):
            if data != b"[DONE]" and content_of(data):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 4
    assert arrivals[0] - start >= 0.09
    assert arrivals[-1] - arrivals[0] >= 0.1  # three 40 ms intervals, minus timer slack


async def test_config_timing_spaces_tokens(
    make_emulator: Factory, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(itl_s=0.02)
    start = time.monotonic()
    async with http.post(emu.url + "/v1/chat/completions", json=chat_body(max_tokens=6)) as resp:
        events = [e async for e in sse(resp)]
    assert len(events) == 1 + 6 + 1
    assert time.monotonic() - start >= 0.09  # five 20 ms gaps


async def test_faults_over_http(emu: VllmEmulator, http: aiohttp.ClientSession) -> None:
    url = emu.url + "/_emulator/faults"
    async with http.post(url, json={"status": 429, "retry_after": 0.5, "times": 1}) as resp:
        assert resp.status == 200
        assert (await resp.json())["status"] == 429
    async with http.post(emu.url + "/v1/completions", json={"prompt": "x"}) as resp:
        assert resp.status == 429 and resp.headers["Retry-After"] == "0.5"
    async with http.post(emu.url + "/v1/completions", json={"prompt": "x"}) as resp:
        assert resp.status == 200
    for bad in ({"nope": 1}, {"status": "500"}, {"status": 200}, {"itl_s": -1}, [1]):
        async with http.post(url, json=bad) as resp:
            assert resp.status == 400
            _error_shape(await resp.json(), 400)
    async with http.post(url, data=b"{") as resp:
        assert resp.status == 400
    assert not emu.faults.active  # rejected updates changed nothing
    async with http.post(url, json={"stall_after_tokens": 2}) as resp:
        assert resp.status == 200
    async with http.delete(url) as resp:
        assert resp.status == 200 and not any((await resp.json()).values())
    async with http.get(emu.url + "/_emulator/stats") as resp:
        stats = await resp.json()
    assert stats["requests"] == 2 and stats["completed"] == 1
    assert stats["last_request"] == {"prompt": "x"}


def test_faults_update_is_all_or_nothing() -> None:
    faults = Faults()
    with pytest.raises(ValueError, match="times"):
        faults.update({"status": 500, "times": 0})
    assert faults == Faults()
    faults.update({"status": 500, "itl_s": 1})
    assert faults.itl_s == 1.0 and isinstance(faults.itl_s, float)
    for bad in ({"status": True}, {"ttft_s": float("inf")}, {"reset_after_tokens": 1.5}):
        with pytest.raises(ValueError):
            faults.update(bad)
    faults.update({"status": None})
    assert faults.status is None and faults.active  # itl_s still set
    faults.clear()
    assert not faults.active and faults.take() is None


def test_faults_take_snapshots_and_counts_down() -> None:
    faults = Faults(stall_after_tokens=1, times=2)
    first = faults.take()
    assert first is not None and first.stall_after_tokens == 1
    faults.stall_after_tokens = 5  # a later change does not touch the taken snapshot
    assert first.stall_after_tokens == 1
    assert faults.take() is not None
    assert faults.take() is None and faults == Faults()


def test_faults_rate_hits_an_exact_evenly_spread_share() -> None:
    faults = Faults(status=500, rate=0.05)
    hits = [i for i in range(1, 101) if faults.take() is not None]
    assert hits == [20, 40, 60, 80, 100]
    with pytest.raises(ValueError, match="rate"):
        faults.update({"rate": 0})
    faults.clear()
    assert faults.take() is None


# -- health, metrics, load, disconnects, lifecycle -----------------------------------


async def test_health(emu: VllmEmulator, http: aiohttp.ClientSession) -> None:
    async with http.get(emu.url + "/health") as resp:
        assert resp.status == 200 and await resp.read() == b""
    emu.faults.status = 503
    async with http.get(emu.url + "/health") as resp:
        assert resp.status == 503


async def _open_stalled(http: aiohttp.ClientSession, url: str) -> aiohttp.ClientResponse:
    return await http.post(url + "/v1/chat/completions", json=chat_body())


async def test_metrics_while_requests_run_and_wait(
    make_emulator: Factory, http: aiohttp.ClientSession
) -> None:
    emu = await make_emulator(max_num_seqs=1)
    emu.faults.stall_after_tokens = 0
    first = await _open_stalled(http, emu.url)
    await wait_until(lambda: emu.stats.running == 1)
    second = asyncio.create_task(_open_stalled(http, emu.url))  # queued: no headers yet
    await wait_until(lambda: emu.stats.waiting == 1)
    async with http.get(emu.url + "/metrics") as resp:
        assert resp.headers["Content-Type"].startswith("text/plain")
        body = await resp.text()
    assert metric(body, "vllm:num_requests_running") == 1.0
    assert metric(body, "vllm:num_requests_waiting") == 1.0
    assert metric(body, "vllm:kv_cache_usage_perc") == 1.0
    assert metric(body, "vllm:prompt_tokens_total") == 2 * text.count_tokens(PROMPT)
    assert "# TYPE vllm:prompt_tokens counter" in body

    second.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await second
    first.close()
    await wait_until(lambda: emu.stats.disconnects == 2)
    assert (emu.stats.running, emu.stats.waiting) == (0, 0)
    async with http.get(emu.url + "/metrics") as resp:
        body = await resp.text()
    assert metric(body, "vllm:num_requests_running") == 0.0


async def test_generation_tokens_counter(emu: VllmEmulator, http: aiohttp.ClientSession) -> None:
    for _ in range(3):
        async with http.post(emu.url + "/v1/completions", json={"prompt": "x"}) as resp:
            await resp.read()
    async with http.get(emu.url + "/metrics") as resp:
        body = await resp.text()
    assert metric(body, "vllm:generation_tokens_total") == 24.0
    assert 'vllm:request_success_total{finished_reason="stop",' in body


async def test_client_disconnect_mid_stream_is_counted_and_leaves_no_task(
    make_emulator: Factory,
) -> None:
    emu = await make_emulator(itl_s=0.01, default_max_tokens=500)
    baseline = len(asyncio.all_tasks())
    async with aiohttp.ClientSession() as http:
        resp = await http.post(emu.url + "/v1/chat/completions", json=chat_body())
        seen = 0
        async for _ in sse(resp):
            seen += 1
            if seen == 3:
                break
        resp.close()
    await wait_until(lambda: emu.stats.disconnects == 1 and emu.stats.running == 0)
    await wait_until(lambda: len(asyncio.all_tasks()) <= baseline)
    assert emu.stats.completed == 0


async def test_a_client_that_stops_reading_stops_the_stream(emu: VllmEmulator) -> None:
    """Writes wait for the socket to drain: tokens_sent plateaus instead of buffering."""
    host, port = emu.url.removeprefix("http://").split(":")
    reader, writer = await asyncio.open_connection(host, int(port), limit=1024)
    body = orjson.dumps(chat_body(max_tokens=1_000_000))
    head = f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    writer.write(head.encode() + b"Content-Type: application/json\r\n\r\n" + body)
    await reader.readuntil(b"\r\n\r\n")
    cast(asyncio.Transport, writer.transport).pause_reading()
    samples: list[int] = []

    def plateaued() -> bool:
        samples.append(emu.stats.tokens_sent)
        return len(samples) > 10 and samples[-1] == samples[-10] > 0

    deadline = time.monotonic() + 8.0
    while not plateaued():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    assert samples[-1] < 500_000
    writer.transport.abort()
    await wait_until(lambda: emu.stats.running == 0 and emu.stats.disconnects == 1)


async def test_many_concurrent_streams(emu: VllmEmulator, http: aiohttp.ClientSession) -> None:
    async def one(i: int) -> str:
        body = {"prompt": f"prompt number {i}", "stream": True, "max_tokens": 20}
        async with http.post(emu.url + "/v1/completions", json=body) as resp:
            return "".join([content_of(e) async for e in sse(resp) if e != b"[DONE]"])

    texts = await asyncio.gather(*(one(i) for i in range(100)))
    assert texts == [text.expected_text(f"prompt number {i}", 20) for i in range(100)]
    assert emu.stats.completed == 100


async def test_stop_does_not_wait_for_stalled_streams(make_emulator: Factory) -> None:
    emu = await make_emulator()
    emu.faults.stall_after_tokens = 0
    async with aiohttp.ClientSession() as http:
        resp = await _open_stalled(http, emu.url)
        await wait_until(lambda: emu.stats.running == 1)
        start = time.monotonic()
        await emu.stop()
        assert time.monotonic() - start < 0.5
        assert emu.stats.running == 0 and emu.stats.disconnects == 0
        with pytest.raises(aiohttp.ClientError):
            await resp.read()
        resp.close()


async def test_serve_forever_runs_until_cancelled() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    task = asyncio.create_task(serve_forever("127.0.0.1", port, EmulatorConfig()))
    url = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as http:
        deadline = time.monotonic() + 3.0
        while True:
            try:
                async with http.get(url + "/health") as resp:
                    assert resp.status == 200
                    break
            except aiohttp.ClientConnectionError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
