"""Metrics that answer the operator's questions: every request, tenant, spend, SLO inputs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import grpc
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)
from tests.gateway.test_grpc_helpers import auth, one_backend, stub
from tests.gateway.test_grpc_helpers import chat as grpc_chat

Samples = list[tuple[str, dict[str, str], float]]
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


async def scrape(s: aiohttp.ClientSession, admin_url: str) -> Samples:
    async with s.get(
        admin_url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    ) as r:
        assert r.status == 200
        text = await r.text()
    return [
        (sample.name, dict(sample.labels), sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    ]


def total(samples: Samples, name: str, **labels: str) -> float:
    return sum(
        value
        for n, got, value in samples
        if n == name and all(got.get(k) == v for k, v in labels.items())
    )


async def post(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any] | bytes, key: str | None = GLOBAL_KEY
) -> int:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with s.post(url + "/v1/chat/completions", headers=headers, **kwargs) as r:
        await r.read()
        return r.status


def chat(model: str = MODEL, **extra: Any) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        **extra,
    }


async def test_refused_requests_are_counted_with_status_and_reason(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        assert await post(s, gw.http_url, chat(), key="sk-wrong") == 401
        assert await post(s, gw.http_url, chat(), key=None) == 401
        assert await post(s, gw.http_url, chat("no-such-model")) == 404
        assert await post(s, gw.http_url, b"{") == 400
        async with s.post(
            gw.http_url + "/v1/chat/completions",
            json=chat(),
            headers={"Authorization": f"Bearer {GLOBAL_KEY}", "x-meridian-residency": "US,XX"},
        ) as r:
            refused_residency = r.status
        assert await post(s, gw.http_url, chat()) == 200
        samples = await scrape(s, gw.admin_url)
    name = "meridian_requests_total"
    assert total(samples, name, status="401", reason="invalid_api_key", tenant="") == 2
    # A model the config does not know is one label value, whatever the client sent.
    assert total(samples, name, status="404", model="other", tenant="global") == 1
    assert not any("no-such-model" in str(labels) for _, labels, _ in samples)
    assert total(samples, name, status="400", reason="invalid_request_error") >= 1
    assert total(samples, name, status=str(refused_residency)) >= 1
    assert total(samples, name, status="200", reason="ok", tenant="global", version="v1") == 1
    assert total(samples, name) == 6  # every request, once


async def test_spend_per_tenant_is_tokens_times_the_configured_price(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    price = {"input_per_m": 3.0, "output_per_m": 15.0}
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url, {"price": price})],
            tenant={"name": "acme"},
        )
    )
    async with aiohttp.ClientSession() as s:
        for stream in (False, True, False):
            assert await post(s, gw.http_url, chat(stream=stream)) == 200
        samples = await scrape(s, gw.admin_url)
    prompt = total(samples, "meridian_tokens_total", tenant="acme", direction="prompt")
    completion = total(samples, "meridian_tokens_total", tenant="acme", direction="completion")
    assert completion == 15 and prompt > 0
    spend = total(samples, "meridian_spend_usd_total", tenant="acme", model=MODEL, backend="fra")
    assert abs(spend - (prompt * 3.0 + completion * 15.0) / 1e6) < 1e-12


async def test_slo_inputs_and_every_breaker_series_exist_from_the_start(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators(itl_s=0.002)
    spare = await emulators()
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url), ("dub", "aws:eu-west-1", "v1", spare.url)]
        )
    )
    async with aiohttp.ClientSession() as s:
        before = await scrape(s, gw.admin_url)
        for backend in ("fra", "dub"):
            breaker = [v for n, lb, v in before if n == "meridian_breaker_state"]
            assert any(
                n == "meridian_breaker_state" and lb["backend"] == backend and v == 0
                for n, lb, v in before
            ), breaker
            assert any(
                n == "meridian_ejections_total" and lb["backend"] == backend for n, lb, _ in before
            )
        assert await post(s, gw.http_url, chat(stream=True)) == 200
        after = await scrape(s, gw.admin_url)
    assert total(after, "meridian_time_to_first_token_seconds_count", version="v1") == 1
    assert total(after, "meridian_time_per_output_token_seconds_count", model=MODEL) == 1
    assert total(after, "meridian_gateway_overhead_seconds_count", model=MODEL) == 1
    per_token = total(after, "meridian_time_per_output_token_seconds_sum")
    assert 0 < per_token < 1


async def test_each_first_token_is_judged_against_its_models_own_ttft_objective(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    slow = await emulators(ttft_s=0.06)
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", slow.url)],
            observability={"slo": {MODEL: {"ttft_p95_s": 0.05, "availability": 0.99}}},
        )
    )
    async with aiohttp.ClientSession() as s:
        before = await scrape(s, gw.admin_url)
        assert await post(s, gw.http_url, chat()) == 200
        after = await scrape(s, gw.admin_url)
    objective = "meridian_slo_objective"
    assert total(before, objective, model=MODEL, slo="availability") == 0.99
    assert total(before, objective, model=MODEL, slo="ttft") == 0.95
    assert total(before, "meridian_slo_ttft_threshold_seconds", model=MODEL) == 0.05
    assert ("meridian_slo_ttft_requests_total", {"model": MODEL, "good": "false"}, 0.0) in before
    assert total(after, "meridian_slo_ttft_requests_total", model=MODEL, good="false") == 1
    assert total(after, "meridian_slo_ttft_requests_total", model=MODEL, good="true") == 0


async def test_grpc_refusals_and_answers_are_counted_too(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _, gw = await one_backend(emulators, gateways)
    async with stub(gw) as s:
        with pytest.raises(grpc.aio.AioRpcError):
            await s.Chat(grpc_chat(2), metadata=auth("sk-wrong"))
        await s.Chat(grpc_chat(2), metadata=auth())
    async with aiohttp.ClientSession() as session:
        samples = await scrape(session, gw.admin_url)
    name = "meridian_requests_total"
    assert total(samples, name, status="401", reason="invalid_api_key") == 1
    assert total(samples, name, status="200", reason="ok") == 1


async def test_aiohttps_own_refusals_of_client_routes_are_counted(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        async with s.get(gw.http_url + "/v1/chat/completions") as r:
            assert r.status == 405
        async with s.post(gw.http_url + "/v1/nothing-here", json={}) as r:
            assert r.status == 404
        async with s.get(gw.admin_url + "/admin/v1/nothing-here", headers=ADMIN) as r:
            assert r.status == 404
        samples = await scrape(s, gw.admin_url)
    name = "meridian_requests_total"
    assert total(samples, name, status="405", reason="method_not_allowed") == 1
    assert total(samples, name, status="404", reason="not_found") == 1  # not the admin one


async def test_ttft_and_overhead_count_from_arrival_a_slow_upload_included(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    body = orjson.dumps(chat())

    async def slowly() -> AsyncIterator[bytes]:
        yield body[:10]
        await asyncio.sleep(0.15)  # the client's pace, which the gateway must count
        yield body[10:]

    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.http_url + "/v1/chat/completions",
            data=slowly(),
            headers={"Authorization": f"Bearer {GLOBAL_KEY}", "Content-Type": "application/json"},
        ) as r:
            assert r.status == 200
        samples = await scrape(s, gw.admin_url)
    ttft = "meridian_time_to_first_token_seconds_bucket"
    assert total(samples, ttft, le="0.1") == 0 and total(samples, ttft, le="+Inf") == 1
    overhead = "meridian_gateway_overhead_seconds_bucket"
    assert total(samples, overhead, le="0.1") == 0 and total(samples, overhead, le="+Inf") == 1
