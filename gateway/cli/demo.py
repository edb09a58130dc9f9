"""``meridian demo``: the gateway plus emulated backends in five regions, in one process.

Credentials are fixed and documented so examples can be copied, which is why
the demo binds loopback only: ``sk-demo-global`` (tenant allowed everywhere),
``sk-demo-eu`` (EU-only tenant), admin token ``demo-admin``.

AWS regions run SageMaker emulators, GCP regions Vertex emulators, on-prem a
vLLM emulator. The cloud adapters sign with fixed fake credentials
(``credentials: emulator``), so the demo never needs a cloud account.

``--tls``: every listener speaks TLS with a certificate made at start by a
throwaway CA (gateway.security.demo_ca) whose ``ca.pem`` the banner names.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

from emulators.sagemaker import SageMakerEmulator, SageMakerEmulatorConfig
from emulators.vertex import VertexEmulator, VertexEmulatorConfig
from emulators.vllm import EmulatorConfig, VllmEmulator
from gateway.app.server import Gateway
from gateway.config.model import Config
from gateway.security.demo_ca import DemoCertificates, write_demo_certificates
from regions.inventory import Container

MODEL = "llama-3.1-8b-instruct"
SERVED = "meta-llama/Llama-3.1-8B-Instruct"
EMBED_MODEL = "bge-small-en-v1.5"  # POST /v1/embeddings (vLLM's embed task)
EMBED_SERVED = "BAAI/bge-small-en-v1.5"
EMBED_REGIONS = ("onprem:fra1", "aws:us-east-1")  # one in the EU, one in the US
EMBED_ENDPOINT = "bge-small-en-v15"  # the US one: a SageMaker endpoint running vLLM
ADMIN_TOKEN = "demo-admin"
_NO_RELOAD = "SIGHUP: the demo has no config file to reload; ignored"


@dataclass(frozen=True)
class DemoBackend:
    region: str
    tags: tuple[str, ...]
    provider: str
    version: str
    ttft_ms: float
    itl_ms: float
    price_in: float
    price_out: float
    flavor: str = ""
    """The SageMaker container or the Vertex route."""


SRP = "stream_raw_predict"  # serves chat and completions (the chat route is chat-only)

BACKENDS = (
    DemoBackend("aws:us-east-1", ("US",), "sagemaker", "v1", 45, 9, 0.22, 0.60, "vllm"),
    DemoBackend("aws:eu-west-1", ("EU", "IE"), "sagemaker", "v1", 60, 10, 0.25, 0.70, "tgi"),
    DemoBackend("gcp:europe-west4", ("EU", "NL"), "vertex", "v1", 50, 9, 0.20, 0.55, SRP),
    DemoBackend("gcp:us-central1", ("US",), "vertex", "v1", 35, 8, 0.20, 0.55, SRP),
    DemoBackend("onprem:fra1", ("EU", "DE"), "vllm", "v1", 25, 7, 0.08, 0.15),
    DemoBackend("aws:us-east-1", ("US",), "sagemaker", "v2", 40, 8, 0.22, 0.60, "vllm"),
    DemoBackend("gcp:europe-west4", ("EU", "NL"), "vertex", "v2", 45, 8, 0.20, 0.55, SRP),
)
VERTEX_PROJECT = "meridian-demo"
VERTEX_ENDPOINT = "1234567890"


def _endpoint_name(b: DemoBackend) -> str:
    return f"llama-31-8b-{b.version}"


def _cloud_options(b: DemoBackend) -> dict[str, object]:
    """The provider's options block, with the emulators' fake credentials."""
    if b.provider == "sagemaker":
        options = {"endpoint_name": _endpoint_name(b), "container": b.flavor}
        return {"sagemaker": {**options, "credentials": "emulator"}}
    if b.provider == "vertex":
        options = {"project": VERTEX_PROJECT, "endpoint_id": VERTEX_ENDPOINT, "route": b.flavor}
        return {"vertex": {**options, "credentials": "emulator"}}
    return {}


Emulator = VllmEmulator | SageMakerEmulator | VertexEmulator


def _emulator(b: DemoBackend) -> Emulator:
    name = f"{b.region}-{b.version}"
    ttft, itl = b.ttft_ms / 1000, b.itl_ms / 1000
    if b.provider == "sagemaker":
        endpoints = {_endpoint_name(b): b.flavor}
        return SageMakerEmulator(
            SageMakerEmulatorConfig(
                endpoints=endpoints,  # type: ignore[arg-type]
                served_model=SERVED,
                ttft_s=ttft,
                itl_s=itl,
                name=name,
            )
        )
    if b.provider == "vertex":
        location = b.region.split(":", 1)[1]
        return VertexEmulator(
            VertexEmulatorConfig(
                endpoints=(VERTEX_ENDPOINT,),
                project=VERTEX_PROJECT,
                location=location,
                served_model=SERVED,
                ttft_s=ttft,
                itl_s=itl,
                name=name,
            )
        )
    return VllmEmulator(EmulatorConfig(served_models=(SERVED,), ttft_s=ttft, itl_s=itl, name=name))


def _embed_provider(region: str) -> dict[str, object]:
    if not region.startswith("aws:"):
        return {"provider": "vllm"}
    options = {"endpoint_name": EMBED_ENDPOINT, "container": "vllm", "credentials": "emulator"}
    return {"provider": "sagemaker", "sagemaker": options}


def _embedder(region: str) -> Emulator:
    name = f"{region}-embed"
    if region.startswith("aws:"):
        endpoints: dict[str, Container] = {EMBED_ENDPOINT: "vllm"}
        return SageMakerEmulator(
            SageMakerEmulatorConfig(endpoints=endpoints, served_model=EMBED_SERVED, name=name)
        )
    return VllmEmulator(EmulatorConfig(served_models=(EMBED_SERVED,), name=name))


def _sha(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def demo_config(
    urls: list[str],
    http: str,
    admin: str,
    grpc: str | None = None,
    redis: str | None = None,
    embed_urls: list[str] | None = None,
    tls: DemoCertificates | None = None,
) -> Config:
    """The demo's config; ``redis`` puts its control plane in Redis (several
    demos, or a demo and `meridian serve`, then share weights and canaries).
    ``embed_urls``: the embedding model's servers, one per EMBED_REGIONS (vLLM
    on-prem, a SageMaker vLLM endpoint in AWS).
    ``tls``: the certificate every listener presents."""
    regions: dict[str, tuple[str, ...]] = {}
    backends: list[dict[str, object]] = [
        {
            "name": f"{region.replace(':', '-')}-embed",
            "model": EMBED_MODEL,
            "version": "v1",
            "region": region,
            "url": url,
            "served_model": EMBED_SERVED,
            **_embed_provider(region),
        }
        for region, url in zip(EMBED_REGIONS, embed_urls or (), strict=False)
    ]
    for spec, url in zip(BACKENDS, urls, strict=True):
        regions[spec.region] = spec.tags
        backends.append(
            {
                "name": f"{spec.region.replace(':', '-')}-{spec.version}",
                "model": MODEL,
                "version": spec.version,
                "region": spec.region,
                "provider": spec.provider,
                "url": url,
                "served_model": SERVED,
                "price": {"input_per_m": spec.price_in, "output_per_m": spec.price_out},
                # What each serves is its container's (routing.capabilities): the
                # cloud emulators' vLLM containers answer tools, JSON output,
                # logprobs and n as the vLLM emulator does; TGI's native payload does not.
                **_cloud_options(spec),
            }
        )
    return Config.model_validate(
        {
            "listen": {"http": http, "admin": admin, "grpc": grpc, "tls": _listen_tls(tls)},
            "store": {"kind": "redis", "url": redis} if redis else {"kind": "embedded"},
            "admin": {"token": _sha(ADMIN_TOKEN)},
            "regions": [{"name": n, "tags": list(t)} for n, t in regions.items()],
            "models": [{"name": MODEL, "versions": {"v1": 100, "v2": 0}}]
            + ([{"name": EMBED_MODEL, "versions": {"v1": 100}}] if embed_urls else []),
            "backends": backends,
            "tenants": [
                {"name": "demo-global", "api_keys": [_sha("sk-demo-global")]},
                {"name": "demo-eu", "api_keys": [_sha("sk-demo-eu")], "residency": ["EU"]},
            ],
        }
    )


def _listen_tls(tls: DemoCertificates | None) -> dict[str, object]:
    if tls is None:
        return {}
    pair = {"cert": str(tls.cert), "key": str(tls.key)}
    return {"http": pair, "admin": pair, "grpc": pair}


class Demo:
    """The demo world; tests start it on free ports (``127.0.0.1:0`` everywhere)."""

    def __init__(
        self,
        http: str = "127.0.0.1:8080",
        admin: str = "127.0.0.1:9090",
        grpc: str | None = "127.0.0.1:50051",
        redis: str | None = None,
        *,
        tls: bool = False,
    ) -> None:
        self._http = http
        self._admin = admin
        self._grpc = grpc
        self._redis = redis
        self.emulators = [_emulator(b) for b in BACKENDS]
        self.embedders = [_embedder(r) for r in EMBED_REGIONS]
        self.gateway: Gateway | None = None
        self._tls = tls
        self.certificates: DemoCertificates | None = None  # made by start when tls

    async def start(self) -> Gateway:
        try:
            if self._tls:
                made = Path(tempfile.mkdtemp(prefix="meridian-demo-tls-"))
                self.certificates = write_demo_certificates(made)
            urls = [await e.start("127.0.0.1", 0) for e in self.emulators]
            embed_urls = [await e.start("127.0.0.1", 0) for e in self.embedders]
            config = demo_config(
                urls,
                self._http,
                self._admin,
                self._grpc,
                self._redis,
                embed_urls,
                self.certificates,
            )
            self.gateway = Gateway(config)
            await self.gateway.start()
        except BaseException:  # a busy port: close the emulators too, then the one error line
            self.gateway = None  # Gateway.start closed itself
            await self.stop()
            raise
        return self.gateway

    async def stop(self) -> None:
        if self.gateway is not None:
            await self.gateway.stop(grace=1.0)
        for e in self.emulators + self.embedders:
            await e.stop()
        if self.certificates is not None:  # a new CA every start: nothing to keep
            shutil.rmtree(self.certificates.ca.parent, ignore_errors=True)


def banner(gateway: Gateway, ca: Path | None = None) -> str:
    """``ca``: the demo CA's PEM file when the listeners speak TLS."""
    curl = "curl -s" if ca is None else f"curl -s --cacert {ca}"
    trust = "" if ca is None else f"\n  TLS        every listener; trust {ca}\n"
    return f"""Meridian demo: model {MODEL} (v1 100%, v2 ready for a canary)
in {len({b.region for b in BACKENDS})} regions: {", ".join(sorted({b.region for b in BACKENDS}))}

  HTTP API   {gateway.http_url}/v1        keys: sk-demo-global (anywhere), sk-demo-eu (EU only)
  gRPC       {gateway.grpc_address or "off"}          meridian.v1.Inference, same keys
  Admin API  {gateway.admin_url}            token: demo-admin
{trust}
Try:
  {curl} {gateway.http_url}/v1/chat/completions -H 'Authorization: Bearer sk-demo-eu' \\
    -H 'Content-Type: application/json' \\
    -d '{{"model":"{MODEL}","messages":[{{"role":"user","content":"Hello"}}],"stream":true}}'
  {curl} -D- -o/dev/null {gateway.http_url}/v1/chat/completions \\
    -H 'Authorization: Bearer sk-demo-eu' \\
    -d '{{"model":"{MODEL}","messages":[{{"role":"user","content":"Hi"}}]}}' | grep -i x-meridian
  {curl} {gateway.http_url}/v1/embeddings -H 'Authorization: Bearer sk-demo-eu' \\
    -d '{{"model":"{EMBED_MODEL}","input":"Hello"}}'
  {curl} {gateway.admin_url}/metrics -H 'Authorization: Bearer demo-admin' | grep meridian_requests

Ctrl-C stops the demo."""


async def run_demo(
    http: str, admin: str, grpc: str | None, redis: str | None = None, *, tls: bool = False
) -> None:
    demo = Demo(http, admin, grpc, redis, tls=tls)
    gateway = await demo.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP reloads `meridian serve`; the demo has no file to re-read, and must not die of it.
    loop.add_signal_handler(signal.SIGHUP, logging.getLogger("meridian").warning, _NO_RELOAD)
    ca = demo.certificates.ca if demo.certificates else None
    # after the handlers: a signal sent on seeing the banner is handled
    print(banner(gateway, ca), flush=True)
    try:
        await stop.wait()
    finally:
        await demo.stop()
