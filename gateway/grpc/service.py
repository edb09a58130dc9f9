"""The ``meridian.v1.Inference`` service: the gRPC edge stage of the pipeline.

The gRPC sibling of ``gateway.http.api``, over the same
:class:`gateway.pipeline.core.Pipeline`: admit (draining? key? valid request?
residency?) → route → execute until a first token → stream (or collect)
→ record. Only the wire format differs. Who served the call (``Served``)
rides on the first chunk (or the unary response) and in the trailing
metadata under the HTTP API's header names; no initial metadata is sent
before the first token, as that would cost a round trip on the first token.

A call's life, and the status it ends with (``gateway.grpc.status``):

    admitted ──> first token ──> chunks (the first with Served) ──> OK
       │              │                        │
       └ refused      └ every attempt failed   ├ backend died: UNAVAILABLE
         (401/400/      (ExecutionFailed:      ├ client deadline: DEADLINE_EXCEEDED
          403/404/503)   UNAVAILABLE...)       ├ client cancelled: CANCELLED
                                               └ drain cut it: UNAVAILABLE

Deadlines and cancellation reach the backend attempt because everything runs
in the RPC's own task: grpc.aio cancels that task when the client cancels or
its deadline passes, and the handler also bounds itself by the deadline it was
sent (``asyncio.timeout``), so the upstream stream is closed either way and the
backend sees the disconnect. Streaming uses ``context.write`` rather than an
async generator so that a cancellation always lands inside this code, which
closes the upstream at once, instead of in a suspended generator that would
only be closed when garbage-collected. ``write`` waits for HTTP/2 flow
control, which gives the same backpressure as the HTTP front end: a client
that stops reading stops the upstream being read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any, Protocol, TypeVar

import grpc
import orjson

from failover.executor import Execution, ExecutionFailed
from gateway.grpc.convert import (
    ChunkEncoder,
    Request,
    residency_narrowing,
    served,
    served_metadata,
    token_logprobs,
    tool_call,
    usage_message,
)
from gateway.grpc.status import Refusal
from gateway.grpc.validate import embed_request, generation_request
from gateway.http.assemble import Assembler
from gateway.http.errors import INVALID_REQUEST
from gateway.http.schema import BadRequest
from gateway.observe import tracing
from gateway.observe.tracing import Tracing
from gateway.pipeline.core import RESIDENCY_HEADER, Pipeline, log_refusal
from gateway.security.keys import KeyExpired
from gateway.security.tls import grpc_identities
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.embeddings import floats
from regions.events import Event, Finish, StreamError, TokenDelta, Usage
from regions.request import GenerationRequest, Kind
from routing.capabilities import MissingCapability
from routing.plan import Plan, RoutingError

log = logging.getLogger("meridian.grpc")

Context = Any  # grpc.aio.ServicerContext: grpcio ships no type information
T = TypeVar("T")
R = TypeVar("R", covariant=True)


class _Call:
    """One RPC's context and the facts its trailing metadata reports."""

    __slots__ = ("attempts", "context", "request_id", "route", "served")

    def __init__(self, context: Context) -> None:
        self.context = context
        self.request_id = uuid.uuid4().hex
        self.attempts: int | None = None
        self.served: pb.Served | None = None
        self.route: str | None = None  # the plan, for tenants allowed to see it

    def header(self, name: str) -> str | None:
        """The one value of metadata ``name``; a Refusal (400) when sent twice, as
        the HTTP API refuses a second ``Authorization``."""
        values = [v for k, v in self.context.invocation_metadata() or () if k == name]
        if len(values) > 1:
            raise Refusal(400, f"send exactly one {name} metadata entry", INVALID_REQUEST)
        return str(values[0]) if values else None

    def remaining(self) -> float | None:
        """Seconds left before the client's deadline; None when it set none."""
        left: float | None = self.context.time_remaining()
        return left

    def metadata(self) -> list[tuple[str, str]]:
        """The HTTP API's response headers, as far as they are known now."""
        if self.served is not None:
            md = list(served_metadata(self.served))
        else:
            md = [("x-request-id", self.request_id)]
            if self.attempts is not None:
                md.append(("x-meridian-attempts", str(self.attempts)))
        if self.route is not None:
            md.append(("x-meridian-route", self.route))
        return md


