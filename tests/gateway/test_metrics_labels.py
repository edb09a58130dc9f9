"""Per-request metrics without prometheus-client's ``labels()`` once a series exists:
it checks and converts the values and takes a lock on every call, a dozen times a
request. The series a scrape shows are the same either way."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

from gateway.observe.metrics import _Children, _Histograms
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


PER_REQUEST = {
    "meridian_requests",
    "meridian_time_to_first_token_seconds",
    "meridian_time_per_output_token_seconds",
    "meridian_gateway_overhead_seconds",
    "meridian_request_duration_seconds",
    "meridian_tokens",
    "meridian_spend_usd",
    "meridian_in_flight_requests",
    "meridian_backend_attempts",
    "meridian_slo_ttft_requests",
}


async def test_a_request_adds_to_its_series_values_without_the_metric_methods(
    emulators: EmulatorFactory, gateways: GatewayFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counter.inc, Gauge.inc/dec and Histogram.observe check the child and walk the
    buckets on every call: the gateway adds to the series' values once it has them,
    and a scrape shows what those methods would have made."""
    calls: list[str] = []
    for cls, name in (
        (Counter, "inc"),
        (Gauge, "inc"),
        (Gauge, "dec"),
        (Histogram, "observe"),
    ):
        method = getattr(cls, name)

        def counted(self: Any, *a: Any, _method: Any = method, **kw: Any) -> Any:
            if self._name in PER_REQUEST:
                calls.append(self._name)
            return _method(self, *a, **kw)

        monkeypatch.setattr(cls, name, counted)
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
        for _ in range(2):
            async with s.post(
                gw.http_url + "/v1/chat/completions", json=body, headers=headers
            ) as r:
                assert r.status == 200
                await r.read()
        samples = await scrape(s, gw.admin_url)
    assert calls == []
    assert total(samples, "meridian_requests_total", backend="fra", status="200") == 2
    assert total(samples, "meridian_tokens_total", backend="fra", direction="completion") == 10
    assert total(samples, "meridian_request_duration_seconds_count", backend="fra") == 2
    assert total(samples, "meridian_time_to_first_token_seconds_count", backend="fra") == 2
    assert total(samples, "meridian_in_flight_requests", model=MODEL) == 0


def test_an_observation_lands_in_the_bucket_observe_puts_it_in() -> None:
    bounds = (0.005, 0.01, 0.025, 0.5, 1.0)
    amounts = [0.0, 0.005, 0.0050001, 0.01, 0.3, 1.0, 1.5, 1e9, -2.0, float("nan")]
    plain, fast = CollectorRegistry(), CollectorRegistry()
    reference = Histogram("h", "h", ["l"], buckets=bounds, registry=plain)
    ours = _Histograms(Histogram("h", "h", ["l"], buckets=bounds, registry=fast))
    counter = _Children(Counter("c", "c", ["l"], registry=fast))
    for amount in amounts:
        reference.labels("a").observe(amount)
        ours("a")(amount)
        counter("a")(1.5)
    expected = generate_latest(plain).decode().splitlines()
    got = generate_latest(fast).decode().splitlines()
    assert [line for line in got if line.startswith("h_") and "created" not in line] == [
        line for line in expected if line.startswith("h_") and "created" not in line
    ]
    assert 'c_total{l="a"} 15.0' in got
