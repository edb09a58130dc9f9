"""The gRPC front end end to end: a real grpcio client, a real gateway, vLLM emulators."""

from __future__ import annotations

from typing import Any

import aiohttp
import grpc
import pytest

from emulators.text import expected_text, render_chat
from gateway.config.model import TenantConfig
from meridian_proto.meridian.v1 import inference_pb2 as pb
from tests.conftest import EU_KEY, GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, sha
from tests.gateway.test_grpc_helpers import (
    PROMPT,
    auth,
    chat,
    grpc_config,
    one_backend,
    stub,
    trailers,
)

EXPECTED_CONTEXT = render_chat([("user", PROMPT)], False)


async def test_stream_chat_sends_tokens_finish_usage_and_served_metadata(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        call = s.StreamChat(chat(12, include_usage=True), metadata=auth())
        chunks = [c async for c in call]
        trailing = dict(await call.trailing_metadata())
        assert await call.code() == grpc.StatusCode.OK
    assert "".join(c.text for c in chunks) == expected_text(EXPECTED_CONTEXT, 12)
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["length"]
    usages = [c.usage for c in chunks if c.HasField("usage")]
    assert len(usages) == 1 and usages[0].completion_tokens == 12
    assert usages[0].total_tokens == usages[0].prompt_tokens + 12
    served = chunks[0].served
    assert (served.backend, served.region, served.version, served.attempts) == (
        "fra",
        "onprem:fra1",
        "v1",
        1,
    )
    assert served.model == MODEL and len(served.request_id) == 32
    assert not any(c.HasField("served") for c in chunks[1:])
    assert trailing["x-request-id"] == served.request_id  # repeated for interceptors
    assert trailing["x-meridian-backend"] == "fra"
    assert trailing["x-meridian-region"] == "onprem:fra1"
    assert trailing["x-meridian-version"] == "v1"
    assert trailing["x-meridian-attempts"] == "1"


async def test_usage_only_when_asked_and_no_empty_chunks(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        chunks = [c async for c in s.StreamChat(chat(5), metadata=auth())]
    assert not any(c.HasField("usage") for c in chunks)
    assert all(c.text or c.finish_reason for c in chunks)


async def test_unary_chat_completion_and_model_list(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        call = s.Chat(chat(5), metadata=auth())
        response = await call
        trailing = dict(await call.trailing_metadata())
        chunks = [
            c
            async for c in s.Complete(
                pb.CompletionRequest(
                    model=MODEL, prompt="Once upon", sampling=pb.Sampling(max_tokens=7)
                ),
                metadata=auth(),
            )
        ]
        models = await s.ListModels(pb.ListModelsRequest(), metadata=auth())
    assert response.text == expected_text(EXPECTED_CONTEXT, 5)
    assert response.finish_reason == "length"
    assert response.usage.completion_tokens == 5  # a unary answer always has usage
    assert response.served.backend == "fra" and trailing["x-meridian-attempts"] == "1"
    assert "".join(c.text for c in chunks) == expected_text("Once upon", 7)
    assert chunks[0].served.backend == "fra"
    assert [(m.id, m.owned_by) for m in models.models] == [(MODEL, "meridian")]


async def test_same_request_same_answer_as_http(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    params: dict[str, Any] = {
        "max_tokens": 9,
        "temperature": 0.5,
        "top_p": 0.9,
        "seed": 7,
        "stop": ["zzz"],
    }
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], **params}
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            gw.http_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
        ) as resp,
    ):
        assert resp.status == 200
        over_http = await resp.json()
        http_backend = resp.headers["x-meridian-backend"]
    async with stub(gw) as s:
        over_grpc = await s.Chat(chat(**params), metadata=auth())
        streamed = [c async for c in s.StreamChat(chat(**params), metadata=auth())]
    choice = over_http["choices"][0]
    assert over_grpc.text == choice["message"]["content"] == expected_text(EXPECTED_CONTEXT, 9)
    assert "".join(c.text for c in streamed) == over_grpc.text
    assert over_grpc.finish_reason == choice["finish_reason"]
    assert over_grpc.usage.completion_tokens == over_http["usage"]["completion_tokens"]
    assert over_grpc.usage.prompt_tokens == over_http["usage"]["prompt_tokens"]
    assert over_grpc.served.backend == http_backend


async def test_eu_key_is_only_ever_served_in_the_eu(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    us, ie, fra = await emulators(), await emulators(), await emulators()
    gw = await gateways(
        grpc_config(
            [
                ("us", "aws:us-east-1", "v1", us.url),
                ("ie", "aws:eu-west-1", "v1", ie.url),
                ("fra", "onprem:fra1", "v1", fra.url),
            ]
        )
    )
    regions = set()
    async with stub(gw) as s:
        for i in range(20):
            response = await s.Chat(chat(2, user=f"user-{i}"), metadata=auth(EU_KEY))
            regions.add(response.served.region)
        # a request may narrow its key's policy (here the global key to DE)...
        narrowed = await s.Chat(chat(2, residency=["DE"]), metadata=auth(GLOBAL_KEY))
        # ...but never widen it: PERMISSION_DENIED, never a US backend
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await s.Chat(chat(2, residency=["US"]), metadata=auth(EU_KEY))
    assert regions == {"aws:eu-west-1", "onprem:fra1"}
    assert narrowed.served.region == "onprem:fra1"
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (denied.value.details() or "").startswith("routing.residency [US] is outside")
    assert trailers(denied.value)["meridian-error-code"] == "residency_violation"
    assert us.stats.requests == 0


async def test_route_explained_to_tenants_allowed_to_see_it(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    config = grpc_config([("fra", "onprem:fra1", "v1", em.url)])
    explained = TenantConfig.model_validate(
        {"name": "ops", "api_keys": [sha("sk-ops")], "explain": True}
    )
    gw = await gateways(config.model_copy(update={"tenants": (*config.tenants, explained)}))
    async with stub(gw) as s:
        call = s.Chat(chat(2), metadata=auth("sk-ops"))
        await call
        shown = dict(await call.trailing_metadata())
        plain = s.Chat(chat(2), metadata=auth())
        await plain
        hidden = dict(await plain.trailing_metadata())
    assert shown["x-meridian-route"].startswith(f"{MODEL}@v1; fra: ")
    assert "x-meridian-route" not in hidden
