"""The system under test: an emulated vLLM upstream, the gateway in front of it,
and optional contenders on the same upstream: nginx (the reference for a
pass-through proxy's cost, when installed), the floors of the gateway's stack
(``aiohttp``, a bare HTTP pass-through, :mod:`bench.floor`; ``relay``, a byte
relay on uvloop, :mod:`bench.relay`) and the LiteLLM proxy.

Each runs as its own process on free loopback ports, started with a deadline
on readiness and always stopped when the ``with`` block ends, whatever ended
it. The gateway gets a throwaway config (one region, one model, one backend,
one tenant) and a random API key whose SHA-256 digest is all the config holds.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from bench.procs import Child, Pinning, free_port, wait_http_ok

SERVED_MODEL = "meta-llama/Llama-3.1-8B-Instruct"
GATEWAY_MODEL = "bench-model"
_READY_S = 30.0
_LITELLM_READY_S = 90.0  # it imports a great deal before it listens


@dataclass(frozen=True, slots=True)
class Upstream:
    """How the emulated vLLM behaves: time to first token, inter-token gap, length."""

    ttft_ms: float
    itl_ms: float
    max_tokens: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where one contender takes chat completions, and what it needs to be called."""

    name: str
    url: str  # the full /v1/chat/completions URL
    model: str
    headers: dict[str, str]
    pid: int | None  # the proxy process whose CPU and memory we report; None if direct


@dataclass(frozen=True, slots=True)
class Stack:
    emulator_pid: int
    emulator_port: int
    endpoints: tuple[Endpoint, ...]

    def endpoint(self, name: str) -> Endpoint | None:
        return next((e for e in self.endpoints if e.name == name), None)


def _bin(name: str) -> str | None:
    """A console script from this interpreter's environment, else from PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def litellm_available() -> bool:
    """The LiteLLM *proxy*: the dev extra has LiteLLM's SDK (a client judge) without
    the proxy's server dependencies, which ``pip install 'litellm[proxy]'`` adds."""
    return _bin("litellm") is not None and importlib.util.find_spec("fastapi") is not None


def nginx_bin() -> str | None:
    """nginx from PATH, else where Debian installs it (/usr/sbin is not on every PATH)."""
    found = shutil.which("nginx")
    if found is not None:
        return found
    return "/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None


def nginx_config(port: int, upstream_port: int, workdir: Path) -> str:
    """A pass-through reverse proxy, set up the way one fronts an SSE upstream.

    One worker (the gateway's default is one process too), no response or
    request buffering so each chunk is forwarded as it arrives, HTTP/1.1 with
    a keep-alive pool to the upstream, keep-alive limits high enough that the
    load generator's connections are never recycled during a run, and no
    access log (the gateway is run without one as well). Every path nginx
    writes is under ``workdir``, so it runs unprivileged and beside other runs.
    """
    tmp = workdir / f"nginx-{port}"
    temp_paths = "\n".join(
        f"    {kind}_temp_path {tmp}/{kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    return f"""\
worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
{temp_paths}
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    upstream emulator {{
        server 127.0.0.1:{upstream_port};
        keepalive 1024;
        keepalive_requests 1000000;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://emulator;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_buffering off;
            proxy_request_buffering off;
            proxy_read_timeout 600s;
        }}
    }}
}}
"""


def write_nginx_config(port: int, upstream_port: int, workdir: Path) -> Path:
    """The config file for ``nginx -c``, and the directories it names."""
    (workdir / f"nginx-{port}").mkdir(parents=True, exist_ok=True)
    path = workdir / f"nginx-{port}.conf"
    path.write_text(nginx_config(port, upstream_port, workdir))
    return path


def nginx_argv(nginx: str, config: Path) -> list[str]:
    """``-e`` so nginx never opens its compiled-in log before reading ``config``."""
    prefix = config.parent
    return [nginx, "-p", str(prefix), "-e", str(prefix / "nginx-startup.log"), "-c", str(config)]


def gateway_config(
    http_port: int,
    admin_port: int,
    upstream_port: int,
    key: str,
    store: Path | None = None,
    access_log: bool = False,
    pacing: bool = True,
) -> dict[str, Any]:
    """``store``: an SQLite file, which ``--workers N`` needs (the workers share it).
    ``access_log``: the default access log (as production runs), to measure its cost.
    ``pacing``: ``limits.pacing`` (on by default, as in production)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    config: dict[str, Any] = {
        "listen": {
            "http": f"127.0.0.1:{http_port}",
            "admin": f"127.0.0.1:{admin_port}",
            "grpc": None,  # no default port that a concurrent run or the demo could hold
        },
        "admin": {"token": "env:MERIDIAN_ADMIN_TOKEN"},
        "regions": [{"name": "onprem:bench1", "tags": ["EU"]}],
        "models": [{"name": GATEWAY_MODEL, "versions": {"v1": 100}}],
        "backends": [
            {
                "name": "bench-v1",
                "model": GATEWAY_MODEL,
                "version": "v1",
                "region": "onprem:bench1",
                "provider": "vllm",
                "url": f"http://127.0.0.1:{upstream_port}",
                "served_model": SERVED_MODEL,
                # The upstream pool holds twice this: it must not cap the
                # idle-stream probe (bench.memory), which opens up to 10,000.
                "max_concurrency": 16384,
            }
        ],
        "tenants": [{"name": "bench", "api_keys": [f"sha256:{digest}"]}],
        # The idle-stream probe holds streams whose first token never comes for
        # as long as opening 10,000 takes: longer than the default 30 s.
        "timeouts": {"first_token_s": 900.0},
        # As nginx's `access_log off`: the contenders do the same work per request.
        "observability": {"access_log": {"enabled": access_log}},
        "limits": {"pacing": pacing},
    }
    if store is not None:
        config["store"] = {"path": str(store)}
    return config


