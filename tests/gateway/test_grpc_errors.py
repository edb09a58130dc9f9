"""gRPC status codes: each failure of the request path, as a client reads it."""

from __future__ import annotations

import math

import aiohttp
import grpc
import pytest
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from gateway.grpc.status import Refusal, code_for, rich_details
from meridian_proto.meridian.v1 import inference_pb2 as pb
from tests.conftest import MODEL, EmulatorFactory, GatewayFactory
from tests.gateway.test_grpc_helpers import auth, chat, grpc_config, one_backend, stub, trailers
from tests.gateway.test_metrics_requests import scrape, total


async def rpc_error(coro) -> grpc.aio.AioRpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await coro
    return caught.value


async def test_missing_or_wrong_key_is_unauthenticated(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        errors = [
            await rpc_error(s.Chat(chat(), metadata=auth("sk-wrong"))),
            await rpc_error(s.Chat(chat())),
            await rpc_error(s.Chat(chat(), metadata=(("authorization", "Basic abc"),))),
            await rpc_error(s.StreamChat(chat(), metadata=auth("sk-wrong")).read()),
            await rpc_error(s.ListModels(pb.ListModelsRequest(), metadata=auth("sk-wrong"))),
        ]
    for err in errors:
        assert err.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "sk-wrong" not in (err.details() or "")  # no secret echoed back
        assert trailers(err)["meridian-error-code"] == "invalid_api_key"
        assert len(trailers(err)["x-request-id"]) == 32
    assert em.stats.requests == 0


@pytest.mark.parametrize(
    ("request_", "param", "message"),
    [
        (pb.ChatRequest(model=MODEL), "messages", "messages"),
        (chat(model=""), "model", "model"),
        (chat(0), "sampling.max_tokens", "sampling.max_tokens: "),
        (chat(temperature=2.5), "sampling.temperature", "less than or equal to 2"),
        (chat(temperature=math.nan), "sampling.temperature", "finite"),
        (chat(top_p=1.5), "sampling.top_p", "sampling.top_p: "),
        (chat(presence_penalty=-3.0), "sampling.presence_penalty", "greater than"),
        (chat(stop=["a", "b", "c", "d", "e"]), "sampling.stop", "at most 4"),
        (
            pb.ChatRequest(model=MODEL, messages=[pb.Message(role="wizard", content="hi")]),
            "messages.0.role",
            "messages.0.role: ",
        ),
    ],
)
async def test_bad_requests_are_invalid_argument_with_the_field(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    request_: pb.ChatRequest,
    param: str,
    message: str,
) -> None:
    em, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        err = await rpc_error(s.Chat(request_, metadata=auth()))
        streamed = await rpc_error(s.StreamChat(request_, metadata=auth()).read())
    assert err.code() == streamed.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.details() or "")
    assert trailers(err)["meridian-error-param"] == param
    assert trailers(err)["meridian-error-code"] == "invalid_request_error"
    assert em.stats.requests == 0


