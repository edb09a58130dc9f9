"""The Vertex emulator over real loopback HTTP: routes, bearer auth, Google error shapes, faults.

The stock ``openai`` client drives the OpenAI-compatible chat route the way
Model Garden users (and litellm) point it at a Vertex endpoint: base URL up to
the endpoint, the access token as the API key.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from emulators import text
from emulators.vertex import VertexEmulator, VertexEmulatorConfig

RESOURCE = "projects/proj/locations/europe-west4/endpoints/1234567890"
CHAT_PATH = f"/v1beta1/{RESOURCE}/chat/completions"
SRP_PATH = f"/v1/{RESOURCE}:streamRawPredict"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
PROMPT = text.render_chat([("user", "hello")], False)
AUTH = {"Authorization": "Bearer good-token"}

Make = Callable[..., Awaitable[VertexEmulator]]


@pytest.fixture
async def make() -> AsyncIterator[Make]:
    started: list[VertexEmulator] = []

    async def start(**config: Any) -> VertexEmulator:
        emulator = VertexEmulator(VertexEmulatorConfig(**config))
        await emulator.start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def test_openai_client_on_the_chat_route(make: Make) -> None:
    emu = await make(tokens=("good-token",), project="proj", location="europe-west4")
    base = f"{emu.url}/v1beta1/{RESOURCE}"
    async with openai.AsyncOpenAI(base_url=base, api_key="good-token", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="",
            messages=MESSAGES,
            max_tokens=5,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = [chunk async for chunk in stream]
        whole = await client.chat.completions.create(model="", messages=MESSAGES, max_tokens=5)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text.expected_text(PROMPT, 5)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 5
    assert whole.choices[0].message.content == streamed
    assert emu.stats.last_path == CHAT_PATH and emu.stats.last_token == "good-token"


async def test_stream_raw_predict_serves_chat_and_completion(
    make: Make, http: aiohttp.ClientSession
) -> None:
    emu = await make()
    body = {"prompt": "Once upon", "max_tokens": 4, "stream": True}
    async with http.post(emu.url + SRP_PATH, json=body, headers=AUTH) as r:
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/event-stream")
        raw = await r.read()
    assert raw.endswith(b"data: [DONE]\n\n")
    assert b'"object":"text_completion"' in raw
    raw_predict = f"/v1/{RESOURCE}:rawPredict"
    body = {"messages": MESSAGES, "max_tokens": 4}
    async with http.post(emu.url + raw_predict, json=body, headers=AUTH) as r:
        answer = await r.json()
    assert answer["choices"][0]["message"]["content"] == text.expected_text(PROMPT, 4)


@pytest.mark.parametrize(
    ("config", "path", "headers", "status", "rpc"),
    [
        ({}, CHAT_PATH, {}, 401, "UNAUTHENTICATED"),
        ({"tokens": ("other",)}, CHAT_PATH, AUTH, 401, "UNAUTHENTICATED"),
        ({"project": "mine"}, CHAT_PATH, AUTH, 403, "PERMISSION_DENIED"),
        ({"location": "us-central1"}, CHAT_PATH, AUTH, 400, "INVALID_ARGUMENT"),
        ({}, CHAT_PATH.replace("1234567890", "999"), AUTH, 404, "NOT_FOUND"),
        ({}, f"/v1/{RESOURCE}:explain", AUTH, 404, "NOT_FOUND"),
    ],
)
async def test_google_error_shapes(
    make: Make,
    http: aiohttp.ClientSession,
    config: dict[str, Any],
    path: str,
    headers: dict[str, str],
    status: int,
    rpc: str,
) -> None:
    emu = await make(**config)
    body = {"messages": MESSAGES, "stream": True}
    async with http.post(emu.url + path, json=body, headers=headers) as r:
        assert r.status == status
        error = (await r.json())["error"]
    assert error["code"] == status and error["status"] == rpc and error["message"]


@pytest.mark.parametrize(
    ("status", "rpc", "words"),
    [
        (429, "RESOURCE_EXHAUSTED", "Rate of traffic exceeds capacity"),
        (503, "UNAVAILABLE", "unavailable"),
        (504, "DEADLINE_EXCEEDED", "emulated"),
        (500, "INTERNAL", "emulated"),
    ],
)
async def test_status_faults_use_googles_shape(
    make: Make, http: aiohttp.ClientSession, status: int, rpc: str, words: str
) -> None:
    emu = await make()
    emu.faults.update({"status": status, "retry_after": 1, "times": 1})
    body = {"messages": MESSAGES, "stream": True}
    async with http.post(emu.url + CHAT_PATH, json=body, headers=AUTH) as r:
        assert r.status == status and r.headers["Retry-After"] == "1"
        error = (await r.json())["error"]
    assert error["status"] == rpc and words in error["message"]
    async with http.post(emu.url + CHAT_PATH, json=body, headers=AUTH) as r:
        assert r.status == 200  # `times` used up
        await r.read()


async def test_bad_bodies_are_invalid_argument(make: Make, http: aiohttp.ClientSession) -> None:
    emu = await make()
    for body in ({"prompt": "x"}, {"messages": "nope"}, {"messages": MESSAGES, "max_tokens": 0}):
        async with http.post(emu.url + CHAT_PATH, json=body, headers=AUTH) as r:
            assert r.status == 400
            assert (await r.json())["error"]["status"] == "INVALID_ARGUMENT"


async def test_stall_and_reset_faults(make: Make, http: aiohttp.ClientSession) -> None:
    emu = await make(default_max_tokens=10)
    emu.faults.update({"reset_after_tokens": 2, "times": 1})
    body = {"messages": MESSAGES, "stream": True}
    with pytest.raises(aiohttp.ClientPayloadError):
        async with http.post(emu.url + CHAT_PATH, json=body, headers=AUTH) as r:
            await r.read()
    async with http.post(emu.url + "/_emulator/faults", json={"bogus": True}) as r:
        assert r.status == 400 and (await r.json())["error"]["status"] == "INVALID_ARGUMENT"
    async with http.get(emu.url + "/_emulator/stats") as r:
        stats = await r.json()
    assert stats["requests"] == 1 and stats["completed"] == 0
