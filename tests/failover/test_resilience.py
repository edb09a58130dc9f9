"""resilience.md's acceptance scenarios, through a real gateway and real emulators.

Each test states what the client sees. Leaks are checked after each: no
emulator request still running, no gateway stream in flight, no stray task.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest

from emulators.text import expected_text, render_chat
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    runtime_of,
    wait_for,
)

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
PROMPT = "Tell me about the sea"
MESSAGES = [{"role": "user", "content": PROMPT}]
CONTEXT = render_chat([("user", PROMPT)], False)
THREE = {"aws:us-east-1": ["US"], "aws:eu-west-1": ["EU"], "onprem:fra1": ["EU"]}


def failover(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"health_checks": {"enabled": False}}
    base.update(overrides)
    return base


async def chat(
    s: aiohttp.ClientSession, url: str, max_tokens: int = 8, **extra: Any
) -> tuple[int, str, dict[str, str], str]:
    """(status, streamed text, headers, raw body) of one streaming request."""
    body = {"model": MODEL, "messages": MESSAGES, "stream": True, "max_tokens": max_tokens}
    body.update(extra)
    async with s.post(url + "/v1/chat/completions", json=body, headers=AUTH) as resp:
        raw = (await resp.read()).decode()
        text = ""
        if resp.status == 200:
            import orjson

            for event in raw.split("\n\n"):
                if event.startswith("data: {") and '"choices":[{' in event:
                    choice = orjson.loads(event[6:])["choices"][0]
                    text += (choice.get("delta") or {}).get("content") or ""
        return resp.status, text, dict(resp.headers), raw


async def no_leaks(gw: Any, *emulators: Any) -> None:
    await wait_for(lambda: runtime_of(gw).lifecycle.in_flight == 0)
    await wait_for(lambda: all(e.stats.running == 0 for e in emulators))


async def test_5xx_storm_opens_the_breaker_and_traffic_moves(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """Client sees: every request succeeds; the broken backend stops being called."""
    bad, good = await emulators(), await emulators()
    bad.faults.update({"status": 503})
    gw = await gateways(
        gateway_config(
            [("bad", "aws:eu-west-1", "v1", bad.url), ("good", "onprem:fra1", "v1", good.url)],
            failover=failover(
                breaker={"minimum_calls": 4, "window_size": 10, "open_s": 60},
                ejection={"consecutive_errors": 100},
                hedge=False,
            ),
        )
    )
    async with aiohttp.ClientSession() as s:
        for i in range(30):
            status, text, _, _ = await chat(s, gw.http_url, user=f"u{i}")
            assert status == 200 and text
    assert bad.stats.requests <= 6  # a few until the window had minimum_calls, then none
    assert runtime_of(gw).health.status(0)["bad"]["breaker"] in ("open", "half_open")
    await no_leaks(gw, bad, good)


async def test_half_open_probes_close_the_breaker_again(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    bad, good = await emulators(), await emulators()
    bad.faults.update({"status": 500})
    gw = await gateways(
        gateway_config(
            [("bad", "aws:eu-west-1", "v1", bad.url), ("good", "onprem:fra1", "v1", good.url)],
            failover=failover(
                breaker={
                    "minimum_calls": 3,
                    "window_size": 5,
                    "open_s": 0.3,
                    "half_open_probes": 2,
                },
                ejection={"consecutive_errors": 100},
                hedge=False,
            ),
        )
    )
    health = runtime_of(gw).health
    async with aiohttp.ClientSession() as s:
        while health.status(asyncio.get_running_loop().time())["bad"]["breaker"] == "closed":
            assert (await chat(s, gw.http_url))[0] == 200
        bad.faults.clear()  # the backend recovers
        calls_when_open = bad.stats.requests
        i = 0

        async def probe_once() -> bool:
            nonlocal i
            i += 1
            assert (await chat(s, gw.http_url, user=f"p{i}"))[0] == 200
            import time

            return health.status(time.monotonic())["bad"]["breaker"] == "closed"

        async with asyncio.timeout(10):
            while not await probe_once():
                pass
    assert bad.stats.requests >= calls_when_open + 2  # the half-open probes reached it
    await no_leaks(gw, bad, good)


async def test_stall_before_first_token_moves_to_another_backend(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """Client sees: a complete stream from the other backend, a little later."""
    stalled, good = await emulators(), await emulators()
    stalled.faults.update({"stall_after_tokens": 0})
    gw = await gateways(
        gateway_config(
            [
                ("stalled", "aws:eu-west-1", "v1", stalled.url),
                ("good", "onprem:fra1", "v1", good.url),
            ],
            timeouts={"first_token_s": 0.2},
            failover=failover(hedge=False),
        )
    )
    # Two cold backends tie, so power of two choices puts each request first on
    # either at random: 8 requests all missed the stalled one 1 time in 256 (a CI
    # run did). Requests go on until it was tried (at most 60: 1 in 1e18 miss it).
    results: list[tuple[int, str, dict[str, str], str]] = []
    async with aiohttp.ClientSession() as s:
        while not stalled.stats.requests and len(results) < 60:
            results.append(await chat(s, gw.http_url, user=f"u{len(results)}"))
    assert stalled.stats.requests >= 1
    assert all(status == 200 for status, *_ in results)
    assert all(text == expected_text(CONTEXT, 8) for _, text, _, _ in results)
    assert {h["x-meridian-backend"] for _, _, h, _ in results} == {"good"}
    await no_leaks(gw, stalled, good)


@pytest.mark.parametrize("fault", ["reset", "stall"])
async def test_mid_stream_failure_resumes_with_the_exact_text(
    emulators: EmulatorFactory, gateways: GatewayFactory, fault: str
) -> None:
    """Client sees: one stream whose text equals an uninterrupted one; usage adds up."""
    first, second = await emulators(), await emulators()
    gw = await gateways(
        gateway_config(
            [
                # weights make "first" the P2C pick (both cold, equal scores)
                ("first", "aws:eu-west-1", "v1", first.url, {"weight": 1e6}),
                ("second", "onprem:fra1", "v1", second.url, {"weight": 1e-6}),
            ],
            timeouts={"idle_s": 0.3},
            failover=failover(hedge=False),
        )
    )
    faults = {"reset_after_tokens": 5} if fault == "reset" else {"stall_after_tokens": 5}
    first.faults.update(faults)
    async with aiohttp.ClientSession() as s:
        status, text, headers, raw = await chat(
            s, gw.http_url, max_tokens=20, stream_options={"include_usage": True}
        )
    assert status == 200
    assert text == expected_text(CONTEXT, 20)
    assert raw.rstrip().endswith("data: [DONE]") and '"error"' not in raw
    import orjson

    usage = [orjson.loads(e[6:])["usage"] for e in raw.split("\n\n") if '"choices":[]' in e]
    assert len(usage) == 1 and usage[0]["completion_tokens"] == 20
    ids = {orjson.loads(e[6:])["id"] for e in raw.split("\n\n") if e.startswith("data: {")}
    assert len(ids) == 1  # one stream, one id, across the splice
    assert headers["x-meridian-backend"] == "first"
    resumed_request = second.stats.last_request
    assert resumed_request is not None and resumed_request["continue_final_message"] is True
    assert resumed_request["messages"][-1] == {
        "role": "assistant",
        "content": expected_text(CONTEXT, 5),
    }
    assert resumed_request["max_tokens"] == 15
    await no_leaks(gw, first, second)


async def test_resumption_off_ends_with_an_error_event(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    first, second = await emulators(), await emulators()
    for em in (first, second):
        em.faults.update({"reset_after_tokens": 3})
    gw = await gateways(
        gateway_config(
            [
                ("first", "aws:eu-west-1", "v1", first.url),
                ("second", "onprem:fra1", "v1", second.url),
            ],
            failover=failover(resume=False, hedge=False),
        )
    )
    async with aiohttp.ClientSession() as s:
        status, text, _, raw = await chat(s, gw.http_url, max_tokens=20)
    assert status == 200 and text == expected_text(CONTEXT, 3)
    assert '"error"' in raw.split("\n\n")[-2] and "[DONE]" not in raw
    await no_leaks(gw, first, second)


async def test_429_storm_with_retry_after_goes_elsewhere_and_respects_the_hint(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """Client sees: success from the other backend; the throttled one is left alone."""
    busy, free = await emulators(), await emulators()
    busy.faults.update({"status": 429, "retry_after": 30})
    gw = await gateways(
        gateway_config(
            [("busy", "aws:eu-west-1", "v1", busy.url), ("free", "onprem:fra1", "v1", free.url)],
            failover=failover(hedge=False),
        )
    )
    async with aiohttp.ClientSession() as s:
        for i in range(20):
            status, _, headers, _ = await chat(s, gw.http_url, user=f"u{i}")
            assert status == 200 and headers["x-meridian-backend"] == "free"
    assert busy.stats.requests == 1  # throttled until its Retry-After has passed
    assert runtime_of(gw).health.status(0)["busy"]["breaker"] == "closed"  # 429 ≠ broken
    await no_leaks(gw, busy, free)


async def test_retry_budget_bounds_a_storm(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """All backends fail: upstream calls stay near 1.2 × client requests, not × plan length."""
    ems = [await emulators() for _ in range(3)]
    for em in ems:
        em.faults.update({"status": 500})
    gw = await gateways(
        gateway_config(
            [
                (f"b{i}", region, "v1", em.url)
                for i, (region, em) in enumerate(zip(THREE, ems, strict=True))
            ],
            regions=THREE,
            failover=failover(
                retry_budget_min_per_s=0.1,
                breaker={"minimum_calls": 1000, "window_size": 1000},
                ejection={"consecutive_errors": 10000},
                hedge=False,
            ),
        )
    )
    clients = 60
    async with aiohttp.ClientSession() as s:
        statuses = [(await chat(s, gw.http_url, user=f"u{i}"))[0] for i in range(clients)]
    assert set(statuses) == {503}
    upstream = sum(em.stats.requests for em in ems)
    assert clients <= upstream <= 1.2 * clients + 1 + 1  # ratio + the floor over the window
    await no_leaks(gw, *ems)


async def test_hedge_wins_and_the_losers_upstream_is_cancelled(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """Client sees: the answer from the hedge, without waiting out the slow backend."""
    degrading = await emulators()  # the fastest one... until it is not
    steady = await emulators(ttft_s=0.03)
    gw = await gateways(
        gateway_config(
            [
                ("degrading", "aws:eu-west-1", "v1", degrading.url),
                ("steady", "onprem:fra1", "v1", steady.url),
            ],
            failover=failover(hedge_budget_ratio=1.0),
        )
    )
    async with aiohttp.ClientSession() as s:
        # P2C sends most of these to the faster backend (p95 TTFT of a few ms); on a busy
        # machine latencies are noisy, so warm up until it has the samples, not 30 times.
        for i in range(200):
            assert (await chat(s, gw.http_url, user=f"w{i}"))[0] == 200
            if degrading.stats.requests >= 20 and i >= 29:
                break
        assert degrading.stats.requests >= 20
        degrading.faults.update({"ttft_s": 5.0})
        loop = asyncio.get_running_loop()
        started = loop.time()
        results = [await chat(s, gw.http_url, user=f"h{i}") for i in range(6)]
        elapsed = loop.time() - started
    assert all(r[0] == 200 and r[1] == expected_text(CONTEXT, 8) for r in results)
    assert {r[2]["x-meridian-backend"] for r in results} == {"steady"}
    assert results[0][2]["x-meridian-attempts"] == "2"  # primary + hedge
    assert elapsed < 2.5  # nobody waited out the 5 s first token
    await wait_for(lambda: degrading.stats.disconnects >= 1)  # the loser was cancelled upstream
    metrics = runtime_of(gw).metrics.exposition().decode()
    assert 'meridian_failover_events_total{event="hedged"} 1.0' in metrics
    await no_leaks(gw, degrading, steady)


async def test_region_down_under_load_fails_no_request(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """100 concurrent streams over three regions; one region dies mid-load: no client error."""
    ems = [await emulators(itl_s=0.01) for _ in range(3)]
    gw = await gateways(
        gateway_config(
            [
                (f"b{i}", region, "v1", em.url)
                for i, (region, em) in enumerate(zip(THREE, ems, strict=True))
            ],
            regions=THREE,
            failover=failover(hedge=False),
        )
    )
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:
        tasks = [
            asyncio.create_task(chat(s, gw.http_url, max_tokens=40, user=f"u{i}"))
            for i in range(100)
        ]
        await wait_for(lambda: ems[0].stats.tokens_sent > 50)
        await ems[0].stop()  # the whole region goes away, mid-stream for some
        results = await asyncio.gather(*tasks)
    assert [r[0] for r in results] == [200] * 100
    assert all(text == expected_text(CONTEXT, 40) for _, text, _, _ in results)
    resumed = runtime_of(gw).metrics.exposition().decode()
    assert 'meridian_failover_events_total{event="resumed"}' in resumed
    await no_leaks(gw, *ems[1:])


async def test_active_health_checks_take_a_backend_out_and_back(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """Client sees: nothing; the failing backend is skipped before anyone hits it."""
    sick, well = await emulators(), await emulators()
    gw = await gateways(
        gateway_config(
            [("sick", "aws:eu-west-1", "v1", sick.url), ("well", "onprem:fra1", "v1", well.url)],
            failover={
                "hedge": False,
                "health_checks": {
                    "interval_s": 0.05,
                    "timeout_s": 0.5,
                    "unhealthy_threshold": 2,
                    "healthy_threshold": 2,
                },
            },
        )
    )
    health = runtime_of(gw).health
    sick.faults.update({"status": 503})  # /health answers 503 too
    await wait_for(lambda: health.status(0)["sick"]["healthy"] is False)
    before = sick.stats.requests
    async with aiohttp.ClientSession() as s:
        for i in range(10):
            status, _, headers, _ = await chat(s, gw.http_url, user=f"u{i}")
            assert status == 200 and headers["x-meridian-backend"] == "well"
        assert sick.stats.requests == before  # no client request was spent finding out
        sick.faults.clear()
        await wait_for(lambda: health.status(0)["sick"]["healthy"] is True)
        served = {
            (await chat(s, gw.http_url, user=f"v{i}"))[2]["x-meridian-backend"] for i in range(30)
        }
    assert "sick" in served
    await no_leaks(gw, sick, well)


async def test_primary_that_wins_after_a_hedge_started_is_the_one_reported(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """The hedge loses: headers and metrics name the primary, the hedge is cancelled."""
    primary = await emulators()
    spare = await emulators(ttft_s=0.03)
    gw = await gateways(
        gateway_config(
            [
                ("primary", "aws:eu-west-1", "v1", primary.url),
                ("spare", "onprem:fra1", "v1", spare.url),
            ],
            failover=failover(hedge_budget_ratio=1.0),
        )
    )
    async with aiohttp.ClientSession() as s:
        for i in range(200):  # warm up until the primary holds the samples (see above)
            assert (await chat(s, gw.http_url, user=f"w{i}"))[0] == 200
            if primary.stats.requests >= 20 and i >= 29:
                break
        assert primary.stats.requests >= 20
        primary.faults.update({"ttft_s": 0.25, "times": 1})  # late, but earlier than the spare
        spare.faults.update({"ttft_s": 2.0, "times": 1})
        status, text, headers, _ = await chat(s, gw.http_url, user="h")
    assert status == 200 and text == expected_text(CONTEXT, 8)
    assert headers["x-meridian-backend"] == "primary"
    assert headers["x-meridian-attempts"] == "2"
    await wait_for(lambda: spare.stats.disconnects >= 1)
    metrics = runtime_of(gw).metrics.exposition().decode()
    assert 'meridian_requests_total{backend="primary"' in metrics
    assert 'outcome="cancelled",region="onprem:fra1"' in metrics
    await no_leaks(gw, primary, spare)
