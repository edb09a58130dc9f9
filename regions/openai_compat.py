"""Adapter for self-hosted OpenAI-compatible servers (vLLM, TGI's Messages API).

Speaks ``/v1/chat/completions`` and ``/v1/completions`` with ``stream: true``
and always asks for the usage chunk, so cost and token accounting never depend
on the client's options. Every parsed chunk keeps its original SSE bytes in
``raw``: the HTTP front end forwards them unchanged when the client called the
same API (docs/design.md §8). A chunk that carries both text and a finish reason is
yielded as a TokenDelta (with the bytes) and a Finish whose ``raw`` is ``b""``:
its bytes were already forwarded.

Every byte from the upstream is untrusted: each chunk's shape is checked
(``regions.openai_chunks``) and anything unexpected is STREAM_BROKEN, counted against
the backend; after the finish reason only the usage chunk and ``[DONE]`` are
taken (text and further finishes are dropped) and they must come within
``_TAIL_S``; bodies read whole are capped (:func:`read_capped`).

The body is the client's own (``request.body``), with only :data:`OWNED`
rewritten: tools, ``response_format``, logprobs, ``n``, content parts and
vLLM's extras reach the server as the client sent them.

Resumption (``request.assistant_prefix``) uses vLLM's continue-final-message:
the prefix becomes a final assistant message the model continues; for
completions it is appended to the prompt.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any, Protocol

import aiohttp
import orjson

from regions import embeddings
from regions.errors import BackendError, FailureClass
from regions.events import Event, starts_answer
from regions.inventory import BackendSpec, ProviderKind
from regions.openai_chunks import StreamParser
from regions.pacing import PACER, StreamPacing
from regions.provider import Probe
from regions.request import GenerationRequest, Kind
from regions.sse import MAX_EVENT_BYTES
from regions.trace_context import trace_headers
from regions.transport_errors import TRANSPORT_ERRORS

_DRAIN_S = 1.0
_TAIL_S = 2.0  # after a finish reason, how long the usage chunk and [DONE] may take
_MAX_RETRY_AFTER_S = 86400.0
MAX_BODY_BYTES = 64 * 1024  # an error body read whole
_MAX_METRICS_BYTES = 1 << 20  # vLLM's /metrics is a few tens of KiB


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
    """A backend's ``Retry-After`` in seconds, at most a day; None when absent or
    not a finite, non-negative number (``inf`` once became a 500 in the error headers)."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # HTTP-date form: treat as unknown rather than guess clocks
    if not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, _MAX_RETRY_AFTER_S)


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


OWNED = ("model", "stream", "stream_options", "continue_final_message", "add_generation_prompt")
"""The body members the gateway writes itself; every other member of the client's
body is sent as the client wrote it."""


def build_body(request: GenerationRequest, served_model: str) -> dict[str, Any]:
    """The client's body (``request.body``) with only the gateway's members rewritten:
    the served model, streaming with usage, and resumption. A request built by
    the gateway itself (no body) is built from its modelled fields."""
    if request.body is not None:
        body = {k: v for k, v in request.body.items() if k not in OWNED}
        body["model"] = served_model
        if request.kind is Kind.CHAT and request.assistant_prefix:
            body["messages"] = [
                *body["messages"],
                {"role": "assistant", "content": request.assistant_prefix},
            ]
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        elif request.assistant_prefix:
            body["prompt"] = request.prompt + request.assistant_prefix
        if request.assistant_prefix and request.sampling.max_tokens is not None:
            body.pop("max_completion_tokens", None)
            body["max_tokens"] = request.sampling.max_tokens  # what is left of the limit
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
        return body
    body = {"model": served_model, **request.sampling.as_openai()}
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

    def __init__(
        self,
        spec: BackendSpec,
        session: aiohttp.ClientSession,
        *,
        max_event_bytes: int = MAX_EVENT_BYTES,
    ) -> None:
        self.spec = spec
        self._session = session
        self._max_event_bytes = max_event_bytes
        self._urls = {
            Kind.CHAT: f"{spec.url}/v1/chat/completions",
            Kind.COMPLETION: f"{spec.url}/v1/completions",
            Kind.EMBEDDING: f"{spec.url}/v1/embeddings",
        }

    def passthrough(self, kind: Kind) -> bool:
        return True

    async def close(self) -> None:
        """The session is shared per host and closed by its owner."""

    async def probe(self) -> Probe:
        """``GET /health``; for vLLM also ``/metrics`` for the waiting-queue depth."""
        try:
            async with self._session.get(self.spec.url + "/health") as resp:
                await read_capped(resp)
                if resp.status != 200:
                    return Probe(healthy=False)
            if self.spec.kind is not ProviderKind.VLLM:
                return Probe(healthy=True)
            async with self._session.get(self.spec.url + "/metrics") as resp:
                page = await read_capped(resp, _MAX_METRICS_BYTES) if resp.status == 200 else b""
                text = page.decode("utf-8", "replace")
        except (aiohttp.ClientError, OSError):
            return Probe(healthy=False)
        return Probe(healthy=True, queue_depth=waiting_requests(text))

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        if request.kind is Kind.EMBEDDING and request.body is not None:
            body = embeddings.body(dict(request.body), self.spec.served_model)
        else:
            body = orjson.dumps(build_body(request, self.spec.served_model))
        # The session sends User-Agent, Accept and IDENTITY and does not decompress
        # (regions.registry); the body's payload carries the content type.
        headers = {"x-request-id": request.request_id}
        if trace := trace_headers():  # W3C trace context (regions.trace_context)
            headers.update(trace)
        with TRANSPORT_ERRORS:
            async with self._session.post(
                self._urls[request.kind],
                data=aiohttp.payload.BytesPayload(body, content_type="application/json"),
                headers=headers,
                allow_redirects=False,
            ) as resp:
                if resp.status != 200:
                    raise await _status_error(resp)
                check_identity(resp)
                if request.kind is Kind.EMBEDDING:
                    async for event in embeddings.events(resp, request.choices):
                        yield event
                    return
                parser = StreamParser(
                    request.kind is Kind.CHAT, request.choices, self._max_event_bytes
                )
                progress = parser.progress
                content = resp.content
                # One read at a time, its events yielded from here: no generator per
                # event between the socket and the executor.
                # The first token went out: later reads may wait for a beat. A role-only
                # chunk (vLLM and SGLang write it apart from the first token) is not it.
                started = False
                pacing = StreamPacing(PACER)  # first tokens first (regions.pacing)
                while True:
                    beat = None
                    if progress.finished:
                        piece = await _tail_read(content)
                    else:
                        if started and PACER.lagging and (beat := pacing.beat()) is not None:
                            await beat
                        piece = await content.readany()
                    if not piece:
                        parser.end()
                        return
                    events = parser.feed(piece)
                    if beat is not None:
                        pacing.found(len(events))
                    for event in events:
                        if not started:
                            started = starts_answer(event)
                        yield event
                    if parser.failure is not None:
                        raise parser.failure
                    if parser.done:
                        await drain(resp)
                        return


