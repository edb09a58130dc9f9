"""Spend through a real gateway and emulated backends: tokens × price per tenant, per-token and
per-GPU-hour backends alike, and the config that states a price."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from gateway.cli.main import main
from gateway.config.model import Config, ConfigError, parse
from routing.router import DEFAULT_EXPECTED_TOKENS
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)
from tests.gateway.test_metrics_requests import scrape, total

PER_TOKEN = {"input_per_m": 0.5, "output_per_m": 2.0}
HOURLY = {"per_hour": 3.6, "tokens_per_s": 500.0, "input_ratio": 0.1}


def per_token_usd(prompt: int, completion: int) -> float:
    return (prompt * 0.5 + completion * 2.0) / 1e6


def hourly_usd(prompt: int, completion: int) -> float:
    # $3.60/h at 500 tokens/s (the seed: the emulators run far below it), input at 0.1
    return (completion + 0.1 * prompt) * 3.6 / (3600 * 500)


async def ask(
    s: aiohttp.ClientSession, url: str, key: str, max_tokens: int, **headers: str
) -> tuple[str, int, int]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": max_tokens,
    }
    async with s.post(
        url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {key}", **headers},
    ) as r:
        assert r.status == 200, await r.text()
        usage = (await r.json())["usage"]
        return r.headers["x-meridian-backend"], usage["prompt_tokens"], usage["completion_tokens"]


async def test_spend_per_tenant_is_tokens_times_price(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    us, fra = await emulators(), await emulators()
    gw = await gateways(
        gateway_config(
            [
                ("us", "aws:us-east-1", "v1", us.url, {"price": PER_TOKEN}),
                ("fra", "onprem:fra1", "v1", fra.url, {"price": HOURLY}),
            ]
        )
    )
    expected = {"global": 0.0, "eu": 0.0}
    async with aiohttp.ClientSession() as s:
        capacity = "meridian_backend_capacity_tokens_per_second"
        assert total(await scrape(s, gw.admin_url), capacity, backend="fra") == 500  # seed
        for n in (3, 7, 12):
            backend, prompt, completion = await ask(
                s, gw.http_url, GLOBAL_KEY, n, **{"x-meridian-residency": "US"}
            )
            assert backend == "us"
            expected["global"] += per_token_usd(prompt, completion)
            backend, prompt, completion = await ask(s, gw.http_url, EU_KEY, n)
            assert backend == "fra"  # the EU tenant's only compliant backend: priced per hour
            expected["eu"] += hourly_usd(prompt, completion)
        samples = await scrape(s, gw.admin_url)
    for tenant, usd in expected.items():
        assert usd > 0
        assert total(samples, "meridian_spend_usd_total", tenant=tenant) == pytest.approx(usd)


def config_text(price: dict[str, Any], cost: str = "") -> str:
    fields = ", ".join(f"{k}: {v}" for k, v in price.items())
    return f"""
regions: [{{name: "aws:us-east-1"}}, {{name: "onprem:fra1"}}]
models: [{{name: m, versions: {{v1: 100}}}}]
backends:
  - {{name: b, model: m, version: v1, region: "onprem:fra1", provider: vllm,
     url: "http://x:8000", served_model: s, price: {{{fields}}}}}
