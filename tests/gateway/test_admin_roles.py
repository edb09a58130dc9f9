"""Scoped admin tokens (issue 21 item 4): every admin route's role, over real HTTP."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from gateway.admin.api import admin_app
from gateway.app.server import Gateway
from gateway.config.model import ConfigError, parse
from gateway.http.api import RUNTIME
from gateway.security.admin_tokens import OPEN_ROUTES, ROUTE_ROLES, Role
from tests.conftest import (
    ADMIN_TOKEN,
    EmulatorFactory,
    gateway_config,
    runtime_of,
    sha,
)

TOKENS = {Role.viewer: "tok-viewer", Role.operator: "tok-operator", Role.admin: "tok-admin"}
NAMED = [
    {"name": "dashboard", "token": sha(TOKENS[Role.viewer]), "role": "viewer"},
    {"name": "oncall", "token": sha(TOKENS[Role.operator]), "role": "operator"},
    {"name": "platform", "token": "env:MERIDIAN_TEST_ADMIN", "role": "admin"},
]
ENV = {"MERIDIAN_TEST_ADMIN": TOKENS[Role.admin]}
PARAMS = {
    "model": "test-model",
    "version": "v1",
    "region": "aws:us-east-1",
    "job": "nope",
}


def _routes(gw: Gateway) -> list[tuple[str, str]]:
    holder = web.Application()
    holder[RUNTIME] = runtime_of(gw)
    app = admin_app(holder)
    found = set()
    for route in app.router.routes():
        resource = route.resource
        assert resource is not None
        if route.method != "HEAD":
            found.add((route.method, resource.canonical))
    return sorted(found)


def _path(pattern: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: PARAMS[m.group(1)], pattern)


async def _call(
    s: aiohttp.ClientSession, gw: Gateway, method: str, path: str, token: str | None
) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body: dict[str, Any] | None = {} if method in ("POST", "PUT") else None
    async with s.request(method, gw.admin_url + path, json=body, headers=headers) as r:
        raw = await r.read()
        return r.status, raw


@pytest.fixture
async def gw(emulators: EmulatorFactory) -> Any:
    em = await emulators()
    config = gateway_config(
        [("us", "aws:us-east-1", "v1", em.url)],
        admin={"token": sha(ADMIN_TOKEN), "tokens": NAMED},
    )
    gateway = Gateway(config, ENV)
    await gateway.start()
    yield gateway
    await gateway.stop(grace=0.5)


async def test_every_admin_route_has_a_role(gw: Gateway) -> None:
    routes = set(_routes(gw))
    unassigned = routes - set(ROUTE_ROLES) - OPEN_ROUTES
    assert not unassigned, f"admin routes without a role in ROUTE_ROLES: {sorted(unassigned)}"
    stale = set(ROUTE_ROLES) - routes
    assert not stale, f"ROUTE_ROLES names routes that do not exist: {sorted(stale)}"


async def test_each_route_refuses_lesser_roles_and_admits_its_own(gw: Gateway) -> None:
    async with aiohttp.ClientSession() as s:
        for method, pattern in _routes(gw):
            path = _path(pattern)
            if (method, pattern) in OPEN_ROUTES:
                status, _ = await _call(s, gw, method, path, None)
                assert status == 200, (method, pattern)
                continue
            need = ROUTE_ROLES[(method, pattern)]
            status, _ = await _call(s, gw, method, path, None)
            assert status == 401, (method, pattern)
            status, _ = await _call(s, gw, method, path, "not-a-token")
            assert status == 401, (method, pattern)
            for role in Role:  # lesser roles first: a refusal must have no effect
                status, raw = await _call(s, gw, method, path, TOKENS[role])
                if role < need:
                    assert status == 403, (method, pattern, role, raw)
                    assert f"needs the {need.name} role" in raw.decode(), raw
                    assert b"insufficient_role" in raw
                else:
                    assert status not in (401, 403), (method, pattern, role, raw)


async def test_viewer_cannot_drain_operator_can_and_the_audit_names_the_token(
    gw: Gateway,
) -> None:
    drain = "/admin/v1/regions/aws:us-east-1/drain"
    async with aiohttp.ClientSession() as s:
        status, raw = await _call(s, gw, "POST", drain, TOKENS[Role.viewer])
        assert status == 403 and b"needs the operator role" in raw
        assert b"tok-viewer" not in raw
        status, _ = await _call(s, gw, "GET", "/metrics", TOKENS[Role.viewer])
        assert status == 200
        headers = {"Authorization": f"Bearer {TOKENS[Role.operator]}", "x-meridian-actor": "eve"}
        async with s.post(gw.admin_url + drain, json={}, headers=headers) as r:
            assert r.status == 200, await r.text()
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "x-meridian-actor": "ann"}
        undrain = "/admin/v1/regions/aws:us-east-1/undrain"
        async with s.post(gw.admin_url + undrain, json={}, headers=headers) as r:
            assert r.status == 200, await r.text()
        headers = {"Authorization": f"Bearer {TOKENS[Role.viewer]}"}
        async with s.get(gw.admin_url + "/admin/v1/audit", headers=headers) as r:
            entries = (await r.json())["entries"]
    actors = {e["action"]: e["actor"] for e in entries}
    # a named token is recorded under its name (the header cannot claim another);
    # the legacy token keeps the actor its client names
    assert actors == {"region.drain": "oncall", "region.undrain": "ann"}, entries


async def test_tokens_are_never_in_clear_and_names_are_unique() -> None:
    base = """
