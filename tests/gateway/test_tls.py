"""TLS on the listeners (issue 21 item 1), judged by real clients: the openai SDK,
aiohttp, grpcio and Python's ssl; test CAs from trustme."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import httpx2
import openai
import pytest
import trustme
from pydantic import ValidationError

from gateway.app.server import Gateway
from gateway.security.tls import TLSError
from meridian_proto.meridian.v1 import inference_pb2_grpc as pb_grpc
from tests.conftest import (
    ADMIN_TOKEN,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)
from tests.gateway.test_grpc_helpers import auth, chat


@dataclass
class Files:
    dir: Path
    ca: trustme.CA

    @property
    def cert(self) -> str:
        return str(self.dir / "cert.pem")

    @property
    def key(self) -> str:
        return str(self.dir / "key.pem")

    def issue(self, ca: trustme.CA | None = None) -> trustme.LeafCert:
        """A new leaf for 127.0.0.1 written over the listener's files."""
        leaf = (ca or self.ca).issue_cert("127.0.0.1", "localhost")
        tmp = self.dir / "cert.tmp"
        for i, blob in enumerate(leaf.cert_chain_pems):
            blob.write_to_path(str(tmp), append=i > 0)
        leaf.private_key_pem.write_to_path(str(self.dir / "key.tmp"))
        # each file replaced whole: a reader sees the old file or the new one
        (self.dir / "key.tmp").replace(self.key)
        tmp.replace(self.cert)
        return leaf

    def tls(self, **extra: Any) -> dict[str, Any]:
        return {"cert": self.cert, "key": self.key, "poll_s": 0.05, **extra}

    def client_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context()
        self.ca.configure_trust(ctx)
        return ctx


@pytest.fixture
def files(tmp_path: Path) -> Files:
    f = Files(tmp_path, trustme.CA())
    f.issue()
    return f


async def _tls_gateway(
    emulators: EmulatorFactory, gateways: GatewayFactory, files: Files, **emulator: Any
) -> Gateway:
    em = await emulators(**emulator)
    config = gateway_config(
        [("fra", "onprem:fra1", "v1", em.url)],
        listen={
            "grpc": "127.0.0.1:0",
            "tls": {"http": files.tls(), "admin": files.tls(), "grpc": files.tls()},
        },
    )
    return await gateways(config)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


async def _peer_cert(port: int, ctx: ssl.SSLContext, alpn: list[str] | None = None) -> bytes:
    if alpn:
        ctx.set_alpn_protocols(alpn)
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True)
        assert der is not None
        return bytes(der)
    finally:
        writer.close()


def _der(leaf: trustme.LeafCert) -> bytes:
    return ssl.PEM_cert_to_DER_cert(leaf.cert_chain_pems[0].bytes().decode())


async def test_openai_sdk_over_https_with_a_custom_ca(
    emulators: EmulatorFactory, gateways: GatewayFactory, files: Files
) -> None:
    gw = await _tls_gateway(emulators, gateways, files)
    assert gw.http_url.startswith("https://") and gw.admin_url.startswith("https://")
    http = openai.DefaultAsyncHttpxClient(verify=files.client_context())
    client = openai.AsyncOpenAI(
        base_url=gw.http_url + "/v1", api_key=GLOBAL_KEY, http_client=http, max_retries=0
    )
    async with client:
        reply = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )
        assert reply.choices[0].message.content
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=4, stream=True
        )
        assert "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    # a client that does not trust the CA is refused at the handshake
    plain = openai.AsyncOpenAI(base_url=gw.http_url + "/v1", api_key=GLOBAL_KEY, max_retries=0)
    async with plain:
        with pytest.raises(openai.APIConnectionError):
            await plain.models.list()
    # the admin listener too
    connector = aiohttp.TCPConnector(ssl=files.client_context())
    async with aiohttp.ClientSession(connector=connector) as s:
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
        async with s.get(gw.admin_url + "/admin/v1/status", headers=headers) as r:
            assert r.status == 200


async def test_tls_12_and_13_only_aead_suites_and_alpn(
    emulators: EmulatorFactory, gateways: GatewayFactory, files: Files
) -> None:
    gw = await _tls_gateway(emulators, gateways, files)
    port = _port(gw.http_url)
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        ctx = files.client_context()
        ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old versions
        ctx.minimum_version = ctx.maximum_version = version
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await _peer_cert(port, ctx)
    ctx = files.client_context()
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ALL:@SECLEVEL=0")
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx)
    sslobj = writer.get_extra_info("ssl_object")
    cipher, version, _ = sslobj.cipher()
    assert (
        version == "TLSv1.2"
        and cipher.startswith("ECDHE")
        and ("GCM" in cipher or "CHACHA" in cipher)
    )
    assert sslobj.selected_alpn_protocol() == "http/1.1"
    writer.close()
    openssl = shutil.which("openssl")
    if openssl is not None:  # the same, from another TLS stack's client
        for flag in ("-tls1", "-tls1_1"):
            done = await asyncio.to_thread(
                subprocess.run,
                [openssl, "s_client", "-connect", f"127.0.0.1:{port}", flag,
                 "-cipher", "DEFAULT:@SECLEVEL=0"],
                input=b"", capture_output=True, timeout=10,
            )  # fmt: skip
            assert done.returncode != 0, done.stdout


