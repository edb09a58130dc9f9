"""``meridian status``: each model's SLOs and the error budget left, from a real scrape."""

from __future__ import annotations

import asyncio
import json

import aiohttp
import pytest

from gateway.cli.main import main
from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)


async def test_status_shows_each_models_slo_and_budget_left(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    em = await emulators()
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)],
            observability={"slo": {MODEL: {"availability": 0.9, "ttft_p95_s": 5.0}}},
        )
    )
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
    auth = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with aiohttp.ClientSession() as s:
        for _ in range(19):
            async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=auth) as r:
                assert r.status == 200
        async with s.post(gw.http_url + "/v1/chat/completions", json=body) as r:
            assert r.status == 401  # the client's fault: no budget spent
        await em.stop()
        async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=auth) as r:
            assert r.status >= 500
    flags = [f"--admin-url={gw.admin_url}", f"--token={ADMIN_TOKEN}"]
    code = await asyncio.to_thread(main, ["status", "--json", *flags])
    out = capsys.readouterr().out
    assert code == 0
    (slo,) = json.loads(out)["slo"]
    assert slo["model"] == MODEL and slo["requests"] == 20  # the 401 had no model yet
    assert slo["failed"] == 1 and slo["availability"] == pytest.approx(0.95)
    # 5% failed against a 10% budget: half of it left; every first token in time.
    assert slo["availability_budget_left"] == pytest.approx(0.5)
    assert slo["ttft_within"] == 1.0 and slo["ttft_budget_left"] == 1.0
    code = await asyncio.to_thread(main, ["status", *flags])
    out = capsys.readouterr().out
    assert code == 0 and "budget left" in out and "50.0%" in out and "p95 < 5000 ms" in out
