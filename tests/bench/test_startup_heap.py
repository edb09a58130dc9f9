"""Start-up's memory: what a gateway imports, and its heap kept out of the collector's way."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

import pytest
import yaml

from bench.procs import Child, free_port, wait_http_ok
from bench.stack import gateway_config as bench_config
from gateway.app.server import Gateway
from gateway.store.embedded import EmbeddedStore
from tests.conftest import EmulatorFactory, gateway_config, wait_for


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()  # the test process's own heap goes back to the collector


async def test_serving_freezes_what_start_up_made(
    emulators: EmulatorFactory, unfrozen: None
) -> None:
    em = await emulators()
    gw = Gateway(gateway_config([("fra", "onprem:fra1", "v1", em.url)]))
    assert gc.get_freeze_count() == 0
    serving = asyncio.create_task(gw.serve_until_signalled())
    try:
        await wait_for(lambda: gc.get_freeze_count() > 0 or serving.done(), timeout=20.0)
        assert gw.http_url  # frozen once it listens
        assert gc.get_freeze_count() > 10_000  # the imports and the runtime, not a handful
    finally:
        os.kill(os.getpid(), signal.SIGTERM)  # the handler serve_until_signalled installed
        await asyncio.wait_for(serving, 20.0)


_STARTED_MODULES = """
import asyncio, json, sys
from bench.stack import gateway_config
from gateway.app.server import Gateway
from gateway.config.model import Config

async def main():
    config = Config.model_validate(gateway_config(0, 0, 9, "sk-unused"))
    gw = Gateway(config, environ={"MERIDIAN_ADMIN_TOKEN": "t" * 32})
    await gw.start()
    await gw.stop(grace=0.0)

asyncio.run(main())
print(json.dumps(sorted(sys.modules)))
"""


def test_a_gateway_without_redis_grpc_or_tls_does_not_import_them() -> None:
    """Idle RSS: redis-py (with the OpenTelemetry SDK it pulls in), grpcio (its
    server, health and reflection modules too) and cryptography (mTLS's request-time
    check) cost ~35 MiB a gateway on the embedded store with no gRPC listener and
    no client_ca never uses."""
    done = subprocess.run(
        [sys.executable, "-c", _STARTED_MODULES],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    unused = {
        "redis",
        "opentelemetry.sdk",
        "grpc",
        "grpc_reflection",
        "grpc_health",
        "gateway.grpc",
        "cryptography",
    }
    assert not unused & loaded
    assert not (set(CONFIG_ONLY) | set(FIRST_USE)) & loaded  # the bench's config: none


def _imported_by_serve(tmp_path: Path) -> set[str]:
    """Every module ``meridian serve`` imported by the time it is ready (``-X importtime``
    lists each on stderr), with the bench's config."""
    http, admin = free_port(), free_port()
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(bench_config(http, admin, free_port(), "sk-unused")))
    env = {**os.environ, "MERIDIAN_ADMIN_TOKEN": "t" * 32}
    argv = [sys.executable, "-X", "importtime", "-m", "gateway.cli.main"]
    child = Child("gateway", [*argv, "serve", "--config", str(config)], tmp_path / "log", env)
    try:
        wait_http_ok(child, f"http://127.0.0.1:{http}/readyz", 30.0)
    finally:
        child.stop()
    lines = (tmp_path / "log").read_text().splitlines()
    return {ln.split("|")[2].strip() for ln in lines if ln.startswith("import time:")}


# What a gateway loads only for a config that uses it: the discovery sources and
# their refresher (``discovery:``), the tenant limiter with its Redis lease scripts
# (a tenant's ``limits:``), the fleet's capacity counts and SQLite (a shared store).
CONFIG_ONLY = (
    "regions.discovery.base",
    "regions.discovery.gce",
    "regions.discovery.netpolicy",
    "regions.discovery.refresh",
    "regions.discovery.sagemaker",
    "gateway.control.limits",
    "gateway.store.lease",
    "gateway.store.lua",
    "gateway.control.capacity",
    "gateway.store.embedded",  # SQLite (~1.6 MiB): a store with a path
    "sqlite3",
)
# What loads with its first use, whatever the config: a replication job's copying.
FIRST_USE = ("regions.replication.region", "regions.replication.journal")