def _litellm_config(upstream_port: int) -> dict[str, Any]:
    return {
        "model_list": [
            {
                "model_name": GATEWAY_MODEL,
                "litellm_params": {
                    "model": f"openai/{SERVED_MODEL}",
                    "api_base": f"http://127.0.0.1:{upstream_port}/v1",
                    "api_key": "unused",
                },
            }
        ]
    }


def _meridian() -> str:
    path = _bin("meridian")
    if path is None:
        raise FileNotFoundError("the 'meridian' command is not installed in this environment")
    return path


@contextmanager
def start_stack(
    upstream: Upstream,
    workdir: Path,
    *,
    gateway: bool,
    litellm: bool,
    workers: int = 1,
    nginx: bool = False,
    floor: bool = False,
    pin: Pinning | None = None,
    gateway_wrap: tuple[str, ...] = (),
    gateway_ready_s: float = _READY_S,
    access_log: bool = False,
    pacing: bool = True,
) -> Iterator[Stack]:
    """Start the emulator (always) and the proxies asked for; stop them all on exit.

    With ``pin``, the emulator runs on the load cores and every proxy on the proxy core.
    ``gateway_wrap`` prefixes the gateway's command (a profiler, e.g. ``python -m cProfile``);
    ``gateway_ready_s`` is how long it may take to become ready (longer under valgrind).
    """
    env = dict(os.environ)
    env["MERIDIAN_ADMIN_TOKEN"] = secrets.token_urlsafe(24)
    env["PYTHONUNBUFFERED"] = "1"
    with ExitStack() as stop:
        emu_port = free_port()
        emulator = Child(
            "emulator",
            [
                _meridian(),
                "emulate",
                "vllm",
                "--host",
                "127.0.0.1",
                "--port",
                str(emu_port),
                "--ttft-ms",
                f"{upstream.ttft_ms:g}",
                "--itl-ms",
                f"{upstream.itl_ms:g}",
                "--max-tokens",
                str(upstream.max_tokens),
            ],
            workdir / f"emulator-{emu_port}.log",
            env,
            pin.load if pin else None,
        )
        stop.callback(emulator.stop)
        wait_http_ok(emulator, f"http://127.0.0.1:{emu_port}/health", _READY_S)
        endpoints = [
            Endpoint(
                "direct",
                f"http://127.0.0.1:{emu_port}/v1/chat/completions",
                SERVED_MODEL,
                {},
                None,
            )
        ]
        proxy_cpus = pin.proxy if pin else None
        if gateway:
            endpoints.append(
                _start_gateway(
                    stop,
                    emu_port,
                    workdir,
                    env,
                    workers,
                    proxy_cpus,
                    gateway_wrap,
                    gateway_ready_s,
                    access_log,
                    pacing,
                )
            )
        if nginx:
            endpoints.append(_start_nginx(stop, emu_port, workdir, env, proxy_cpus))
        for name in ("aiohttp", "relay") if floor else ():
            endpoints.append(_start_script(name, stop, emu_port, workdir, env, proxy_cpus))
        if litellm:
            endpoints.append(_start_litellm(stop, emu_port, workdir, env, proxy_cpus))
        yield Stack(emulator.pid, emu_port, tuple(endpoints))