regions: [{name: "aws:us-east-1"}]
models: [{name: m, versions: {v1: 100}}]
backends: [{name: b, model: m, version: v1, region: "aws:us-east-1", provider: vllm,
            url: "http://127.0.0.1:1", served_model: s}]
tenants: [{name: t, api_keys: ["env:K"]}]
admin:
  tokens:
"""
    with pytest.raises(ConfigError, match="never in clear"):
        parse(base + "    - {name: a, token: hunter2, role: viewer}\n")
    with pytest.raises(ConfigError, match="role"):
        parse(base + '    - {name: a, token: "env:X", role: root}\n')
    with pytest.raises(ConfigError, match="unique"):
        parse(base + '    - {name: a, token: "env:X", role: viewer}\n' * 2)
    config = parse(base + '    - {name: a, token: "env:X", role: viewer}\n')
    assert config.admin.tokens[0].role == "viewer"


async def test_unset_token_variable_fails_the_start(emulators: EmulatorFactory) -> None:
    em = await emulators()
    config = gateway_config([("us", "aws:us-east-1", "v1", em.url)], admin={"tokens": NAMED})
    gateway = Gateway(config, {})
    with pytest.raises(ConfigError, match="MERIDIAN_TEST_ADMIN"):
        await gateway.start()


async def test_a_reload_changes_the_tokens(emulators: EmulatorFactory, tmp_path: Path) -> None:
    em = await emulators()
    config = gateway_config(
        [("us", "aws:us-east-1", "v1", em.url)],
        admin={"token": sha(ADMIN_TOKEN), "tokens": NAMED[:1]},
    )
    data: dict[str, Any] = json.loads(config.model_dump_json(exclude_defaults=True))
    data["admin"] = {"token": sha(ADMIN_TOKEN), "tokens": NAMED[:1]}
    path = tmp_path / "meridian.yaml"
    path.write_text(yaml.safe_dump(data))
    gateway = Gateway(parse(path.read_text()), ENV, config_path=str(path))
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as s:
            status, _ = await _call(s, gateway, "GET", "/admin/v1/status", TOKENS[Role.viewer])
            assert status == 200
            status, _ = await _call(s, gateway, "GET", "/admin/v1/status", TOKENS[Role.operator])
            assert status == 401
            data["admin"] = {"token": sha(ADMIN_TOKEN), "tokens": NAMED[1:2]}
            path.write_text(yaml.safe_dump(data))
            status, raw = await _call(s, gateway, "POST", "/admin/v1/reload", ADMIN_TOKEN)
            assert status == 200, raw
            status, _ = await _call(s, gateway, "GET", "/admin/v1/status", TOKENS[Role.operator])
            assert status == 200
            status, _ = await _call(s, gateway, "GET", "/admin/v1/status", TOKENS[Role.viewer])
            assert status == 401  # a token taken out of the file is dead at once
    finally:
        await gateway.stop(grace=0.5)


async def test_metrics_on_their_own_address_need_no_token(emulators: EmulatorFactory) -> None:
    em = await emulators()
    config = gateway_config(
        [("us", "aws:us-east-1", "v1", em.url)],
        listen={"metrics": "127.0.0.1:0"},
        admin={"token": sha(ADMIN_TOKEN), "tokens": NAMED},
    )
    gateway = Gateway(config, ENV)
    await gateway.start()
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(gateway.metrics_url + "/metrics") as r:
                assert r.status == 200 and b"meridian_" in await r.read()
            async with s.get(gateway.metrics_url + "/admin/v1/status") as r:
                assert r.status == 404  # only the metrics live there
            status, _ = await _call(s, gateway, "GET", "/metrics", None)
            assert status == 401  # the admin listener's still takes a token
    finally:
        await gateway.stop(grace=0.5)
