"""``meridian demo --tls``: every listener over TLS with a CA made at start."""

from __future__ import annotations

import ssl

import aiohttp
import grpc
import openai
import pytest

from gateway.cli.demo import MODEL, Demo, banner
from meridian_proto.meridian.v1 import inference_pb2 as pb
from meridian_proto.meridian.v1 import inference_pb2_grpc as pb_grpc


async def test_the_openai_client_grpc_and_admin_trust_the_demo_ca() -> None:
    demo = Demo("127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", tls=True)
    gw = await demo.start()
    try:
        made = demo.certificates
        assert made is not None and made.key.stat().st_mode & 0o077 == 0
        assert gw.http_url.startswith("https://") and gw.admin_url.startswith("https://")
        assert f"--cacert {made.ca}" in banner(gw, made.ca)
        trust = ssl.create_default_context(cafile=made.ca)
        client = openai.AsyncOpenAI(
            base_url=gw.http_url + "/v1",
            api_key="sk-demo-eu",
            max_retries=0,
            http_client=openai.DefaultAsyncHttpxClient(verify=trust),
        )
        async with client:
            answer = await client.chat.completions.create(
                model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2
            )
        assert answer.choices[0].message.content
        async with aiohttp.ClientSession() as s:
            admin = {"Authorization": "Bearer demo-admin"}
            async with s.get(gw.admin_url + "/metrics", headers=admin, ssl=trust) as r:
                assert r.status == 200
            with pytest.raises(aiohttp.ClientConnectorCertificateError):
                async with s.get(gw.http_url + "/readyz"):  # the system CAs: not the demo's
                    pass
        assert gw.grpc_address is not None
        credentials = grpc.ssl_channel_credentials(made.ca.read_bytes())
        async with grpc.aio.secure_channel(gw.grpc_address, credentials) as channel:
            models = await pb_grpc.InferenceStub(channel).ListModels(
                pb.ListModelsRequest(), metadata=(("authorization", "Bearer sk-demo-eu"),)
            )
        assert MODEL in [m.id for m in models.models]
    finally:
        await demo.stop()
    assert not made.ca.parent.exists()  # a new CA every start, nothing left behind