def _start_gateway(
    stop: ExitStack,
    emu_port: int,
    workdir: Path,
    env: dict[str, str],
    workers: int,
    cpus: frozenset[int] | None,
    wrap: tuple[str, ...] = (),
    ready_s: float = _READY_S,
    access_log: bool = False,
    pacing: bool = True,
) -> Endpoint:
    port, admin_port = free_port(), free_port()
    key = "sk-bench-" + secrets.token_urlsafe(18)
    config = workdir / f"gateway-{port}.yaml"
    store = workdir / f"gateway-{port}.sqlite" if workers != 1 else None
    config.write_text(
        yaml.safe_dump(
            gateway_config(port, admin_port, emu_port, key, store, access_log, pacing),
            sort_keys=False,
        )
    )
    argv = [*wrap, _meridian(), "serve", "--config", str(config)]
    if workers != 1:
        argv += ["--workers", str(workers)]
    child = Child("gateway", argv, workdir / f"gateway-{port}.log", env, cpus)
    stop.callback(child.stop)
    wait_http_ok(child, f"http://127.0.0.1:{port}/readyz", ready_s)
    return Endpoint(
        "gateway",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        GATEWAY_MODEL,
        {"Authorization": f"Bearer {key}"},
        child.pid,
    )


def _start_nginx(
    stop: ExitStack,
    emu_port: int,
    workdir: Path,
    env: dict[str, str],
    cpus: frozenset[int] | None,
) -> Endpoint:
    nginx = nginx_bin()
    if nginx is None:
        raise FileNotFoundError("nginx is not installed (make bench-deps installs it)")
    port = free_port()
    argv = nginx_argv(nginx, write_nginx_config(port, emu_port, workdir))
    return _pass_through(stop, Child("nginx", argv, workdir / f"nginx-{port}.log", env, cpus), port)


def _start_script(
    name: str,
    stop: ExitStack,
    emu_port: int,
    workdir: Path,
    env: dict[str, str],
    cpus: frozenset[int] | None,
) -> Endpoint:
    """One of the bench's own pass-throughs (bench/floor.py, bench/relay.py) by its name."""
    port = free_port()
    argv = [
        sys.executable,
        str(Path(__file__).with_name(_SCRIPTS[name])),  # by path: the child runs in the workdir
        "--port",
        str(port),
        "--upstream",
        f"http://127.0.0.1:{emu_port}",
    ]
    return _pass_through(stop, Child(name, argv, workdir / f"{name}-{port}.log", env, cpus), port)


_SCRIPTS = {"aiohttp": "floor.py", "relay": "relay.py"}


def _pass_through(stop: ExitStack, child: Child, port: int) -> Endpoint:
    """A started pass-through proxy on ``port``, once it answers; clients call it with the
    served model's name, as they would the emulator."""
    stop.callback(child.stop)
    # The emulator answers /health; through the proxy that proves the whole path.
    wait_http_ok(child, f"http://127.0.0.1:{port}/health", _READY_S)
    return Endpoint(
        child.name, f"http://127.0.0.1:{port}/v1/chat/completions", SERVED_MODEL, {}, child.pid
    )


def _start_litellm(
    stop: ExitStack,
    emu_port: int,
    workdir: Path,
    env: dict[str, str],
    cpus: frozenset[int] | None,
) -> Endpoint:
    litellm = _bin("litellm")
    assert litellm is not None, "checked by litellm_available()"
    port = free_port()
    config = workdir / f"litellm-{port}.yaml"
    config.write_text(yaml.safe_dump(_litellm_config(emu_port), sort_keys=False))
    argv = [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    child = Child("litellm", argv, workdir / f"litellm-{port}.log", env, cpus)
    stop.callback(child.stop)
    wait_http_ok(child, f"http://127.0.0.1:{port}/health/liveliness", _LITELLM_READY_S)
    return Endpoint(
        "litellm",
        f"http://127.0.0.1:{port}/v1/chat/completions",
        GATEWAY_MODEL,
        {},
        child.pid,
    )