async def _status_error(resp: aiohttp.ClientResponse) -> BackendError:
    failure = classify_status(resp.status)
    try:
        detail = orjson.loads(await read_capped(resp))
        err = detail.get("error", detail) if isinstance(detail, dict) else detail
        message = str(err.get("message", "")) if isinstance(err, dict) else str(err)
    except (ValueError, aiohttp.ClientError, ConnectionError):
        message = ""
    return BackendError(
        failure,
        f"upstream status {resp.status}" + (f": {message[:300]}" if message else ""),
        status=resp.status,
        retry_after=parse_retry_after(resp.headers.get("retry-after")),
    )


IDENTITY = {"Accept-Encoding": "identity"}
"""Asked of every backend, with ``auto_decompress=False``: a compressed body would
let a few KiB from a peer inflate to megabytes in one read (a decompression bomb).
Requests also go with ``allow_redirects=False``: a redirect is a misconfigured
backend (SERVER by its status), not a host to send the request and its
credentials to."""


def check_identity(resp: aiohttp.ClientResponse) -> None:
    """A stream must come as it is: one compressed anyway is a broken stream."""
    encoding = resp.headers.get(aiohttp.hdrs.CONTENT_ENCODING)
    if encoding is None:
        return
    encoding = encoding.strip().lower()
    if encoding not in ("", "identity"):
        raise BackendError(
            FailureClass.STREAM_BROKEN, f"a {encoding[:32]!r}-encoded stream, not asked for"
        )


async def read_capped(resp: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> bytes:
    """At most ``limit`` bytes of a body the gateway reads whole (an error body,
    ``/metrics``): a peer cannot make the gateway buffer more than that."""
    parts: list[bytes] = []
    size = 0
    while size < limit:
        piece = await resp.content.read(limit - size)
        if not piece:
            break
        parts.append(piece)
        size += len(piece)
    return b"".join(parts)


class Progress(Protocol):
    """What a decoder knows of the answer that the reader of its bytes needs."""

    started: bool  # the answer's first event was decoded (regions.events.starts_answer)
    finished: bool  # a finish reason has arrived
    decoded: int  # events decoded so far


async def body_pieces(resp: aiohttp.ClientResponse, progress: Progress) -> AsyncIterator[bytes]:
    """The body's reads; once ``progress.finished`` (a finish reason arrived), each must come
    within ``_TAIL_S``: the usage chunk and the end follow the finish at once, and a
    backend that stalls there only delays the end of an answer already complete.
    Once the decoder has ``started``, reads may wait for the pacer's beat while the
    loop lags (regions.pacing), under the same slow-stream rule as the
    OpenAI-compatible reader (``StreamPacing``; the caller decodes each piece before
    it asks for the next): a first event split over several reads is not paced."""
    reads = resp.content.iter_any().__aiter__()
    pacing = StreamPacing(PACER)
    while True:
        beat = None
        try:
            if progress.finished:
                async with asyncio.timeout(_TAIL_S):
                    piece = await anext(reads)
            else:
                if progress.started and PACER.lagging and (beat := pacing.beat()) is not None:
                    await beat
                piece = await anext(reads)
        except StopAsyncIteration:
            return
        except TimeoutError:
            raise BackendError(
                FailureClass.TIMEOUT, f"no end of stream within {_TAIL_S} s of the finish reason"
            ) from None
        before = progress.decoded
        yield piece
        if beat is not None:
            pacing.found(progress.decoded - before)


async def _tail_read(content: aiohttp.StreamReader) -> bytes:
    """A read after the finish reason: the usage chunk and the end come at once."""
    try:
        async with asyncio.timeout(_TAIL_S):
            return await content.readany()
    except TimeoutError:
        raise BackendError(
            FailureClass.TIMEOUT, f"no end of stream within {_TAIL_S} s of the finish reason"
        ) from None


async def drain(resp: aiohttp.ClientResponse) -> None:
    """Read to the end of the body, discarding it, for at most ``_DRAIN_S``.

    After ``[DONE]`` the chunked terminator follows at once: a response left
    unread closes its connection instead of returning it to the keep-alive
    pool, and a new TCP connection per request costs more than everything else
    the gateway does. A peer that keeps sending only gets its connection closed.
    """
    if resp.content.at_eof():
        return
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_DRAIN_S):
            while await resp.content.readany():
                pass
