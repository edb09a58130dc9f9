"""TLS to backends (issue 21 item 3): verification on by default, a CA bundle, an
SNI/host override and a client certificate for a backend behind an mTLS sidecar;
a vLLM emulator served over TLS (trustme certificates), the gateway in front."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import trustme
from aiohttp import web

from emulators.vllm import EmulatorConfig, VllmEmulator
from tests.conftest import GLOBAL_KEY, MODEL, SERVED, GatewayFactory, gateway_config

TLSBackend = Callable[..., Awaitable[str]]


@pytest.fixture
async def tls_backend() -> AsyncIterator[TLSBackend]:
    runners: list[web.AppRunner] = []

    async def start(leaf: trustme.LeafCert, client_ca: trustme.CA | None = None) -> str:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        leaf.configure_cert(ctx)
        if client_ca is not None:  # an mTLS sidecar: no client certificate, no service
            ctx.verify_mode = ssl.CERT_REQUIRED
            client_ca.configure_trust(ctx)
        emulator = VllmEmulator(EmulatorConfig(served_models=(SERVED,)))
        runner = web.AppRunner(emulator.app(), handler_cancellation=True, access_log=None)
        await runner.setup()
        runners.append(runner)
        site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        return f"https://127.0.0.1:{runner.addresses[0][1]}"

    yield start
    for runner in runners:
        await runner.cleanup()


async def _status(gateways: GatewayFactory, url: str, tls: dict[str, Any] | None) -> int:
    extra = {} if tls is None else {"tls": tls}
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", url, extra)]))
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    headers = {"Authorization": f"Bearer {GLOBAL_KEY}"}
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r,
    ):
        await r.read()
        return r.status


def _ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / f"ca-{id(ca)}.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


async def test_a_self_signed_backend_is_refused_unless_its_ca_is_configured(
    gateways: GatewayFactory, tls_backend: TLSBackend, tmp_path: Path
) -> None:
    ca = trustme.CA()
    url = await tls_backend(ca.issue_cert("127.0.0.1"))
    assert await _status(gateways, url, None) >= 500  # verification is on by default
    assert await _status(gateways, url, {"ca_file": _ca_file(trustme.CA(), tmp_path)}) >= 500
    assert await _status(gateways, url, {"ca_file": _ca_file(ca, tmp_path)}) == 200


async def test_server_name_override_for_a_backend_reached_by_address(
    gateways: GatewayFactory, tls_backend: TLSBackend, tmp_path: Path
) -> None:
    ca = trustme.CA()
    url = await tls_backend(ca.issue_cert("vllm.fra.internal"))  # not 127.0.0.1
    ca_file = _ca_file(ca, tmp_path)
    assert await _status(gateways, url, {"ca_file": ca_file}) >= 500
    tls = {"ca_file": ca_file, "server_name": "vllm.fra.internal"}
    assert await _status(gateways, url, tls) == 200


async def test_client_certificate_for_a_backend_behind_an_mtls_sidecar(
    gateways: GatewayFactory, tls_backend: TLSBackend, tmp_path: Path
) -> None:
    ca, clients = trustme.CA(), trustme.CA()
    url = await tls_backend(ca.issue_cert("127.0.0.1"), client_ca=clients)
    ca_file = _ca_file(ca, tmp_path)
    assert await _status(gateways, url, {"ca_file": ca_file}) >= 500
    me = clients.issue_cert("meridian.internal")
    me.cert_chain_pems[0].write_to_path(str(tmp_path / "me.pem"))
    me.private_key_pem.write_to_path(str(tmp_path / "me.key"))
    tls = {"ca_file": ca_file, "cert": str(tmp_path / "me.pem"), "key": str(tmp_path / "me.key")}
    assert await _status(gateways, url, tls) == 200
