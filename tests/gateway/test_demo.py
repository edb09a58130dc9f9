"""``meridian demo``: five regions, three clouds, two jurisdictions, two versions."""

from __future__ import annotations

import aiohttp
import pytest

from gateway.cli.demo import BACKENDS, MODEL, Demo, banner
from gateway.cli.main import main
from tests.conftest import wait_for
from tests.redis_server import RedisServer


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


async def test_demo_with_redis_shares_its_control_plane(redis_server: RedisServer) -> None:
    """Two demos on one Redis: a weight set through one reaches the other."""
    demos = [Demo("127.0.0.1:0", "127.0.0.1:0", None, redis_server.url) for _ in range(2)]
    gws = [await d.start() for d in demos]
    try:
        assert all(g.runtime and g.runtime.control for g in gws)
        async with (
            aiohttp.ClientSession() as s,
            s.put(
                f"{gws[0].admin_url}/admin/v1/weights/{MODEL}",
                json={"split": {"v1": 50, "v2": 50}},
                headers={"Authorization": "Bearer demo-admin"},
            ) as r,
        ):
            assert r.status == 200
        await wait_for(lambda: gws[1].runtime.snapshot.models[MODEL].split["v2"] == 50)  # type: ignore[union-attr]
    finally:
        for d in demos:
            await d.stop()


def test_demo_refuses_a_redis_address_that_is_not_a_url() -> None:
    with pytest.raises(SystemExit) as exited:
        main(["demo", "--redis", "localhost:6379"])
    assert (
        exited.value.code
        == "meridian: --redis wants a redis:// or rediss:// URL, not 'localhost:6379'"
    )
