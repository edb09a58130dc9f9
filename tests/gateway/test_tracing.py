"""Tracing: W3C trace context in and out, OpenTelemetry spans per request and attempt."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from gateway.observe.tracing import valid_traceparent, valid_tracestate
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    SERVED,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
    wait_for,
)
from tests.gateway.test_grpc_helpers import auth, grpc_config, stub
from tests.gateway.test_grpc_helpers import chat as grpc_chat

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"


class Recorder:
    """A pass-through HTTP hop in front of a backend that keeps each request's headers."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.seen: list[dict[str, str]] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.forward)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self.runner.addresses[0][1]}"

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if request.path.startswith("/v1/"):
            self.seen.append({k.lower(): v for k, v in request.headers.items()})
        body = await request.read()
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                request.method,
                self.upstream + request.path_qs,
                data=body,
                headers={"content-type": request.headers.get("content-type", "")},
            ) as r,
        ):
            response = web.StreamResponse(status=r.status)
            response.content_type = r.content_type
            await response.prepare(request)
            async for chunk in r.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return response

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def recorder(emulators: EmulatorFactory) -> AsyncIterator[Recorder]:
    em = await emulators()
    hop = Recorder(em.url)
    await hop.start()
    yield hop
    await hop.stop()


async def chat(
    s: aiohttp.ClientSession, url: str, headers: dict[str, str], **extra: Any
) -> tuple[int, str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 3}
    async with s.post(
        url + "/v1/chat/completions",
        json={**body, **extra},
        headers={"Authorization": f"Bearer {GLOBAL_KEY}", **headers},
    ) as r:
        await r.read()
        return r.status, r.headers["x-request-id"]


def test_trace_context_is_validated_as_w3c_says() -> None:
    assert valid_traceparent(PARENT)
    assert valid_traceparent(f"01-{TRACE_ID}-00f067aa0ba902b7-01-future")  # a later version
    for bad in (
        None,
        "",
        f"00-{TRACE_ID}-00f067aa0ba902b7-01-extra",  # version 00 has exactly four fields
        f"ff-{TRACE_ID}-00f067aa0ba902b7-01",
        f"00-{'0' * 32}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID.upper()}-00f067aa0ba902b7-01",
        f"00-{TRACE_ID}-00f067aa0ba902b7",
    ):
        assert not valid_traceparent(bad), bad
    assert valid_tracestate("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
    assert not valid_tracestate("x" * 513)
    assert not valid_tracestate("a=\n")


async def test_tracing_off_passes_the_clients_trace_context_to_the_backend_unchanged(
    recorder: Recorder, gateways: GatewayFactory
) -> None:
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", recorder.url)]))
    assert runtime_of(gw).tracing is None
    async with aiohttp.ClientSession() as s:
        status, _ = await chat(
            s, gw.http_url, {"traceparent": PARENT, "tracestate": "rojo=1", "x-request-id": "r-1"}
        )
        assert status == 200
        status, _ = await chat(s, gw.http_url, {"traceparent": "00-bogus"})
        assert status == 200
    first, second = recorder.seen
    assert first["traceparent"] == PARENT and first["tracestate"] == "rojo=1"
    assert first["x-request-id"] == "r-1"
    assert "traceparent" not in second  # an invalid one is not passed on


async def test_spans_for_the_request_its_routing_and_each_attempt(
    recorder: Recorder, gateways: GatewayFactory
) -> None:
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", recorder.url)],
            observability={"tracing": {"enabled": True}},
        )
    )
    tracing = runtime_of(gw).tracing
    assert tracing is not None
    exporter = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with aiohttp.ClientSession() as s:
        status, request_id = await chat(s, gw.http_url, {"traceparent": PARENT}, stream=True)
        assert status == 200
    await wait_for(lambda: any(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()))
    spans = exporter.get_finished_spans()
    (server,) = [s for s in spans if s.kind is SpanKind.SERVER]
    assert server.name == f"chat {MODEL}"
    assert server.context is not None and format(server.context.trace_id, "032x") == TRACE_ID
    assert server.parent is not None and format(server.parent.span_id, "016x") == "00f067aa0ba902b7"
    attrs: dict[str, Any] = dict(server.attributes or {})
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.usage.output_tokens"] == 3 and attrs["gen_ai.usage.input_tokens"] > 0
    assert attrs["meridian.request_id"] == request_id and attrs["meridian.tenant"] == "global"
    assert attrs["meridian.backend"] == "fra" and attrs["http.response.status_code"] == 200
    children = [
        s for s in spans if s.parent is not None and s.parent.span_id == server.context.span_id
    ]
    (route,) = [s for s in children if s.name == "route"]
    assert dict(route.attributes or {})["meridian.route.candidates"] == ("fra",)
    (attempt,) = [s for s in children if s.kind is SpanKind.CLIENT]
    a = dict(attempt.attributes or {})
    assert attempt.name == f"chat {SERVED}" and a["gen_ai.request.model"] == SERVED
    assert a["meridian.attempt.kind"] == "primary" and a["meridian.attempt.outcome"] == "ok"
    assert _within(attempt, server)
    # The backend was called with the request span as its parent, in the client's trace.
    (seen,) = recorder.seen
    assert seen["traceparent"] == f"00-{TRACE_ID}-{server.context.span_id:016x}-01"


