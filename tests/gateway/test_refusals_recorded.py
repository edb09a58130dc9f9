"""Refusals on /v1/embeddings and /v1/responses are counted and logged as chat's are.

Before, these two routes answered a refusal (bad key, bad body, unknown model,
a tenant limit) without a line in the access log or a meridian_requests_total
sample with its reason: the operator saw only the successes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)
from tests.gateway.test_metrics_requests import scrape, total

REQUESTS = "meridian_requests_total"
ROUTES: dict[str, dict[str, Any]] = {
    "/v1/embeddings": {"model": MODEL, "input": "x"},
    "/v1/responses": {"model": MODEL, "input": "x", "max_output_tokens": 4},
}


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


async def post(
    s: aiohttp.ClientSession, url: str, body: dict[str, Any] | bytes, key: str = GLOBAL_KEY
) -> tuple[int, str]:
    kwargs: dict[str, Any] = {"data": body} if isinstance(body, bytes) else {"json": body}
    async with s.post(url, headers={"Authorization": f"Bearer {key}"}, **kwargs) as r:
        await r.read()
        return r.status, r.headers["x-request-id"]


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_refusals_are_in_the_access_log_and_the_request_count(
    emulators: EmulatorFactory, gateways: GatewayFactory, tmp_path: Path, route: str
) -> None:
    em = await emulators()
    path = tmp_path / "access.log"
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)],
            observability={"access_log": {"destination": str(path)}},
        )
    )
    url, body = gw.http_url + route, ROUTES[route]
    async with aiohttp.ClientSession() as s:
        bad_key = await post(s, url, body, key="sk-wrong")
        bad_body = await post(s, url, b"{")
        no_model = await post(s, url, {**body, "model": "nope"})
        assert [bad_key[0], bad_body[0], no_model[0]] == [401, 400, 404]
        await wait_for(lambda: len(lines(path)) == 3)
        samples = await scrape(s, gw.admin_url)
    by_id = {line["request_id"]: line for line in lines(path)}
    assert by_id[bad_key[1]]["status"] == 401 and by_id[bad_key[1]]["tenant"] == ""
    assert by_id[bad_key[1]]["reason"] == "invalid_api_key"
    assert by_id[bad_body[1]]["reason"] == "invalid_request_error"
    assert by_id[bad_body[1]]["tenant"] == "global" and by_id[bad_body[1]]["client"]
    assert by_id[no_model[1]]["status"] == 404 and by_id[no_model[1]]["model"] == "other"
    assert total(samples, REQUESTS, status="401", reason="invalid_api_key", tenant="") == 1
    assert total(samples, REQUESTS, status="400", reason="invalid_request_error") == 1
    assert total(samples, REQUESTS, status="404", model="other", tenant="global") == 1


@pytest.mark.parametrize("route", sorted(ROUTES))
async def test_a_tenant_limit_refusal_is_counted_with_its_reason(
    emulators: EmulatorFactory, gateways: GatewayFactory, route: str
) -> None:
    em = await emulators()
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)], tenant={"limits": {"requests_per_min": 1}}
        )
    )
    async with aiohttp.ClientSession() as s:
        assert (await post(s, gw.http_url + route, ROUTES[route]))[0] == 200
        assert (await post(s, gw.http_url + route, ROUTES[route]))[0] == 429
        samples = await scrape(s, gw.admin_url)
    assert total(samples, REQUESTS, status="429", reason="rate_limit_exceeded") == 1