class _Collector:
    """Assembles a unary answer from the events (the HTTP API's non-stream ``collect``):
    text, finish reason, tool calls and logprobs, by the same Assembler."""

    __slots__ = ("assembler", "finish", "parts", "sent")

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.finish = "stop"
        self.assembler = Assembler(Kind.CHAT)
        self.sent = 0  # nothing reaches the client before the reply

    async def take(self, event: Event) -> None:
        self.assembler.take(event)
        if isinstance(event, TokenDelta):
            self.parts.append(event.text)
        elif isinstance(event, Finish):
            self.finish = event.reason

    def reply(self, who: pb.Served, usage: Usage | None) -> pb.ChatResponse:
        response = pb.ChatResponse(text="".join(self.parts), finish_reason=self.finish, served=who)
        message = self.assembler.first()
        if message is not None:
            response.tool_calls.extend(tool_call(c) for c in message.get("tool_calls") or ())
            response.logprobs.extend(token_logprobs(self.assembler.first_logprobs()))
        if usage is not None:
            response.usage.CopyFrom(usage_message(usage))
        self.sent = response.ByteSize()
        return response


class _Embeddings:
    """Keeps the one answer of an embedding request (its body as the backend wrote it)."""

    __slots__ = ("raw", "sent")

    def __init__(self) -> None:
        self.raw = b""
        self.sent = 0

    async def take(self, event: Event) -> None:
        if isinstance(event, TokenDelta) and event.raw:
            self.raw = event.raw

    def reply(self, who: pb.Served, usage: Usage | None) -> pb.EmbedResponse:
        """The reply; Refusal(502) when the backend's vectors are not floats (regions'
        check lets base64 through, which this message cannot carry)."""
        try:
            data = orjson.loads(self.raw)["data"]
            # floats() refuses what a float32 field would alter in silence (1e39, true)
            found = [floats(d["embedding"]) for d in data]
            vectors = [pb.Embedding(index=i, values=v) for i, v in enumerate(found) if v]
            if len(vectors) != len(found):
                raise ValueError("not float32 vectors")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise Refusal(
                502, "the backend's embeddings were not floats", "upstream_error"
            ) from None
        response = pb.EmbedResponse(data=vectors, served=who)
        if usage is not None:
            response.usage.CopyFrom(usage_message(usage))
        self.sent = response.ByteSize()
        return response


class _Writer:
    """Writes each event's chunk as soon as it exists (streaming calls)."""

    __slots__ = ("context", "encoder", "sent")

    def __init__(self, context: Context, encoder: ChunkEncoder[Any]) -> None:
        self.context = context
        self.encoder = encoder
        self.sent = 0

    async def take(self, event: Event) -> None:
        chunk = self.encoder.encode(event)
        if chunk is not None:
            self.sent += chunk.ByteSize()
            await self.context.write(chunk)

    def reply(self, who: pb.Served, usage: Usage | None) -> None:
        """Nothing: every chunk is written already."""


class Sink(Protocol[R]):
    """Takes a call's events; its reply is built inside the report stage, so the
    status and bytes recorded are the ones the client gets."""

    @property
    def sent(self) -> int:
        """Bytes of messages written to the client so far."""
        ...

    async def take(self, event: Event) -> None: ...

    def reply(self, who: pb.Served, usage: Usage | None) -> R: ...


