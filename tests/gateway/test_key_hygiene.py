"""Tenant API keys with a name and an expiry; two keys of a tenant during a rotation."""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from gateway.config.model import ConfigError, parse
from gateway.security.keys import ApiKey, KeyExpired, KeyRing, Tenant
from meridian_proto.meridian.v1 import inference_pb2 as pb
from tests.conftest import MODEL, EmulatorFactory, GatewayFactory, gateway_config, sha, wait_for
from tests.gateway.test_grpc_helpers import auth, grpc_config, stub
from tests.gateway.test_grpc_helpers import chat as grpc_chat

OLD, NEW, LAPSED = "sk-rotation-old", "sk-rotation-new", "sk-lapsed"


def chat() -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}


async def status_of(s: aiohttp.ClientSession, url: str, key: str) -> tuple[int, dict[str, Any]]:
    headers = {"Authorization": f"Bearer {key}"}
    async with s.post(url + "/v1/chat/completions", json=chat(), headers=headers) as r:
        return r.status, await r.json()


async def test_both_keys_of_a_rotation_work_and_an_expired_one_is_refused(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    em = await emulators()
    keys = [
        {"key": sha(OLD), "name": "2026-q1", "expires": "2999-01-01T00:00:00Z"},
        {"key": sha(NEW), "name": "2026-q2"},
        {"key": sha(LAPSED), "name": "2025-q4", "expires": "2000-01-01T00:00:00+02:00"},
    ]
    gw = await gateways(
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], tenant={"api_keys": keys})
    )
    caplog.set_level(logging.INFO, "meridian.security")
    async with aiohttp.ClientSession() as s:
        assert (await status_of(s, gw.http_url, OLD))[0] == 200
        assert (await status_of(s, gw.http_url, NEW))[0] == 200
        status, body = await status_of(s, gw.http_url, LAPSED)
    assert status == 401
    error = body["error"]  # OpenAI's shape
    assert error["code"] == "invalid_api_key" and error["type"] and LAPSED not in str(body)
    assert error["message"] == "The API key has expired; ask for a new one."
    assert "tenant global presented key 2025-q4, expired at 2000-01-01" in caplog.text
    assert LAPSED not in caplog.text and sha(LAPSED)[7:] not in caplog.text


def test_a_key_stops_working_at_its_expiry_instant() -> None:
    expires = datetime(2026, 3, 1, tzinfo=UTC)
    now = [expires - timedelta(microseconds=1)]
    digest = hashlib.sha256(OLD.encode()).hexdigest()
    ring = KeyRing([ApiKey(digest, Tenant("t"), "q1", expires)], clock=lambda: now[0])
    found = ring.authenticate(f"Bearer {OLD}")
    assert found is not None and found[0].name == "t" and found[0].key == "q1"
    now[0] = expires
    assert ring.authenticate(f"Bearer {OLD}") is None
    with pytest.raises(KeyExpired, match="expired") as raised:
        ring.check(f"Bearer {OLD}")
    assert OLD not in str(raised.value) and raised.value.key.name == "q1"


