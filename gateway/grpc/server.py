"""The gRPC listener: ``meridian.v1.Inference``, ``grpc.health.v1`` and reflection.

A ``grpc.aio`` server on the event loop that runs the HTTP listener (uvloop in
production): grpc.aio schedules its handlers on the running loop, so the
Inference handlers share the pipeline, its upstream pools and its metrics with
HTTP without any locking or thread hop.

Health follows the gateway's lifecycle: NOT_SERVING until the gateway is
ready, SERVING while it is, NOT_SERVING from the moment it starts draining
(before new calls are refused, so balancers stop sending first), for the whole
server (``""``) and for ``meridian.v1.Inference``.

Stopping: the gateway drains first (:meth:`GrpcServer.draining`, then
``Lifecycle.drain`` lets calls finish or cuts them with UNAVAILABLE), and only
then :meth:`GrpcServer.stop` closes the listener, giving the calls that were
just cut a moment to flush their status.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any

import grpc
from google.protobuf.message import DecodeError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from gateway.config.model import Limits, Timeouts
from gateway.grpc.service import InferenceService
from gateway.grpc.status import Refusal
from gateway.http.errors import INVALID_REQUEST
from gateway.observe.tracing import Tracing
from gateway.pipeline.core import Pipeline
from gateway.security.tls import GrpcCert, ListenerTLS
from meridian_proto.meridian.v1 import inference_pb2

SERVICE_NAME: str = inference_pb2.DESCRIPTOR.services_by_name["Inference"].full_name
_HEALTH_NAME: str = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
_STOP_GRACE_S = 1.0  # after the drain: time for cut calls to send their status

_MIB = 1024 * 1024


def server_options(
    limits: Limits, timeouts: Timeouts, *, reuse_port: bool
) -> list[tuple[str, Any]]:
    """Channel arguments of the listener, each set on purpose."""
    return [
        # Requests: the same size limit as an HTTP body, so the two front ends
        # accept the same prompts; grpc answers RESOURCE_EXHAUSTED above it.
        ("grpc.max_receive_message_length", limits.max_body_bytes),
        # Responses: a unary Chat answer holds a whole generation, which can
        # outgrow the default 4 MiB; chunks are tiny. Clients receiving long
        # unary answers must raise their own (default 4 MiB) receive limit.
        ("grpc.max_send_message_length", 64 * _MIB),
        # Keepalive: ping an idle connection every 60 s and drop it if the
        # ping is not answered in 20 s, so a client that vanished (no FIN)
        # frees its streams and their upstream attempts. A stream may be
        # silent for up to the first-token timeout (30 s by default).
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        # Accept client keepalive pings every 10 s, even between calls:
        # internal services keep pooled channels warm this way, and the
        # default policy (one ping per 5 min) would answer them with GOAWAY
        # "too_many_pings" and break their channels.
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 10_000),
        ("grpc.http2.max_ping_strikes", 2),
        # Rotate connections every 30 min so clients re-resolve and spread
        # over replicas; a stream in flight gets the total request timeout
        # to finish before the connection is closed under it.
        ("grpc.max_connection_age_ms", 30 * 60_000),
        ("grpc.max_connection_age_grace_ms", int(timeouts.total_s * 1000)),
        # grpc sets SO_REUSEPORT by default, which would let a second gateway
        # bind the same port silently; only `--workers N` shares it on purpose.
        ("grpc.so_reuseport", 1 if reuse_port else 0),
    ]


def method_handlers(service: InferenceService) -> dict[str, Any]:
    """The service's RPCs, derived from the proto's own service descriptor.

    What the generated ``add_InferenceServicer_to_server`` does, without its
    typing, which assumes streaming handlers are generators (these write with
    ``context.write``; see ``gateway.grpc.service``). Deriving the table from
    the descriptor keeps it in step with the ``.proto``: an RPC added there
    without a handler fails at startup, not at the first call.
    """
    handlers: dict[str, Any] = {}
    for method in inference_pb2.DESCRIPTOR.services_by_name["Inference"].methods:
        if method.client_streaming:
            raise NotImplementedError(f"{method.full_name}: client streaming is not served")
        request = getattr(inference_pb2, method.input_type.name)
        response = getattr(inference_pb2, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            _decoding(getattr(service, method.name), request),
            request_deserializer=None,  # the handler gets the bytes: see _decoding
            response_serializer=response.SerializeToString,
        )
    return handlers


def _decoding(handler: Callable[[Any, Any], Awaitable[Any]], message: Any) -> Any:
    """``handler`` fed the parsed request; bytes that are not a ``message`` end the
    call with INVALID_ARGUMENT. A deserializer that raises would make grpc answer
    UNKNOWN with the exception's class name, before any handler code runs."""
    name: str = message.DESCRIPTOR.full_name

    async def run(raw: bytes, context: Any) -> Any:
        try:
            request = message.FromString(raw)
        except DecodeError:
            refusal = Refusal(400, f"the request is not a valid {name} message", INVALID_REQUEST)
            md = refusal.trailing_metadata([("x-request-id", uuid.uuid4().hex)])
            await context.abort(refusal.grpc_code, refusal.message, md)
            raise AssertionError("unreachable: abort raises") from None
        return await handler(request, context)

    return run


class GrpcServer:
    """The listener over ``pipeline`` (the one HTTP uses); ``models``: the model names,
    read per call (the routing snapshot's); ``limits`` and ``timeouts``: the start
    config's, which the channel options take once (a reload cannot change them)."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        models: Callable[[], Collection[str]],
        tracing: Tracing | None,
        limits: Limits,
        timeouts: Timeouts,
        reuse_port: bool = False,
    ) -> None:
        options = server_options(limits, timeouts, reuse_port=reuse_port)
        self._server: Any = grpc.aio.server(options=options)
        self._health = health.aio.HealthServicer()
        service = InferenceService(pipeline, models=models, tracing=tracing)
        handlers = method_handlers(service)
        self._server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),)
        )
        self._server.add_registered_method_handlers(SERVICE_NAME, handlers)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, _HEALTH_NAME, reflection.SERVICE_NAME), self._server
        )
        self.address = ""

    async def start(self, address: str, tls: ListenerTLS | None = None) -> str:
        """Bind ``address`` (HOST:PORT, port 0 = any) and serve; returns HOST:PORT bound."""
        await self._set(health_pb2.HealthCheckResponse.NOT_SERVING)
        host, _, _ = address.rpartition(":")
        if tls is not None:  # TLS 1.2+, h2, certificate re-read on change (gateway.security.tls)
            port = self._server.add_secure_port(address, GrpcCert(tls).credentials)
        else:
            port = self._server.add_insecure_port(address)
        if not port:
            raise OSError(f"cannot bind the gRPC listener to {address}")
        await self._server.start()
        self.address = f"{host}:{port}"
        return self.address

    async def ready(self) -> None:
        """Health SERVING: the gateway accepts requests."""
        await self._set(health_pb2.HealthCheckResponse.SERVING)

    async def draining(self) -> None:
        """Health NOT_SERVING for good: the gateway is shutting down."""
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace: float = _STOP_GRACE_S) -> None:
        """Close the listener; calls still open after ``grace`` s are cancelled."""
        await self._server.stop(grace)

    async def _set(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            await self._health.set(name, status)
