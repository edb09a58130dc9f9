"""Per-backend in-flight accounting: every admitted attempt is finished, whatever ends it.

``BackendHealth.admit`` counts an attempt in flight (and, in half-open, takes
a breaker probe slot); only ``attempt_finished`` gives both back. An attempt
that is admitted and never finished leaves the backend looking busier than it
is for ever (the router's load signal) and can hold a half-open probe slot.

The first tests pin the paths that used to leak, each made deterministic by
choosing the moment the client goes away; the last one is a stress run
through a real gateway (hedges, retries, mid-stream failures, resumptions,
client disconnects at random points) that must end with nothing in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from failover.breaker import BreakerState
from failover.executor import Budgets, Execution
from failover.health import BackendHealth
from failover.policy import FailoverPolicy
from gateway.app.runtime import backend_specs
from gateway.app.server import Gateway
from regions.events import Event, TokenDelta
from regions.provider import Provider
from regions.request import GenerationRequest, Kind, Message, Sampling
from routing.plan import Candidate, Plan
from tests.conftest import GLOBAL_KEY, MODEL, gateway_config, wait_for

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
NO_HEALTH_CHECKS = {"health_checks": {"enabled": False}}


def leaks(health: BackendHealth) -> dict[str, str]:
    """Backends with an attempt still counted in flight or a probe slot still taken."""
    now = time.monotonic()
    out: dict[str, str] = {}
    for name, status in health.status(now).items():
        breaker = health._states[name].breaker
        if status["in_flight"]:
            out[name] = f"{status['in_flight']} in flight"
        elif breaker.poll(now) is BreakerState.HALF_OPEN and breaker.probes_in_flight:
            out[name] = f"{breaker.probes_in_flight} half-open probes in flight"
    return out


async def settled(gw: Gateway) -> None:
    """Wait until the gateway is idle; then no backend may have anything in flight."""
    rt = gw.runtime
    assert rt is not None
    await wait_for(lambda: rt.lifecycle.in_flight == 0)
    with contextlib.suppress(TimeoutError):
        await wait_for(lambda: not leaks(rt.health), timeout=1.0)
    assert leaks(rt.health) == {}


class Tapped:
    """A real provider, with a hook run when its stream yields its first text token."""

    def __init__(self, inner: Provider, on_first_token: Callable[[], Any]) -> None:
        self.inner = inner
        self.on_first_token = on_first_token

    def passthrough(self, kind: Kind) -> bool:
        return self.inner.passthrough(kind)

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        stream = self.inner.stream(request)
        first = True
        try:
            async for event in stream:
                if first and isinstance(event, TokenDelta) and event.text:
                    first = False
                    await self.on_first_token()
                yield event
        finally:
            await stream.aclose()  # type: ignore[attr-defined]


def request(max_tokens: int = 8) -> GenerationRequest:
    return GenerationRequest(
        Kind.CHAT,
        MODEL,
        "rid",
        messages=(Message("user", "Tell me about the sea"),),
        sampling=Sampling(max_tokens=max_tokens),
        stream=True,
    )


def execution(gw: Gateway, order: list[str], providers: dict[str, Any] | None = None) -> Execution:
    rt = gw.runtime
    assert rt is not None
    specs = {s.name: s for s in backend_specs(rt.config)}
    plan = Plan(MODEL, "v1", tuple(Candidate(specs[name], "test") for name in order))
    return Execution(
        request(), plan, providers or rt.providers, FailoverPolicy(), rt.health, Budgets()
    )


@pytest.fixture
async def pair(emulators, gateways, monkeypatch):  # type: ignore[no-untyped-def]
    """A slow backend and a fast one behind a real gateway; hedges after 50 ms."""
    slow, fast = await emulators(ttft_s=0.5), await emulators()
    gw = await gateways(
        gateway_config(
            [("slow", "aws:us-east-1", "v1", slow.url), ("fast", "aws:eu-west-1", "v1", fast.url)],
            failover=NO_HEALTH_CHECKS,
        )
    )
    assert gw.runtime is not None
    monkeypatch.setattr(gw.runtime.health, "hedge_delay", lambda backend: 0.05)
    return gw


async def test_hedge_winner_when_the_client_leaves_at_its_first_token(pair) -> None:  # type: ignore[no-untyped-def]
    """The hedge gets its first token in the very loop turn the client's cancel
    lands: its task ends with an opened stream nobody takes."""
    gw = pair
    tasks: list[asyncio.Task[list[Event]]] = []

    async def client_leaves() -> None:
        tasks[0].cancel()

    providers = dict(gw.runtime.providers)
    providers["fast"] = Tapped(providers["fast"], client_leaves)
    ex = execution(gw, ["slow", "fast"], providers)
    task = asyncio.ensure_future(ex.start())
    tasks.append(task)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert [a.kind for a in ex.attempts] == ["primary", "hedge"]
    await settled(gw)


async def test_primary_and_hedge_reach_their_first_tokens_together(pair) -> None:  # type: ignore[no-untyped-def]
    """Both racers are done when the executor looks: one wins, the other must be closed."""
    gw = pair
    both = asyncio.Event()
    arrived = 0

    async def barrier() -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 2:
            both.set()
        await both.wait()

    rt = gw.runtime
    providers = {name: Tapped(p, barrier) for name, p in rt.providers.items()}
    ex = execution(gw, ["slow", "fast"], providers)
    await ex.start()
    async with contextlib.aclosing(ex.events()) as events:
        async for _ in events:
            pass
    assert len(ex.attempts) == 2
    await settled(gw)


async def test_client_leaves_while_the_resumed_stream_starts(emulators, gateways) -> None:  # type: ignore[no-untyped-def]
    """The stream resumed on another backend; the client leaves on the first
    event of the continuation (the generator is closed at that yield)."""
    broken, good = await emulators(), await emulators()
    broken.faults.update({"reset_after_tokens": 3})
    gw = await gateways(
        gateway_config(
            [
                ("broken", "aws:us-east-1", "v1", broken.url),
                ("good", "aws:eu-west-1", "v1", good.url),
            ],
            failover=NO_HEALTH_CHECKS,
        )
    )
    ex = execution(gw, ["broken", "good"])
    await ex.start()
    async with contextlib.aclosing(ex.events()) as events:
        async for _ in events:
            if ex.resumptions:
                break  # the client goes away
    assert [a.kind for a in ex.attempts] == ["primary", "resume"]
    await settled(gw)


async def test_client_gone_before_the_stream_begins(emulators, gateways, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The first token is in but the client's connection is already closing: the
    head's write raises, so the handler never gets to read the rest of the stream."""
    em = await emulators()
    gw = await gateways(
        gateway_config([("only", "aws:us-east-1", "v1", em.url)], failover=NO_HEALTH_CHECKS)
    )

    write = web.StreamResponse.write

    async def closing(self: web.StreamResponse, data: bytes) -> None:
        if "x-meridian-backend" not in self.headers:
            return await write(self, data)  # the emulator's (same process)
        raise ConnectionResetError("Cannot write to closing transport")

    monkeypatch.setattr(web.StreamResponse, "write", closing)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "stream": True}
    async with aiohttp.ClientSession() as s:
        with contextlib.suppress(aiohttp.ClientError):
            async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as r:
                await r.read()
    await settled(gw)