def config_with(keys: str, tmp_path: Path) -> str:
    return f"""
listen: {{http: "127.0.0.1:0", admin: "127.0.0.1:0", grpc: null}}
admin: {{token: "{sha("a")}"}}
regions: [{{name: "aws:us-east-1", tags: [US]}}]
models: [{{name: m, versions: {{v1: 100}}}}]
backends: [{{name: b, model: m, version: v1, region: "aws:us-east-1", provider: vllm,
  url: "http://127.0.0.1:1", served_model: s}}]
tenants:
  - name: t
    api_keys:
{keys}
"""


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        (f'      - {{key: "{sha(OLD)}", expires: 2026-03-01}}', "timezone"),
        (f'      - {{key: "{sha(OLD)}", expires: "2026-03-01T00:00:00"}}', "timezone"),
        (f'      - {{key: "{sha(OLD)}", expires: "soon"}}', "datetime"),
        (f'      - {{key: "{OLD}", name: q1}}', "never in clear"),
        (
            f'      - {{key: "{sha(OLD)}", name: q1}}\n      - {{key: "{sha(NEW)}", name: q1}}',
            "unique",
        ),
    ],
)
def test_a_bad_key_entry_is_a_config_error_naming_its_line(
    keys: str, message: str, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        parse(config_with(keys, tmp_path), "gw.yaml")
    assert "gw.yaml:" in str(raised.value) and OLD not in str(raised.value)


def test_a_key_entry_parses_from_yaml(tmp_path: Path) -> None:
    keys = f'      - {{key: "{sha(OLD)}", name: q1, expires: 2026-03-01T00:00:00Z}}\n'
    keys += f'      - "{sha(NEW)}"'
    tenant = parse(config_with(keys, tmp_path)).tenants[0]
    assert [k.name for k in tenant.api_keys] == ["q1", None]
    assert tenant.api_keys[0].expires == datetime(2026, 3, 1, tzinfo=UTC)


async def test_the_access_log_names_the_key_never_shows_it(
    emulators: EmulatorFactory, gateways: GatewayFactory, tmp_path: Path
) -> None:
    em = await emulators()
    path = tmp_path / "access.log"
    keys = [{"key": sha(OLD), "name": "2026-q1"}, {"key": sha(NEW), "name": "2026-q2"}, sha(LAPSED)]
    gw = await gateways(
        gateway_config(
            [("fra", "onprem:fra1", "v1", em.url)],
            tenant={"api_keys": keys},
            observability={"access_log": {"destination": str(path)}},
        )
    )
    async with aiohttp.ClientSession() as s:
        for key in (OLD, NEW, LAPSED, "sk-unknown"):
            await status_of(s, gw.http_url, key)
        bad = {"Authorization": f"Bearer {NEW}"}
        async with s.post(gw.http_url + "/v1/chat/completions", data=b"{", headers=bad) as r:
            assert r.status == 400
    await wait_for(lambda: path.exists() and len(path.read_text().splitlines()) == 5)
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["status"], r["key"]) for r in records] == [
        (200, "2026-q1"),
        (200, "2026-q2"),
        (200, ""),  # an unnamed key
        (401, ""),
        (400, "2026-q2"),
    ]
    text = path.read_text()
    for secret in (OLD, NEW, LAPSED, sha(OLD)[7:], sha(NEW)[7:], sha(LAPSED)[7:]):
        assert secret not in text


async def test_grpc_refuses_an_expired_key_as_unauthenticated_saying_so(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    em = await emulators()
    keys = [{"key": sha(LAPSED), "expires": "2000-01-01T00:00:00Z"}, sha(NEW)]
    gw = await gateways(
        grpc_config([("fra", "onprem:fra1", "v1", em.url)], tenant={"api_keys": keys})
    )
    async with stub(gw) as s:
        assert (await s.Chat(grpc_chat(), metadata=auth(NEW))).text
        for call in (
            s.Chat(grpc_chat(), metadata=auth(LAPSED)),
            s.ListModels(pb.ListModelsRequest(), metadata=auth(LAPSED)),
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await call
            assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert "expired" in (caught.value.details() or "")
            assert LAPSED not in (caught.value.details() or "")
    assert em.stats.requests == 1


def test_an_env_secret_with_a_trailing_newline_matches_the_key(tmp_path: Path) -> None:
    """A secret file or ``echo`` leaves a newline; the presented key never has one."""
    from gateway.app.runtime import keyring_from
    from gateway.security.admin_tokens import admin_tokens_from

    text = config_with('      - {key: "env:TENANT_KEY", name: q1}', tmp_path)
    text = text.replace(f'admin: {{token: "{sha("a")}"}}', 'admin: {token: "env:ADMIN_TOKEN"}')
    config = parse(text)
    environ = {"TENANT_KEY": f" {NEW}\r\n", "ADMIN_TOKEN": "demo-admin\n"}
    found = keyring_from(config, environ).authenticate(f"Bearer {NEW}")
    assert found is not None and found[0].name == "t" and found[0].key == "q1"
    identity = admin_tokens_from(config.admin, environ).authenticate("Bearer demo-admin")
    assert identity is not None and identity.role.name == "admin"


def test_a_blank_env_secret_is_a_config_error(tmp_path: Path) -> None:
    config = parse(config_with('      - "env:TENANT_KEY"', tmp_path))
    with pytest.raises(ConfigError, match="TENANT_KEY is empty"):
        config.tenants[0].api_keys[0].digests({"TENANT_KEY": " \n"})
