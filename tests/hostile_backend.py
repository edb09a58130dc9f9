"""A backend that plays any byte script: the hostile upstream of the issue-20 tests.

It answers the vLLM routes (``/v1/chat/completions``, ``/v1/completions``,
``/health``, ``/metrics``), Vertex's ``streamRawPredict`` (the script as it
is) and SageMaker's ``invocations-response-stream``
(each piece of the script wrapped in a ``PayloadPart`` frame, or sent as raw
frame bytes with :class:`Raw`), so the same script exercises the gateway's
SSE splitter, its OpenAI chunk parser, the payload decoder and the
event-stream decoder.

A script is a sequence of steps, played in order on one response:

- ``bytes``: written as they are (one write, so one chunk of the body);
- :class:`Sleep`: a pause (a slow drip is bytes and sleeps interleaved);
- :class:`Repeat`: the same bytes written ``times`` times (a huge event or
  an endless line without keeping it in memory here);
- ``STALL``: stop sending and keep the connection open until the client leaves;
- ``RESET``: abort the TCP connection (RST);
- the end of the script ends the body normally (chunked terminator).

``status`` other than 200 answers with that status and the script as body.
Helpers build the pieces of a well-formed vLLM stream, so a test can say
"a correct answer, then garbage" in one line.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from regions.eventstream import payload_part

SERVED = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(frozen=True, slots=True)
class Repeat:
    data: bytes
    times: int


@dataclass(frozen=True, slots=True)
class Raw:
    """Bytes sent unwrapped on the SageMaker route (frame-level garbage)."""

    data: bytes


STALL = "stall"
RESET = "reset"

Step = bytes | Sleep | Repeat | Raw | str


@dataclass
class Script:
    steps: Sequence[Step]
    status: int = 200
    content_type: str = "text/event-stream"
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class HostileStats:
    requests: int = 0
    running: int = 0
    bodies: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)


class HostileBackend:
    """One server; ``script`` (a Script, or a function of the request number and
    body returning one) decides what each generation request gets."""

    def __init__(self, script: Script | Callable[[int, dict[str, Any]], Script]) -> None:
        self.script = script
        self.stats = HostileStats()
        self._runner: web.AppRunner | None = None
        self._transports: set[asyncio.Transport] = set()
        self.url = ""

    async def start(self) -> str:
        app = web.Application(client_max_size=8 << 20)
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/endpoints/{name}/invocations-response-stream", self._sagemaker)
        # Vertex's streamRawPredict (``…/endpoints/{id}:streamRawPredict``): plain SSE.
        app.router.add_post(
            "/v1/projects/{project}/locations/{location}/endpoints/{endpoint}", self._generate
        )
        app.router.add_get("/health", self._ok)
        app.router.add_get("/metrics", self._ok)
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        for transport in list(self._transports):
            transport.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _ok(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    def _take(self, body: dict[str, Any]) -> Script:
        number = self.stats.requests
        self.stats.requests += 1
        self.stats.bodies.append(body)
        return self.script(number, body) if callable(self.script) else self.script

    async def _generate(self, request: web.Request) -> web.StreamResponse:
        return await self._play(request, wrap=None)

    async def _sagemaker(self, request: web.Request) -> web.StreamResponse:
        return await self._play(request, wrap=payload_part)

    async def _play(
        self, request: web.Request, wrap: Callable[[bytes], bytes] | None
    ) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.stats.headers.append(dict(request.headers))
        script = self._take(body if isinstance(body, dict) else {})
        content_type = (
            "application/vnd.amazon.eventstream" if wrap is not None else script.content_type
        )
        response = web.StreamResponse(
            status=script.status, headers={"Content-Type": content_type, **script.headers}
        )
        transport = request.transport
        if transport is not None:
            self._transports.add(transport)
        self.stats.running += 1
        try:
            await response.prepare(request)
            for step in script.steps:
                if isinstance(step, Sleep):
                    await asyncio.sleep(step.seconds)
                elif isinstance(step, Repeat):
                    piece = wrap(step.data) if wrap is not None else step.data
                    for _ in range(step.times):
                        await response.write(piece)
                elif isinstance(step, Raw):
                    await response.write(step.data)
                elif step == STALL:
                    await asyncio.Event().wait()
                elif step == RESET:
                    if transport is not None:
                        transport.abort()
                    return response
                elif isinstance(step, bytes):
                    await response.write(wrap(step) if wrap is not None else step)
            await response.write_eof()
        except ConnectionError:
            pass
        finally:
            self.stats.running -= 1
            if transport is not None:
                self._transports.discard(transport)
        return response


# -- pieces of a well-formed vLLM stream ---------------------------------------------


def chunk(
    content: str | None = None,
    finish: str | None = None,
    *,
    role: bool = False,
    model: str = SERVED,
    chat: bool = True,
) -> dict[str, Any]:
    if chat:
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if content is not None:
            delta["content"] = content
        choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish}
    else:
        choice = {"index": 0, "text": content or "", "finish_reason": finish}
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": 1700000000,
        "model": model,
        "choices": [choice],
    }


def usage_chunk(prompt: int, completion: int, model: str = SERVED) -> dict[str, Any]:
    return {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def sse(obj: Any) -> bytes:
    """One SSE event of a JSON value (or of raw bytes, sent as they are)."""
    data = obj if isinstance(obj, bytes) else orjson.dumps(obj)
    return b"data: " + data + b"\n\n"


DONE = b"data: [DONE]\n\n"


def answer(tokens: Iterable[str], finish: str = "stop", *, usage: bool = True) -> list[bytes]:
    """The events of a correct chat answer: role chunk, one chunk per token (the
    last with its finish reason), the usage chunk, ``[DONE]``."""
    words = list(tokens)
    events = [sse(chunk("", role=True))]
    for i, word in enumerate(words):
        events.append(sse(chunk(word, finish if i == len(words) - 1 else None)))
    if usage:
        events.append(sse(usage_chunk(3, len(words))))
    events.append(DONE)
    return events