# -- stress: everything at once, through a real gateway ----------------------


async def _one(s: aiohttp.ClientSession, url: str, rng: random.Random, i: int) -> None:
    stream = rng.random() < 0.7
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": f"request {i}"}],
        "stream": stream,
        "max_tokens": rng.choice((4, 12, 24)),
    }
    leave = rng.choice(("never", "never", "before_headers", "after_first_chunk", "mid_stream"))
    try:
        async with asyncio.timeout(rng.uniform(0.0, 0.15) if leave == "before_headers" else None):
            async with s.post(url, json=body, headers=AUTH) as resp:
                if leave == "never" or not stream or resp.status != 200:
                    await resp.read()
                    return
                chunks = 1 if leave == "after_first_chunk" else rng.randint(2, 8)
                async for _ in resp.content.iter_any():
                    chunks -= 1
                    if chunks <= 0:
                        break
                resp.close()  # drop the connection: the gateway sees the client leave
    except (TimeoutError, aiohttp.ClientError):
        pass


async def test_stress_nothing_stays_in_flight(emulators, gateways, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(20240611)
    ems = [await emulators(itl_s=0.004) for _ in range(4)]
    # Sporadic faults, deterministic per emulator (``rate``): slow first tokens
    # (a hedge fires), failures before the first token (retries, breakers),
    # resets and stalls mid-stream (resumptions, idle timeouts).
    ems[0].faults.update({"ttft_s": 0.3, "rate": 0.5})
    ems[1].faults.update({"reset_after_tokens": 3, "rate": 0.3})
    ems[2].faults.update({"status": 503, "rate": 0.5})
    ems[3].faults.update({"stall_after_tokens": 2, "rate": 0.2})
    rows = [
        (f"b{i}", region, "v1", em.url)
        for i, (em, region) in enumerate(
            zip(
                ems, ["aws:us-east-1", "aws:eu-west-1", "onprem:fra1", "aws:us-east-1"], strict=True
            )
        )
    ]
    gw = await gateways(
        gateway_config(
            rows,
            failover={
                **NO_HEALTH_CHECKS,
                "breaker": {"minimum_calls": 4, "window_size": 8, "open_s": 0.2},
            },
            timeouts={"first_token_s": 1.0, "idle_s": 0.3},
        )
    )
    assert gw.runtime is not None
    monkeypatch.setattr(gw.runtime.health, "hedge_delay", lambda backend: 0.05)
    url = gw.http_url + "/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as s:
        for wave in range(6):
            await asyncio.gather(*(_one(s, url, rng, wave * 50 + i) for i in range(50)))
    await settled(gw)
    await wait_for(lambda: all(em.stats.running == 0 for em in ems))
    # The run went through the paths it is meant to cover.
    registry = gw.runtime.metrics.registry
    for event in ("hedged", "resumed"):
        assert registry.get_sample_value("meridian_failover_events_total", {"event": event})
    outcomes = {
        s.labels["outcome"]
        for m in registry.collect()
        if m.name == "meridian_backend_attempts"
        for s in m.samples
        if s.value
    }
    assert max(st.breaker.transitions for st in gw.runtime.health._states.values()) >= 2
    assert {"ok", "cancelled", "stream_broken", "timeout", "server"} <= outcomes