async def test_a_failed_attempt_and_a_refusal_are_error_spans(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config(
            [
                ("dead", "onprem:fra1", "v1", "http://127.0.0.1:9"),
                ("fra", "onprem:fra1", "v1", em.url),
            ],
            observability={"tracing": {"enabled": True}},
        )
    )
    tracing = runtime_of(gw).tracing
    assert tracing is not None
    exporter = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with aiohttp.ClientSession() as s:
        for _ in range(4):  # routing picks either first; at least one tries the dead one
            assert (await chat(s, gw.http_url, {}))[0] == 200
        async with s.post(gw.http_url + "/v1/chat/completions", json={}) as r:
            assert r.status == 401

    def servers() -> list[ReadableSpan]:
        return [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]

    await wait_for(lambda: len(servers()) == 5)
    refused = [s for s in servers() if dict(s.attributes or {})["http.response.status_code"] == 401]
    assert len(refused) == 1
    assert dict(refused[0].attributes or {})["error.type"] == "invalid_api_key"
    failed = [
        s
        for s in exporter.get_finished_spans()
        if s.kind is SpanKind.CLIENT and dict(s.attributes or {})["meridian.backend"] == "dead"
    ]
    if failed:  # the dead backend's breaker may have kept later requests off it
        assert failed[0].status.status_code is StatusCode.ERROR
        assert dict(failed[0].attributes or {})["error.type"] == "connect"


def _within(inner: ReadableSpan, outer: ReadableSpan) -> bool:
    assert inner.start_time is not None and inner.end_time is not None
    assert outer.start_time is not None and outer.end_time is not None
    return outer.start_time <= inner.start_time <= inner.end_time <= outer.end_time


async def test_grpc_takes_trace_context_from_metadata(
    recorder: Recorder, gateways: GatewayFactory
) -> None:
    gw = await gateways(
        grpc_config(
            [("fra", "onprem:fra1", "v1", recorder.url)],
            observability={"tracing": {"enabled": True}},
        )
    )
    tracing = runtime_of(gw).tracing
    assert tracing is not None
    exporter = InMemorySpanExporter()
    tracing.provider.add_span_processor(SimpleSpanProcessor(exporter))
    async with stub(gw) as s:
        await s.Chat(grpc_chat(2), metadata=(*auth(), ("traceparent", PARENT)))
    await wait_for(lambda: any(s.kind is SpanKind.SERVER for s in exporter.get_finished_spans()))
    (server,) = [s for s in exporter.get_finished_spans() if s.kind is SpanKind.SERVER]
    assert server.context is not None and format(server.context.trace_id, "032x") == TRACE_ID
    (seen,) = recorder.seen
    assert seen["traceparent"] == f"00-{TRACE_ID}-{server.context.span_id:016x}-01"