async def test_bad_certificate_files_are_one_line_at_start(
    emulators: EmulatorFactory, files: Files
) -> None:
    em = await emulators()
    Path(files.key).write_text("not a key\n")
    config = gateway_config(
        [("fra", "onprem:fra1", "v1", em.url)], listen={"tls": {"http": files.tls()}}
    )
    gw = Gateway(config)
    with pytest.raises(TLSError, match=r"listen\.tls\.http: cannot load"):
        await gw.start()
    tls = {"grpc": files.tls(min_version="1.3")}
    with pytest.raises(ValidationError, match=r"cannot refuse 1\.2"):
        gateway_config([("fra", "onprem:fra1", "v1", em.url)], listen={"tls": tls})


async def test_rotation_under_50_streams_loses_none_and_new_connections_see_the_new_cert(
    emulators: EmulatorFactory, gateways: GatewayFactory, files: Files
) -> None:
    gw = await _tls_gateway(emulators, gateways, files, itl_s=0.02)
    port = _port(gw.http_url)
    before = await _peer_cert(port, files.client_context())
    http = openai.DefaultAsyncHttpxClient(
        verify=files.client_context(), limits=httpx2.Limits(max_connections=60)
    )
    client = openai.AsyncOpenAI(
        base_url=gw.http_url + "/v1", api_key=GLOBAL_KEY, http_client=http, max_retries=0
    )
    started = 0

    async def one() -> str:
        nonlocal started
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=40, stream=True
        )
        started += 1
        parts = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        return "".join(parts)

    async with client:
        tasks = [asyncio.create_task(one()) for _ in range(50)]
        await wait_for(lambda: started == 50, timeout=20)
        leaf = files.issue()
        await wait_for(lambda: all(c.rotations for c in gw._tls.certs), timeout=10)
        after = await _peer_cert(port, files.client_context())
        assert after != before and after == _der(leaf)
        texts = await asyncio.gather(*tasks)
    assert all(texts) and len(set(texts)) == 1  # every stream whole, none cut
    # a half-written pair (a key that does not match) is ignored: the old stays in force
    files.ca.issue_cert("127.0.0.1").private_key_pem.write_to_path(files.key)
    assert not any(c.poll() for c in gw._tls.certs)
    assert await _peer_cert(port, files.client_context()) == _der(leaf)


async def test_grpc_over_tls_and_rotation_under_streams(
    emulators: EmulatorFactory, gateways: GatewayFactory, files: Files
) -> None:
    gw = await _tls_gateway(emulators, gateways, files, itl_s=0.02)
    ca = files.ca.cert_pem.bytes()
    creds = grpc.ssl_channel_credentials(root_certificates=ca)
    async with grpc.aio.secure_channel(gw.grpc_address, creds) as channel:
        s = pb_grpc.InferenceStub(channel)
        calls = [s.StreamChat(chat(40), metadata=auth()) for _ in range(20)]
        firsts = [await c.read() for c in calls]
        assert all(f is not grpc.aio.EOF for f in firsts)
        leaf = files.issue()
        # a new channel makes a new handshake, which picks up the new certificate
        async with grpc.aio.secure_channel(gw.grpc_address, creds) as fresh:
            reply = await pb_grpc.InferenceStub(fresh).Chat(chat(4), metadata=auth())
            assert reply.text
        for c in calls:
            while await c.read() is not grpc.aio.EOF:
                pass
            assert await c.code() == grpc.StatusCode.OK
    grpc_port = _port(gw.grpc_address)
    ctx = files.client_context()
    assert await _peer_cert(grpc_port, ctx, ["h2"]) == _der(leaf)
    ctx = files.client_context()
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await _peer_cert(grpc_port, ctx, ["h2"])
    # a channel that does not trust the CA cannot connect
    other = grpc.ssl_channel_credentials(root_certificates=trustme.CA().cert_pem.bytes())
    async with grpc.aio.secure_channel(gw.grpc_address, other) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await pb_grpc.InferenceStub(channel).Chat(chat(4), metadata=auth(), timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