class InferenceService:
    """The RPC handlers (see ``gateway.grpc.server.method_handlers``); thin over the pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        models: Callable[[], Collection[str]],
        tracing: Tracing | None = None,
    ) -> None:
        self._pipeline = pipeline  # the one the HTTP front end uses (gateway.app.build)
        self._lifecycle = pipeline.lifecycle
        self._model_names = models  # the routing snapshot's, read per call (it is swapped whole)
        self._tracing = tracing

    async def StreamChat(self, request: pb.ChatRequest, context: Context) -> None:
        call = _Call(context)
        await _guard(call, self._stream(call, request, pb.ChatChunk))

    async def Complete(self, request: pb.CompletionRequest, context: Context) -> None:
        call = _Call(context)
        await _guard(call, self._stream(call, request, pb.CompletionChunk))

    async def Chat(self, request: pb.ChatRequest, context: Context) -> pb.ChatResponse:
        call = _Call(context)
        return await _guard(call, self._unary(call, request))

    async def Embed(self, request: pb.EmbedRequest, context: Context) -> pb.EmbedResponse:
        call = _Call(context)
        return await _guard(call, self._embed(call, request))

    async def _embed(self, call: _Call, request: pb.EmbedRequest) -> pb.EmbedResponse:
        return await self._run(call, request, stream=False, sink=lambda _who, _gen: _Embeddings())

    async def ListModels(
        self, request: pb.ListModelsRequest, context: Context
    ) -> pb.ListModelsResponse:
        call = _Call(context)
        return await _guard(call, self._models(call))

    # -- the request path ---------------------------------------------------------

    async def _stream(
        self,
        call: _Call,
        request: Request,
        make: type[pb.ChatChunk] | type[pb.CompletionChunk],
    ) -> None:
        def sink(who: pb.Served, gen: GenerationRequest) -> _Writer:
            rich = "tools" in gen.needs or "logprobs" in gen.needs
            return _Writer(call.context, ChunkEncoder(make, who, gen.include_usage, rich))

        await self._run(call, request, stream=True, sink=sink)

    async def _unary(self, call: _Call, request: pb.ChatRequest) -> pb.ChatResponse:
        return await self._run(call, request, stream=False, sink=lambda _who, _gen: _Collector())

    async def _models(self, call: _Call) -> pb.ListModelsResponse:
        try:
            caller = self._pipeline.authenticate(
                call.header("authorization"), grpc_identities(call.context)
            )
        except KeyExpired as exc:
            raise Refusal(401, str(exc), "invalid_api_key") from None
        if caller is None:
            raise Refusal(401, "Incorrect or missing API key.", "invalid_api_key")
        allowed = caller.tenant.models
        return pb.ListModelsResponse(
            models=[
                pb.Model(id=name, owned_by="meridian")
                for name in sorted(self._model_names())
                if allowed is None or name in allowed
            ]
        )

    def _admit(
        self, call: _Call, request: Request, *, stream: bool
    ) -> tuple[GenerationRequest, Plan]:
        """The edge checks, in the HTTP API's order; raises Refusal."""
        pipeline = self._pipeline
        if self._lifecycle.draining:
            raise Refusal(503, "the gateway is shutting down", "shutting_down", retry_after=1)
        try:
            caller = pipeline.authenticate(
                call.header("authorization"), grpc_identities(call.context)
            )
        except KeyExpired as exc:
            raise Refusal(401, str(exc), "invalid_api_key") from None
        if caller is None:
            raise Refusal(401, "Incorrect or missing API key.", "invalid_api_key")
        try:
            residency = pipeline.residency(caller, residency_narrowing(request))
        except (RoutingError, BadRequest) as exc:  # said in the HTTP API's terms: say it in ours
            message = exc.message.replace(RESIDENCY_HEADER, "routing.residency")
            if isinstance(exc, BadRequest):
                raise Refusal(400, message, INVALID_REQUEST, param="routing.residency") from None
            raise Refusal(exc.status, message, exc.code) from None
        tenant = caller.tenant.name
        digest = caller.key_digest
        rid = call.request_id
        if isinstance(request, pb.EmbedRequest):  # each raises Refusal(400) naming the field
            gen = embed_request(
                request, request_id=rid, tenant=tenant, residency=residency, key_digest=digest
            )
        else:
            gen = generation_request(
                request,
                stream=stream,
                request_id=rid,
                tenant=tenant,
                residency=residency,
                key_digest=digest,
            )
        try:
            plan = pipeline.plan(gen, caller)
        except RoutingError as exc:
            log_refusal(log, call.request_id, caller.tenant.name, exc)
            raise Refusal(
                exc.status,
                exc.tenant_message(call.request_id),
                exc.code,
                param=exc.field if isinstance(exc, MissingCapability) else None,
                retry_after=exc.retry_after,
            ) from None
        if caller.tenant.explain:
            call.route = plan.explain()[:4000]
        return gen, plan

    async def _run(
        self,
        call: _Call,
        request: Request,
        *,
        stream: bool,
        sink: Callable[[pb.Served, GenerationRequest], Sink[R]],
    ) -> R:
        pipeline = self._pipeline
        arrived = time.monotonic()
        try:
            # W3C trace context from metadata, as the HTTP API takes it from headers.
            tracing.begin(
                self._tracing, call.header("traceparent"), call.header("tracestate"), arrived
            )
            gen, plan = self._admit(call, request, stream=stream)
        except Refusal as refusal:  # counted and logged as the HTTP API's refusals are
            pipeline.refused(
                call.request_id, refusal.status, refusal.code or "", client=call.context.peer()
            )
            raise
        execution = pipeline.execution(gen, plan)
        async with pipeline.serving(
            execution, client=call.context.peer(), arrived=arrived
        ) as outcome:
            outcome.request_bytes = request.ByteSize()  # cross-region transfer (config cost)
            deadline = asyncio.timeout(call.remaining())
            try:
                async with deadline:
                    started = time.monotonic()
                    try:
                        head = await execution.start()
                    except ExecutionFailed as exc:
                        call.attempts = len(execution.attempts)
                        raise Refusal(
                            exc.status, exc.message, exc.code, retry_after=exc.retry_after
                        ) from None
                    pipeline.first_token(execution, time.monotonic() - started)
                    serving = execution.serving
                    assert serving is not None, "start() returned, so an attempt is serving"
                    backend = serving.backend
                    call.attempts = len(execution.attempts)
                    who = served(
                        gen.request_id,
                        gen.model,
                        plan.version,
                        backend.name,
                        backend.region.name,
                        call.attempts,
                    )
                    call.served = who
                    # Trailing, not initial metadata: sending initial metadata
                    # is one more completion-queue round trip before the first
                    # token, and the first chunk carries the same facts.
                    call.context.set_trailing_metadata(call.metadata())
                    out = sink(who, gen)
                    try:
                        await _drive(execution, head, out)
                        reply = out.reply(who, execution.usage)
                    finally:
                        outcome.response_bytes = out.sent
            except Refusal as refusal:
                outcome.status = refusal.status
                outcome.reason = refusal.code or ""
                raise
            except TimeoutError:
                if not deadline.expired():
                    raise
                outcome.status = 504
                raise Refusal(504, "the call's deadline expired", "deadline_exceeded") from None
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if self._lifecycle.cutting and task is not None:
                    task.uncancel()  # end with an explicit status, as HTTP ends with an error event
                    outcome.status = 503
                    raise Refusal(
                        503, "the gateway is shutting down", "shutting_down", retry_after=1
                    ) from None
                remaining = call.remaining()
                if remaining is not None and remaining <= 0:
                    outcome.status = 504  # grpc cancelled us at the deadline
                raise
        return reply


async def _drive(execution: Execution, head: list[Event], sink: Sink[object]) -> None:
    """Feed every event to ``sink``; a mid-stream failure becomes a non-OK status."""
    for event in head:
        await sink.take(event)
    async with contextlib.aclosing(execution.events()) as events:
        async for event in events:
            if isinstance(event, StreamError):
                raise Refusal(502, event.message, event.code)
            await sink.take(event)


async def _guard(call: _Call, work: Awaitable[T]) -> T:
    """Run one handler; its Refusal becomes the call's status, a bug becomes INTERNAL."""
    try:
        return await work
    except Refusal as refusal:
        await call.context.abort(
            refusal.grpc_code, refusal.message, refusal.trailing_metadata(call.metadata())
        )
        raise AssertionError("unreachable: abort raises") from None
    except (asyncio.CancelledError, grpc.aio.AbortError):
        raise
    except Exception:
        log.exception("unhandled error in a gRPC handler")
        internal = Refusal(500, "internal error", "internal_error")
        await call.context.abort(
            internal.grpc_code, internal.message, internal.trailing_metadata(call.metadata())
        )
        raise AssertionError("unreachable: abort raises") from None
