"""Adapter for self-hosted OpenAI-compatible servers (vLLM, TGI's Messages API).

Speaks ``/v1/chat/completions`` and ``/v1/completions`` with ``stream: true``
and always asks for the usage chunk, so cost and token accounting never depend
on the client's options. Every parsed chunk keeps its original SSE bytes in
``raw``: the HTTP front end forwards them unchanged when the client called the
same API (DESIGN.md §8). A chunk that carries both text and a finish reason is
yielded as a TokenDelta (with the bytes) and a Finish whose ``raw`` is ``b""``:
its bytes were already forwarded.

Resumption (``request.assistant_prefix``) uses vLLM's continue-final-message:
the prefix becomes a final assistant message the model continues; for
completions it is appended to the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind
from regions.provider import Probe
from regions.request import GenerationRequest, Kind
from regions.sse import SseSplitter, event_data

_DONE = b"[DONE]"
_DRAIN_S = 1.0


def classify_status(status: int) -> FailureClass:
    """Which failure an upstream HTTP status is, for the failover engine."""
    if status == 429:
        return FailureClass.OVERLOADED
    if status == 408:
        return FailureClass.TIMEOUT
    if status in (400, 413, 422):
        return FailureClass.CLIENT
    # 401/403/404 from a backend mean the backend is misconfigured (wrong
    # served model, wrong credentials), not that the client's request is bad.
    return FailureClass.SERVER


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: treat as unknown rather than guess clocks
    return seconds if seconds >= 0 else None


def waiting_requests(metrics_text: str) -> int | None:
    """Sum of ``vllm:num_requests_waiting`` over its label sets, or None if absent."""
    total, seen = 0.0, False
    for line in metrics_text.splitlines():
        if line.startswith("vllm:num_requests_waiting"):
            try:
                total += float(line.rsplit(" ", 1)[1])
                seen = True
            except (IndexError, ValueError):
                continue
    return int(total) if seen else None


def build_body(request: GenerationRequest, served_model: str) -> dict[str, Any]:
    body: dict[str, Any] = {"model": served_model, **request.sampling.as_openai()}
    if request.kind is Kind.CHAT:
        messages = [{"role": m.role, "content": m.content} for m in request.messages]
        if request.assistant_prefix:
            messages.append({"role": "assistant", "content": request.assistant_prefix})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body["messages"] = messages
    else:
        body["prompt"] = request.prompt + request.assistant_prefix
    body["stream"] = True
    body["stream_options"] = {"include_usage": True}
    return body


class OpenAICompatProvider:
    """One vLLM/TGI server (or a pool behind one address)."""

    def __init__(self, spec: BackendSpec, session: aiohttp.ClientSession) -> None:
        self.spec = spec
        self._session = session
        self._urls = {
            Kind.CHAT: f"{spec.url}/v1/chat/completions",
            Kind.COMPLETION: f"{spec.url}/v1/completions",
        }

    def passthrough(self, kind: Kind) -> bool:
        return True

    async def close(self) -> None:
        """The session is shared per host and closed by its owner."""

    async def probe(self) -> Probe:
        """``GET /health``; for vLLM also ``/metrics`` for the waiting-queue depth."""
        try:
            async with self._session.get(self.spec.url + "/health") as resp:
                await resp.read()
                if resp.status != 200:
                    return Probe(healthy=False)
            if self.spec.kind is not ProviderKind.VLLM:
                return Probe(healthy=True)
            async with self._session.get(self.spec.url + "/metrics") as resp:
                text = await resp.text() if resp.status == 200 else ""
        except (aiohttp.ClientError, OSError):
            return Probe(healthy=False)
        return Probe(healthy=True, queue_depth=waiting_requests(text))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        body = orjson.dumps(build_body(request, self.spec.served_model))
        headers = {"content-type": "application/json", "x-request-id": request.request_id}
        try:
            async with self._session.post(
                self._urls[request.kind], data=body, headers=headers
            ) as resp:
                if resp.status != 200:
                    raise await _status_error(resp)
                async for event in _events(resp, request.kind is Kind.CHAT):
                    yield event
        except BackendError:
            raise
        except aiohttp.ClientConnectorError as exc:
            raise BackendError(FailureClass.CONNECT, f"cannot connect: {exc.os_error}") from None
        except aiohttp.ServerTimeoutError:
            raise BackendError(FailureClass.TIMEOUT, "connect timeout") from None
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise BackendError(FailureClass.STREAM_BROKEN, f"stream broken: {exc!r}") from None


async def _status_error(resp: aiohttp.ClientResponse) -> BackendError:
    failure = classify_status(resp.status)
    try:
        payload = await resp.read()
        detail = orjson.loads(payload)
        err = detail.get("error", detail) if isinstance(detail, dict) else detail
        message = str(err.get("message", "")) if isinstance(err, dict) else str(err)
    except (ValueError, aiohttp.ClientError):
        message = ""
    return BackendError(
        failure,
        f"upstream status {resp.status}" + (f": {message[:300]}" if message else ""),
        status=resp.status,
        retry_after=parse_retry_after(resp.headers.get("retry-after")),
    )


async def _events(resp: aiohttp.ClientResponse, chat: bool) -> AsyncIterator[Event]:
    splitter = SseSplitter()
    finished = False
    async for piece in resp.content.iter_any():
        events = splitter.feed(piece)
        last = len(events) - 1
        for index, event in enumerate(events):
            data = event_data(event)
            if data is None:
                continue
            if data == _DONE:
                if not finished:
                    raise BackendError(FailureClass.STREAM_BROKEN, "[DONE] before a finish reason")
                # Read to the end of the body (the chunked terminator follows at
                # once): a response left unread closes its connection instead of
                # returning it to the keep-alive pool, and a new TCP connection
                # per request costs more than everything else the gateway does.
                if not resp.content.at_eof():
                    with contextlib.suppress(TimeoutError):  # then the connection just closes
                        async with asyncio.timeout(_DRAIN_S):
                            await resp.content.read()
                return
            try:
                chunk = orjson.loads(data)
            except orjson.JSONDecodeError:
                raise BackendError(FailureClass.STREAM_BROKEN, "malformed SSE chunk") from None
            raw = event + b"\n\n"
            error = chunk.get("error")
            if error is not None:
                message = error.get("message", "") if isinstance(error, dict) else str(error)
                raise BackendError(FailureClass.STREAM_BROKEN, f"upstream error: {message[:300]}")
            choices = chunk.get("choices")
            if choices:
                choice = choices[0]
                if chat:
                    text = (choice.get("delta") or {}).get("content") or ""
                else:
                    text = choice.get("text") or ""
                reason = choice.get("finish_reason")
                yield TokenDelta(text, raw, index < last and not reason)
                if reason:
                    finished = True
                    yield Finish(reason, b"")
            else:
                usage = chunk.get("usage")
                if usage:
                    yield Usage(
                        int(usage.get("prompt_tokens", 0)),
                        int(usage.get("completion_tokens", 0)),
                        raw,
                    )
    if finished:
        return  # some servers end without [DONE]; a finish reason is the real end
    raise BackendError(FailureClass.STREAM_BROKEN, "stream ended before a finish reason")
