"""``meridian demo``: five regions, three clouds, two jurisdictions, two versions."""

from __future__ import annotations

import aiohttp

from gateway.demo import BACKENDS, MODEL, Demo, banner


async def test_demo_serves_both_keys_within_their_residency() -> None:
    demo = Demo("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0")
    gw = await demo.start()
    try:
        assert len({b.region for b in BACKENDS}) >= 5
        assert {b.region.split(":")[0] for b in BACKENDS} == {"aws", "gcp", "onprem"}
        assert "sk-demo-eu" in banner(gw)
        assert gw.grpc_address and gw.grpc_address in banner(gw)
        eu_regions = set()
        async with aiohttp.ClientSession() as s:
            for i in range(10):
                async with s.post(
                    gw.http_url + "/v1/chat/completions",
                    json={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": "hi"}],
                        "max_tokens": 2,
                        "user": str(i),
                    },
                    headers={"Authorization": "Bearer sk-demo-eu"},
                ) as r:
                    assert r.status == 200
                    assert r.headers["x-meridian-version"] == "v1"  # v2 is at 0% until a canary
                    eu_regions.add(r.headers["x-meridian-region"])
            async with s.get(
                gw.admin_url + "/metrics", headers={"Authorization": "Bearer demo-admin"}
            ) as r:
                assert r.status == 200
        tags = {b.region: set(b.tags) for b in BACKENDS}
        assert eu_regions and all("EU" in tags[r] for r in eu_regions)
    finally:
        await demo.stop()
