"""Shared fixtures: real emulators and real gateways on loopback, under uvloop."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import uvloop
from hypothesis import settings

from emulators.vllm import EmulatorConfig, VllmEmulator
from gateway.app.runtime import Runtime
from gateway.app.server import Gateway
from gateway.config.model import Config
from tests.redis_server import redis_server  # noqa: F401 - the fixture

SERVED = "meta-llama/Llama-3.1-8B-Instruct"
MODEL = "test-model"
GLOBAL_KEY = "sk-test-global"
EU_KEY = "sk-test-eu"
ADMIN_TOKEN = "test-admin-token"


def sha(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


# CI (CI=true, as .ci/run is run) replays each property test's fixed sequence of
# examples: a submission is judged on the same inputs every time. Everywhere else
# every run draws new ones, so `make test` keeps hunting (a failure prints the
# seed to replay it: pytest --hypothesis-seed=N).
settings.register_profile("ci", derandomize=True, database=None, print_blob=True)
settings.register_profile("dev", print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def pytest_asyncio_loop_factories(config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
    """Every async test runs on uvloop, the loop production uses, except those on
    virtual time (``@pytest.mark.looptime``): looptime fast-forwards the clock of
    asyncio's own selector loop, which uvloop does not let it patch."""
    if item.get_closest_marker("looptime") is not None:
        return {"virtual-time": asyncio.new_event_loop}
    return {"uvloop": uvloop.new_event_loop}


async def wait_for(
    predicate: Callable[[], bool], timeout: float = 5.0, interval: float = 0.005
) -> None:
    """Poll a condition until it holds; fail the test at the deadline."""
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(interval)


EmulatorFactory = Callable[..., Awaitable[VllmEmulator]]


@pytest.fixture
async def emulators() -> AsyncIterator[EmulatorFactory]:
    started: list[VllmEmulator] = []

    async def start(**kwargs: Any) -> VllmEmulator:
        kwargs.setdefault("served_models", (SERVED,))
        emulator = VllmEmulator(EmulatorConfig(**kwargs))
        await emulator.start("127.0.0.1", 0)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        await emulator.stop()


def gateway_config(
    backends: list[tuple[str, str, str, str]] | list[tuple[str, str, str, str, dict[str, Any]]],
    *,
    regions: dict[str, list[str]] | None = None,
    versions: dict[str, int] | None = None,
    tenant: dict[str, Any] | None = None,
    **overrides: Any,
) -> Config:
    """``backends`` are (name, region, version, url[, extra fields]) rows of ``test-model``."""
    regions = regions or {
        "aws:us-east-1": ["US"],
        "aws:eu-west-1": ["EU", "IE"],
        "onprem:fra1": ["EU", "DE"],
    }
    data: dict[str, Any] = {
        "listen": {"http": "127.0.0.1:0", "admin": "127.0.0.1:0", "grpc": None},
        "admin": {"token": sha(ADMIN_TOKEN)},
        "regions": [{"name": n, "tags": t} for n, t in regions.items()],
        "models": [{"name": MODEL, "versions": versions or {"v1": 100}}],
        "backends": [
            {
                "name": row[0],
                "model": MODEL,
                "version": row[2],
                "region": row[1],
                "provider": "vllm",
                "url": row[3],
                "served_model": SERVED,
                **(row[4] if len(row) > 4 else {}),
            }
            for row in backends
        ],
        "tenants": [
            {"name": "global", "api_keys": [sha(GLOBAL_KEY)], **(tenant or {})},
            {"name": "eu", "api_keys": [sha(EU_KEY)], "residency": ["EU"]},
        ],
    }
    for key, value in overrides.items():
        data[key] = {**data.get(key, {}), **value}
    return Config.model_validate(data)


GatewayFactory = Callable[..., Awaitable[Gateway]]


def runtime_of(gw: Gateway) -> Runtime:
    """A started gateway's runtime (``Gateway.runtime`` is None until ``start``)."""
    assert gw.runtime is not None, "the gateway is not started"
    return gw.runtime


@pytest.fixture
async def gateways() -> AsyncIterator[GatewayFactory]:
    started: list[Gateway] = []

    async def start(config: Config) -> Gateway:
        gateway = Gateway(config)
        await gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop(grace=0.5)