def test_serve_does_not_import_what_only_other_commands_use(tmp_path: Path) -> None:
    """Idle RSS: rich (the admin commands' tables, ~1.3 MiB), multiprocessing (the
    --workers supervisor), prometheus_client's text parser (``meridian top``) are no
    part of a gateway, tenacity (~0.4 MiB) only of one whose attempts failed,
    ``CONFIG_ONLY`` of one whose config uses them (the bench's uses none) and
    ``FIRST_USE`` of one that has used them."""
    loaded = _imported_by_serve(tmp_path)
    assert "gateway.app.server" in loaded  # the listing is whole
    unused = {"rich", "rich.console", "multiprocessing", "prometheus_client.parser", "tenacity"}
    assert not unused & loaded
    assert not set(CONFIG_ONLY) & loaded
    assert not set(FIRST_USE) & loaded


_RELOAD_THEN_START = """
import asyncio, json, sys
from pathlib import Path
import yaml
from bench.stack import gateway_config
from gateway.app.server import Gateway
from gateway.config.model import load

LAZY, path, store = json.loads(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
ENV = {"MERIDIAN_ADMIN_TOKEN": "t" * 32}

def loaded():
    return sorted(m for m in LAZY if m in sys.modules)

async def main():
    data = gateway_config(0, 0, 9, "sk-unused")
    path.write_text(yaml.safe_dump(data))
    gw = Gateway(load(path), ENV, config_path=str(path))
    await gw.start()
    before = loaded()
    # A discovery source, a tenant's limits and a Redis store: every one needs a restart.
    data["tenants"][0]["limits"] = {"requests_per_min": 5}
    data["discovery"] = {
        "initial_timeout_s": 0.0,
        "allowed_networks": ["127.0.0.0/8"],
        "gce": {"project": "meridian-test", "api_endpoint": "http://127.0.0.1:9",
                "credentials": "anonymous", "timeout_s": 1.0},
    }
    data["store"] = {"kind": "redis", "url": "redis://127.0.0.1:9/0"}
    path.write_text(yaml.safe_dump(data))
    outcome = await gw.reloader.reload("test")
    await gw.stop(grace=0.0)
    # The same sections on a fresh start, with a shared (file) store: all of it loads.
    data["store"] = {"path": store}
    path.write_text(yaml.safe_dump(data))
    again = Gateway(load(path), ENV, config_path=str(path))
    await again.start()
    parts = [again.discovery is not None, again.runtime.live.limiter is not None]
    await again.stop(grace=0.0)
    print(json.dumps({"before": before, "outcome": outcome.body(), "after": loaded(),
                      "parts": parts}))

asyncio.run(main())
"""


def test_a_config_that_uses_a_lazy_part_loads_it_and_a_reload_that_adds_it_works(
    tmp_path: Path,
) -> None:
    """``CONFIG_ONLY`` stays out of a gateway started without them; a reload that adds
    a discovery source, a tenant's limits and a Redis store is applied (the sections
    that need a restart named as such), and a gateway started on that config loads
    and runs them."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            _RELOAD_THEN_START,
            json.dumps(CONFIG_ONLY),
            str(tmp_path / "gateway.yaml"),
            str(tmp_path / "state.db"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["before"] == []
    outcome = seen["outcome"]
    assert outcome["applied"] and not outcome["problems"], outcome
    assert {"store", "discovery"} <= set(outcome["restart_needed"]), outcome
    assert any("limits" in change for change in outcome["changes"]), outcome
    assert seen["parts"] == [True, True]
    # GCE discovery alone: the SageMaker source is for a config that names it.
    assert seen["after"] == sorted(set(CONFIG_ONLY) - {"regions.discovery.sagemaker"})


_P = ParamSpec("_P")
_T = TypeVar("_T")


class _CountingExecutor(ThreadPoolExecutor):
    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.submitted = 0

    def submit(self, fn: Callable[_P, _T], /, *args: _P.args, **kwargs: _P.kwargs) -> Future[_T]:
        self.submitted += 1
        return super().submit(fn, *args, **kwargs)


async def _use(store: EmbeddedStore) -> None:
    await store.open()
    try:
        await store.commit({"split/m": {"v1": 100}}, actor="test", action="split.set")
        assert (await store.load()).entries["split/m"] == {"v1": 100}
        assert await store.lease("canary", "me", 5.0)
        await store.add_counts("w", {"n": 1})
    finally:
        await store.close()


async def test_the_in_memory_store_starts_no_thread(tmp_path: Path) -> None:
    """Idle RSS: the in-memory database has no disk to wait for, so its calls run
    inline; a worker thread's stack and malloc arena stayed resident for the process's
    life (the bench config's gateway had no other use for one). A file still goes
    through a thread: the event loop never waits on the disk."""
    loop = asyncio.get_running_loop()
    executor = _CountingExecutor()
    loop.set_default_executor(executor)
    await _use(EmbeddedStore())
    assert executor.submitted == 0
    await _use(EmbeddedStore(str(tmp_path / "state.db")))
    assert executor.submitted > 0