tenants: [{{name: t, api_keys: ["env:K"]}}]
{cost}
"""


def test_a_price_is_per_token_or_per_hour_never_both() -> None:
    parse(config_text({"per_hour": 2.5}))  # no seed: measured from the first request
    with pytest.raises(ConfigError, match=r"<config>:6: backends.0.price: per_hour or"):
        parse(config_text({"per_hour": 2.5, "output_per_m": 1.0}))
    with pytest.raises(ConfigError, match="tokens_per_s: only with per_hour"):
        parse(config_text({"tokens_per_s": 100}))
    with pytest.raises(ConfigError, match="per_hour"):
        parse(config_text({"per_hour": 0}))


def test_a_dumped_config_validates_again() -> None:
    """A config as the admin API and tests dump it carries every default (per_hour None,
    input_ratio 0): the price check reads values, so it still validates."""
    for fields in ({"input_per_m": 1.0}, {"per_hour": 2.5, "tokens_per_s": 50}):
        config = parse(config_text(fields))
        assert Config.model_validate(config.model_dump(mode="json")) == config


def test_the_gateway_region_must_be_a_configured_one() -> None:
    parse(config_text({}, "cost: {region: 'aws:us-east-1', transfer_per_gb: 0.02}"))
    with pytest.raises(ConfigError, match=r"cost.region: unknown region 'aws:mars-1'"):
        parse(config_text({}, "cost: {region: 'aws:mars-1'}"))
    with pytest.raises(ConfigError, match="FROM->TO"):
        parse(config_text({}, "cost: {transfer_pairs: {aws: 0.1}}"))


async def explain(s: aiohttp.ClientSession, admin_url: str) -> dict[str, Any]:
    async with s.get(
        admin_url + "/admin/v1/route/explain",
        params={"model": MODEL, "tenant": "eu"},
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    ) as r:
        assert r.status == 200
        body = await r.json()
        first: dict[str, Any] = body["candidates"][0]
        return first


async def usage_rows(s: aiohttp.ClientSession, admin_url: str) -> dict[str, dict[str, Any]]:
    """The fleet's usage per tenant, once the tap has flushed a request to the store."""
    while True:
        async with s.get(
            admin_url + "/admin/v1/usage", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as r:
            assert r.status == 200
            body = await r.json()
        if body["totals"]["requests"]:
            return {row["tenant"]: row for row in body["rows"]}
        await asyncio.sleep(0.02)


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().out


async def test_a_per_hour_backend_is_priced_at_its_measured_capacity(
    emulators: EmulatorFactory, gateways: GatewayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    fra = await emulators(itl_s=0.005)
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", fra.url, {"price": {"per_hour": 3.6}})],
            store={"counts_flush_s": 0.05},
        )
    )
    async with aiohttp.ClientSession() as s:
        before = await explain(s, gw.admin_url)
        assert before["capacity_source"] == "unknown" and before["capacity_tokens_per_s"] is None
        assert before["price_usd"] == 0  # not known yet: routing ignores its cost
        _, prompt, completion = await ask(s, gw.http_url, EU_KEY, 40)
        after = await explain(s, gw.admin_url)
        samples = await scrape(s, gw.admin_url)
        usage = await asyncio.wait_for(usage_rows(s, gw.admin_url), 10)
        argv = ["route", "explain", MODEL, "--tenant", "eu", "--admin-url", gw.admin_url]
        code, table = await asyncio.to_thread(cli, [*argv, "--token", ADMIN_TOKEN], capsys)
    assert code == 0 and "$3.6/h at" in table and "(measured)" in table
    capacity = after["capacity_tokens_per_s"]
    assert after["capacity_source"] == "measured" and capacity > 0
    assert "$3.6/h at" in after["reason"] and "(measured)" in after["reason"]
    # Spend used the capacity measured from this very request (and input is free).
    spend = total(samples, "meridian_spend_usd_total", tenant="eu")
    assert spend == pytest.approx(completion * 3.6 / (3600 * capacity))
    gauge = "meridian_backend_capacity_tokens_per_second"
    assert total(samples, gauge, backend="fra") == pytest.approx(capacity)
    # The usage tap priced it after the measurement too: the same figure (to the nano-USD).
    assert usage["eu"]["spend_usd"] == pytest.approx(spend, abs=1e-9)
    assert prompt > 0
    # Routing's estimate is the same formula, over the completion it expects (no max_tokens).
    expected = DEFAULT_EXPECTED_TOKENS * 3.6 / (3600 * capacity)
    assert after["price_usd"] == pytest.approx(expected)
