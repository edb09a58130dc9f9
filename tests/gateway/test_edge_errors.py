"""Errors at the client edge (issue 20): each one a clear 4xx, never a 5xx or a traceback."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest

from failover.executor import Execution
from gateway.app import Gateway
from gateway.http.schema import parse_request
from gateway.pipeline import Pipeline
from regions.emulators.vllm import VllmEmulator
from regions.request import UNRESTRICTED, Kind
from tests.conftest import GLOBAL_KEY, MODEL, EmulatorFactory, GatewayFactory, gateway_config

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}


def chat_body(extra: str = "") -> bytes:
    return (
        f'{{"model": "{MODEL}", "messages": [{{"role": "user", "content": "hi"}}]{extra}}}'
    ).encode()


async def one_backend(
    emulators: EmulatorFactory, gateways: GatewayFactory, **config: Any
) -> tuple[VllmEmulator, Gateway]:
    em = await emulators()
    gw = await gateways(gateway_config([("fra", "onprem:fra1", "v1", em.url)], **config))
    return em, gw


async def post(
    gw: Gateway,
    body: bytes,
    headers: dict[str, str] | None = None,
    path: str = "/v1/chat/completions",
) -> tuple[int, dict[str, object]]:
    async with (
        aiohttp.ClientSession() as s,
        s.post(
            gw.http_url + path,
            data=body,
            headers={**AUTH, "Content-Type": "application/json", **(headers or {})},
        ) as resp,
    ):
        payload = await resp.json(content_type=None)
        return resp.status, payload.get("error", payload)


def tracebacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.exc_info is not None]


def requests_counted(gw: Gateway, status: str) -> float:
    assert gw.runtime is not None
    total = 0.0
    for metric in gw.runtime.metrics.requests.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total") and sample.labels["status"] == status:
                total += sample.value
    return total


# -- item 4: integers beyond 64 bits ------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        (', "max_tokens": 1' + "0" * 30, "max_tokens"),
        (', "max_completion_tokens": 1' + "0" * 30, "max_completion_tokens"),
        (f', "seed": {2**64}', "seed"),
        (f', "seed": {-(2**63) - 1}', "seed"),
        (', "max_tokens": 1' + "0" * 400, "max_tokens"),
    ],
)
async def test_integers_beyond_64_bits_are_400_naming_the_field(  # type: ignore[no-untyped-def]
    emulators, gateways, caplog, extra, param
) -> None:
    em, gw = await one_backend(emulators, gateways)
    for path in ("/v1/chat/completions", "/v1/completions"):
        body = chat_body(extra)
        if path == "/v1/completions":
            body = f'{{"model": "{MODEL}", "prompt": "hi"{extra}}}'.encode()
        status, err = await post(gw, body, path=path)
        assert status == 400, err
        assert err["param"] == param
        assert err["code"] == "invalid_request_error"
        assert str(err["message"]).startswith(f"{param}: ")
    assert em.stats.requests == 0
    assert not tracebacks(caplog)


async def test_largest_seed_still_serves(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    em, gw = await one_backend(emulators, gateways)
    status, body = await post(gw, chat_body(f', "seed": {2**63 - 1}, "max_tokens": 2'))
    assert status == 200, body
    assert em.stats.requests == 1


async def test_a_fault_is_counted_500_and_a_client_leaving_499(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    _, gw = await one_backend(emulators, gateways)
    rt = gw.runtime
    assert rt is not None
    pipeline = Pipeline(rt)
    caller = pipeline.authenticate(AUTH["Authorization"])
    assert caller is not None

    def execution() -> Execution:
        gen = parse_request(
            Kind.CHAT,
            chat_body(),
            request_id="r",
            tenant=caller.tenant.name,
            residency=UNRESTRICTED,
            session=None,
            key_digest=caller.key_digest,
        )
        return pipeline.execution(gen, pipeline.plan(gen, caller))

    with pytest.raises(TypeError):
        async with pipeline.serving(execution()):
            raise TypeError("a bug below the edge")
    with pytest.raises(asyncio.CancelledError):
        async with pipeline.serving(execution()):
            raise asyncio.CancelledError
    assert requests_counted(gw, "500") == 1
    assert requests_counted(gw, "499") == 1


@pytest.fixture(autouse=True)
def _capture_warnings(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