async def test_unknown_model_is_not_found(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        err = await rpc_error(s.Chat(chat(model="no-such-model"), metadata=auth()))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert trailers(err)["meridian-error-code"] == "model_not_found"


async def test_all_backends_failing_is_unavailable_with_retry_after(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    em.faults.update({"status": 429, "retry_after": 7})
    async with stub(gw) as s:
        err = await rpc_error(s.StreamChat(chat(), metadata=auth()).read())
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    md = trailers(err)
    assert md["retry-after"] == "7"
    assert md["meridian-error-code"] == "upstream_unavailable"
    assert md["x-meridian-attempts"] == "1"
    assert "x-meridian-backend" not in md  # nothing was served


async def test_model_rejecting_the_request_is_invalid_argument(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    em.faults.update({"status": 400})
    async with stub(gw) as s:
        err = await rpc_error(s.Chat(chat(), metadata=auth()))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert em.stats.requests == 1  # not retried elsewhere


async def test_failure_after_the_first_token_ends_with_a_non_ok_status(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    em.faults.update({"reset_after_tokens": 3})
    async with stub(gw) as s:
        call = s.StreamChat(chat(20), metadata=auth())
        texts = []
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for chunk in call:
                texts.append(chunk.text)
        unary = await rpc_error(s.Chat(chat(20), metadata=auth()))
    assert len(texts) == 3  # what was produced arrived, then an explicit failure
    assert caught.value.code() == unary.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(caught.value)["meridian-error-code"] == "stream_failed"
    assert trailers(caught.value)["x-meridian-backend"] == "fra"  # who failed mid-stream
    assert "mid-stream" in (caught.value.details() or "")


async def test_oversized_request_is_resource_exhausted(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(
        grpc_config([("fra", "onprem:fra1", "v1", em.url)], limits={"max_body_bytes": 4096})
    )
    async with stub(gw) as s:
        err = await rpc_error(s.Chat(chat(content="x" * 5000), metadata=auth()))
        ok = await s.Chat(chat(2, content="x" * 3000), metadata=auth())
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ok.text
    assert em.stats.requests == 1


def test_http_statuses_map_to_grpc_codes() -> None:
    assert code_for(400) == grpc.StatusCode.INVALID_ARGUMENT
    assert code_for(401) == grpc.StatusCode.UNAUTHENTICATED
    assert code_for(403) == grpc.StatusCode.PERMISSION_DENIED
    assert code_for(404) == grpc.StatusCode.NOT_FOUND
    assert code_for(429) == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert code_for(499) == grpc.StatusCode.CANCELLED
    assert code_for(502) == code_for(503) == grpc.StatusCode.UNAVAILABLE
    assert code_for(504) == grpc.StatusCode.DEADLINE_EXCEEDED
    assert code_for(500) == code_for(418) == grpc.StatusCode.INTERNAL


def test_rate_limit_refusal_carries_retry_info() -> None:
    refusal = Refusal(429, "tenant over its rate", "rate_limited", retry_after=2.2)
    md = dict(refusal.trailing_metadata([("x-request-id", "r1")]))
    assert refusal.grpc_code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert md["retry-after"] == "3"  # whole seconds, rounded up, as the HTTP header
    assert md["meridian-error-code"] == "rate_limited"
    assert md["x-request-id"] == "r1"


def test_rich_status_details_decode_with_googleapis_protos() -> None:
    refusal = Refusal(429, "slow down", "rate_limited", retry_after=1.5, param="x")
    status = status_pb2.Status.FromString(rich_details(refusal))
    assert status.code == grpc.StatusCode.RESOURCE_EXHAUSTED.value[0]
    assert status.message == "slow down"
    retry = error_details_pb2.RetryInfo()
    info = error_details_pb2.ErrorInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert any(d.Unpack(info) for d in status.details)
    assert retry.retry_delay.ToNanoseconds() == 1_500_000_000
    assert (info.reason, info.domain) == ("RATE_LIMITED", "meridian.v1")


async def test_clients_decode_the_rich_status_with_grpc_status(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em, gw = await one_backend(emulators, gateways)
    em.faults.update({"status": 429, "retry_after": 7})
    async with stub(gw) as s:
        err = await rpc_error(s.Chat(chat(), metadata=auth()))
    status = rpc_status.from_call(err)
    assert status is not None and status.message == err.details()
    retry = error_details_pb2.RetryInfo()
    assert any(d.Unpack(retry) for d in status.details)
    assert retry.retry_delay.seconds == 7


async def test_embeddings_that_are_not_floats_are_counted_as_the_502_the_client_got(
    gateways: GatewayFactory,
) -> None:
    # base64 vectors pass the adapter's shape check but EmbedResponse carries floats only
    async def embeddings(request: web.Request) -> web.Response:
        return web.json_response({"data": [{"index": 0, "embedding": "AACAPw=="}]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}"
        gw = await gateways(grpc_config([("fra", "onprem:fra1", "v1", url)]))
        async with stub(gw) as s:
            err = await rpc_error(
                s.Embed(pb.EmbedRequest(model=MODEL, input=["x"]), metadata=auth())
            )
        async with aiohttp.ClientSession() as session:
            samples = await scrape(session, gw.admin_url)
    finally:
        await runner.cleanup()
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert trailers(err)["meridian-error-code"] == "upstream_error"
    name = "meridian_requests_total"
    assert total(samples, name, status="502", reason="upstream_error") == 1
    assert total(samples, name, status="200") == 0
