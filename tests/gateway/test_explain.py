"""Explainable routing: the debug header and ``meridian route explain``."""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import aiohttp

from gateway.app.server import Gateway
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
)

ROWS = [("us", "aws:us-east-1", "v1"), ("ie", "aws:eu-west-1", "v1"), ("fra", "onprem:fra1", "v1")]


async def world(emulators: EmulatorFactory, gateways: GatewayFactory, **kwargs: Any) -> Gateway:
    rows = [(n, r, v, (await emulators()).url) for n, r, v in ROWS]
    return await gateways(
        gateway_config(
            rows,
            regions={"aws:us-east-1": ["US"], "aws:eu-west-1": ["EU"], "onprem:fra1": ["EU"]},
            **kwargs,
        )
    )


async def test_debug_header_only_for_tenants_allowed_to_see_it(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    gw = await world(emulators, gateways, tenant={"explain": True})
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    async with aiohttp.ClientSession() as s:
        async with s.post(
            gw.http_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {GLOBAL_KEY}"},
        ) as r:
            route = r.headers["x-meridian-route"]
            assert route.startswith(f"{MODEL}@v1; {r.headers['x-meridian-backend']}: p2c pick")
        async with s.post(
            gw.http_url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {EU_KEY}"},
        ) as r:
            assert r.status == 200 and "x-meridian-route" not in r.headers


async def _cli(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out.decode(), err.decode()


async def test_route_explain_cli(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    gw = await world(emulators, gateways)
    base = ["--admin-url", gw.admin_url, "--token", ADMIN_TOKEN]
    code, out, err = await _cli("route", "explain", MODEL, "--tenant", "eu", "--json", *base)
    assert code == 0, err
    plan = json.loads(out)
    assert plan["residency"] == "EU" and plan["version"] == "v1"
    assert {c["backend"] for c in plan["candidates"]} == {"ie", "fra"}
    assert plan["excluded"] == [{"backend": "us", "why": "outside residency"}]
    code, out, _ = await _cli("route", "explain", MODEL, "--tenant", "eu", *base)
    assert code == 0 and "excluded: outside residency" in out and "p2c pick" in out
    code, _, err = await _cli("route", "explain", MODEL, "--tenant", "nobody", *base)
    assert code == 1 and err.strip() == "meridian: 404: unknown tenant nobody"
    code, _, err = await _cli("route", "explain", MODEL, "--residency", "JP", *base)
    assert code == 1 and err.startswith("meridian: 403: no region allowed by residency")
    code, _, err = await _cli(
        "route", "explain", MODEL, "--admin-url", gw.admin_url, "--token", "wrong"
    )
    assert code == 1 and err.startswith("meridian: 401")
    assert len(err.strip().splitlines()) == 1
