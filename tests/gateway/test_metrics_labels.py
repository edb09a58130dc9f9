"""Per-request metrics without prometheus-client's ``labels()`` once a series exists:
it checks and converts the values and takes a lock on every call, a dozen times a
request. The series a scrape shows are the same either way."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client.metrics import MetricWrapperBase

from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config
from tests.gateway.test_metrics_requests import scrape, total


async def test_a_repeated_request_makes_no_labels_calls(
    emulators: EmulatorFactory, gateways: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, ...]] = []
    labels = MetricWrapperBase.labels

    def counted(self: MetricWrapperBase, *values: Any, **kw: Any) -> Any:
        calls.append(tuple(map(str, values)))
        return labels(self, *values, **kw)

    monkeypatch.setattr(MetricWrapperBase, "labels", counted)  # before the gateway exists
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "x"}],
        "max_tokens": 5,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with aiohttp.ClientSession() as s:
        seen = []
        for _ in range(3):
            async with s.post(
                gw.http_url + "/v1/chat/completions", json=body, headers=headers
            ) as r:
                assert r.status == 200
                await r.read()
            seen.append(len(calls))
        samples = await scrape(s, gw.admin_url)
    assert seen[0] > 0  # the first request made its series
    assert seen[2] == seen[1], calls[seen[1] :]  # the third found them all
    assert total(samples, "meridian_requests_total", backend="fra", status="200") == 3
    assert total(samples, "meridian_tokens_total", backend="fra", direction="completion") == 15
