from __future__ import annotations

import aiohttp

from tests.conftest import ADMIN_TOKEN, GLOBAL_KEY, MODEL, gateway_config


async def test_metrics_need_the_admin_token_and_count_requests(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    async with aiohttp.ClientSession() as s:
        for _ in range(3):
            async with s.post(
                gw.http_url + "/v1/chat/completions",
                json={
                    "model": MODEL,
                    "messages": [{"role": "user", "content": "x"}],
                    "max_tokens": 4,
                },
                headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
            ) as r:
                assert r.status == 200
        async with s.get(gw.admin_url + "/metrics") as r:
            assert r.status == 401
        async with s.get(
            gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {GLOBAL_KEY}"}
        ) as r:
            assert r.status == 401  # a client key is not an admin token
        async with s.get(
            gw.admin_url + "/metrics", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as r:
            assert r.status == 200
            text = await r.text()
        async with s.get(
            gw.admin_url + "/admin/v1/status", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        ) as r:
            status = await r.json()
    line = (
        'meridian_requests_total{backend="fra",model="test-model",reason="ok",'
        'region="onprem:fra1",status="200",tenant="global",version="v1"} 3.0'
    )
    assert line in text
    assert (
        'meridian_tokens_total{backend="fra",direction="completion",model="test-model",'
        'tenant="global"} 12.0' in text
    )
    assert (
        'meridian_backend_attempts_total{backend="fra",outcome="ok",region="onprem:fra1"} 3.0'
        in text
    )
    assert "meridian_time_to_first_token_seconds_bucket" in text
    assert status["backends"][0]["name"] == "fra"
    assert status["models"] == {"test-model": {"v1": 100}}
