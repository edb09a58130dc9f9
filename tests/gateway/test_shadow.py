"""Shadow traffic end to end: real gateways, real emulators, real HTTP on loopback.

Every test starts a shadow plan through the admin API, sends client traffic
through the gateway and reads the fleet-wide comparison back from the admin
API — the same path ``meridian shadow status`` takes. Waits are on
conditions with deadlines (``wait_for`` / :func:`until_pairs`), never sleeps.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from typing import Any

import aiohttp
import pytest

from gateway.app.server import Gateway
from gateway.shadow.compare import Side, compare, fields, summarise, token_overlap, verdict
from gateway.shadow.plan import ShadowPlan, ShadowThresholds, from_doc, to_doc
from tests.conftest import (
    ADMIN_TOKEN,
    EU_KEY,
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)
from tests.gateway.control_kit import admin

FAST = {"counts_flush_s": 0.02}  # replicas publish comparisons quickly in tests
SHADOW = f"/admin/v1/shadow/{MODEL}"
_session = iter(range(10**9))


# -- pure parts -----------------------------------------------------------------


def test_comparison_scores() -> None:
    same = compare(Side(False, " a b c", 0.01, 0.001, 3), Side(False, " a b c", 0.02, 0.001, 3))
    assert (same.prefix, same.overlap, same.exact, same.disagrees) == (3, 1.0, True, False)
    cut = compare(Side(False, " a b c d"), Side(False, " a b"))
    assert (cut.prefix, cut.exact, cut.disagrees) == (2, False, True)
    assert cut.overlap == pytest.approx(2 * 2 / 6)
    assert token_overlap([], []) == 1.0 and token_overlap(["x"], ["y"]) == 0.0
    one_failed = compare(Side(False, " a"), Side(True))
    assert one_failed.disagrees and "both_ok" not in fields(one_failed)
    assert not compare(Side(True), Side(True)).disagrees  # both failed: they agree


def test_verdict_thresholds() -> None:
    t = ShadowThresholds(min_pairs=10)
    ok = Side(False, " a b", 0.030, 0.001, 2)
    counts: dict[str, int] = {}
    for _ in range(9):
        for k, n in fields(compare(ok, ok)).items():
            counts[k] = counts.get(k, 0) + n
    assert verdict(summarise(counts), t) == ("pending", ["9 of 10 pairs compared"])
    for k, n in fields(compare(ok, Side(False, " a b", 0.200, 0.001, 2))).items():
        counts[k] = counts.get(k, 0) + n
    outcome, reasons = verdict(summarise(counts), t)
    assert outcome == "fail" and "TTFT p95" in reasons[0]
    assert summarise(counts)["mean_agreement"] == 1.0  # slower, yet the same answers


def test_plan_document_and_checks() -> None:
    plan = ShadowPlan("m", "v2", "r1", 100.0, 25.0, 2, 500, 60.0, frozenset({"eu"}))
    assert from_doc(to_doc(plan)) == plan
    assert plan.active(159.0) and not plan.active(160.0)
    for bad, words in (
        (ShadowPlan("m", "v2", "r", 0, share=101), "share"),
        (ShadowPlan("m", "v2", "r", 0, max_concurrent=0), "max-concurrent"),
        (ShadowPlan("m", "v2", "r", 0, duration_s=0), "duration"),
        (ShadowPlan("m", "v2", "r", 0, thresholds=ShadowThresholds(min_agreement=2)), "agreement"),
    ):
        with pytest.raises(ValueError, match=words):
            bad.check()


# -- helpers --------------------------------------------------------------------


async def send(
    s: aiohttp.ClientSession,
    gw: Gateway,
    key: str = GLOBAL_KEY,
    *,
    prompt: str = "hi",
    max_tokens: int | None = 4,
) -> tuple[int, float, str]:
    """One streamed chat request: (status, client-side TTFT in s, the text received)."""
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {key}", "x-meridian-session": f"sh{next(_session)}"}
    started = time.perf_counter()
    ttft, text = 0.0, []
    async with s.post(gw.http_url + "/v1/chat/completions", json=body, headers=headers) as r:
        async for line in r.content:
            if not line.startswith(b"data: {"):
                continue
            content = json.loads(line[6:])["choices"][0]["delta"].get("content")
            if content:
                ttft = ttft or time.perf_counter() - started
                text.append(content)
        return r.status, ttft, "".join(text)


async def shadow(s: aiohttp.ClientSession, gw: Gateway, **plan: Any) -> dict[str, Any]:
    status, body = await admin(s, gw, "POST", SHADOW, {"candidate": "v2", **plan})
    assert status == 200, body
    return dict(body)


async def until_pairs(s: aiohttp.ClientSession, gw: Gateway, n: int) -> dict[str, Any]:
    """The shadow status once ``n`` pairs have been compared fleet-wide."""
    async with asyncio.timeout(10):
        while True:
            status, body = await admin(s, gw, "GET", SHADOW)
            assert status == 200, body
            if body["summary"]["pairs"] >= n:
                return dict(body)
            await asyncio.sleep(0.01)


async def metric(s: aiohttp.ClientSession, gw: Gateway, name: str) -> float:
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with s.get(gw.admin_url + "/metrics", headers=headers) as r:
        text = await r.text()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def two_versions(
    primary: str, candidate: str, candidate_region: str = "aws:us-east-1", **kw: Any
) -> Any:
    return gateway_config(
        [("p", "aws:us-east-1", "v1", primary), ("c", candidate_region, "v2", candidate)],
        versions={"v1": 100, "v2": 0},
        store=FAST,
        **kw,
    )


# -- verdicts -------------------------------------------------------------------


async def test_an_identical_candidate_agrees_fully(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    p = await emulators(ttft_s=0.02, itl_s=0.002)
    c = await emulators(ttft_s=0.02, itl_s=0.002)
    gw = await gateways(two_versions(p.url, c.url))
    async with aiohttp.ClientSession() as s:
        await shadow(s, gw, min_pairs=12)
        for i in range(12):
            assert (await send(s, gw, prompt=f"question {i}"))[0] == 200
        body = await until_pairs(s, gw, 12)
        summary = body["summary"]
        assert body["verdict"] == "pass", body["reasons"]
        assert summary["mean_agreement"] == 1.0 and summary["exact_match_rate"] == 1.0
        assert summary["disagreeing"] == 0 and summary["mean_prefix_tokens"] == 4.0
        primary, candidate = summary["primary"], summary["candidate"]
        assert primary["mean_tokens"] == candidate["mean_tokens"] == 4.0
        assert candidate["error_rate"] == primary["error_rate"] == 0.0
        # similar latency: the same log-spaced bucket (×1.25 apart), or a neighbour; 1 %
        # slack for the bounds' rounding to 0.1 ms (28.4 / 22.7 is two neighbours)
        ratio = candidate["ttft_p50_ms"] / primary["ttft_p50_ms"]
        assert 1 / 1.25 / 1.01 <= ratio <= 1.25 * 1.01
        assert c.stats.requests == 12
        assert await metric(s, gw, "meridian_shadow_mirrored_total") == 12
        assert await metric(s, gw, "meridian_shadow_compared_total") == 12
        assert await metric(s, gw, "meridian_shadow_disagreeing_total") == 0


@pytest.mark.parametrize(
    ("candidate", "faults", "words"),
    [
        ({"ttft_s": 0.12}, {}, "TTFT p95"),
        ({}, {"status": 500}, "error rate 100.0% on the candidate"),
        ({"default_max_tokens": 8}, {}, "mean agreement 0.4"),  # 8 of 32 tokens: F1 0.4
    ],
    ids=["slower", "erroring", "different-answers"],
)
async def test_a_worse_candidate_fails(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    candidate: dict[str, Any],
    faults: dict[str, Any],
    words: str,
) -> None:
    p = await emulators(ttft_s=0.005)
    c = await emulators(**candidate)
    for name, value in faults.items():
        setattr(c.faults, name, value)
    gw = await gateways(two_versions(p.url, c.url))
    async with aiohttp.ClientSession() as s:
        await shadow(s, gw, min_pairs=6)
        for i in range(6):
            status, _, _ = await send(s, gw, prompt=f"q{i}", max_tokens=None)
            assert status == 200  # whatever the candidate does, the client is served
        body = await until_pairs(s, gw, 6)
        assert body["verdict"] == "fail"
        assert any(words in r for r in body["reasons"]), body["reasons"]
        assert body["summary"]["disagreeing"] == (0 if "ttft_s" in candidate else 6)
        assert await metric(s, gw, "meridian_shadow_disagreeing_total") == (
            0 if "ttft_s" in candidate else 6
        )


# -- the primary is untouched --------------------------------------------------


async def test_the_primary_is_unchanged_with_shadowing_on(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """Client TTFT p50 with shadowing on is within 5 ms + 20% of off, in the same run,
    and every answer is byte-identical; the candidate is 5x slower, so a client
    that waited on its copy would show it at once."""
    p = await emulators(ttft_s=0.02, itl_s=0.001)
    c = await emulators(ttft_s=0.1, itl_s=0.001)
    gw = await gateways(two_versions(p.url, c.url))
    prompts = [f"prompt {i}" for i in range(15)]
    async with aiohttp.ClientSession() as s:
        await send(s, gw)  # warm the connection pools
        off = [await send(s, gw, prompt=q) for q in prompts]
        await shadow(s, gw, min_pairs=1, max_concurrent=64)
        on = [await send(s, gw, prompt=q) for q in prompts]
        mirrored = (await until_pairs(s, gw, len(prompts)))["summary"]["mirrored"]
    assert mirrored == len(prompts)
    assert [r[0] for r in off + on] == [200] * 30
    assert [r[2] for r in on] == [r[2] for r in off]  # the same bytes, prompt by prompt
    p50_off = statistics.median(r[1] for r in off)
    p50_on = statistics.median(r[1] for r in on)
    print(f"primary TTFT p50: shadow off {p50_off * 1000:.1f} ms, on {p50_on * 1000:.1f} ms")
    assert abs(p50_on - p50_off) <= 0.005 + 0.2 * p50_off, (p50_off, p50_on)
    assert max(r[1] for r in on) < 0.1  # never the candidate's TTFT


# -- who is mirrored -------------------------------------------------------------


async def test_an_eu_only_tenant_is_never_mirrored_outside_the_eu(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    eu_primary, us_candidate, eu_candidate = [await emulators() for _ in range(3)]
    only_us = gateway_config(
        [
            ("p-eu", "aws:eu-west-1", "v1", eu_primary.url),
            ("c-us", "aws:us-east-1", "v2", us_candidate.url),
        ],
        versions={"v1": 100, "v2": 0},
        store=FAST,
    )
    gw = await gateways(only_us)
    async with aiohttp.ClientSession() as s:
        await shadow(s, gw)
        for _ in range(5):
            assert (await send(s, gw, EU_KEY))[0] == 200
        await wait_for(lambda: eu_primary.stats.completed == 5)
        body = await until_pairs(s, gw, 0)
        async with asyncio.timeout(5):
            while body["summary"]["dropped"].get("residency", 0) < 5:
                body = await until_pairs(s, gw, 0)
        assert body["summary"]["mirrored"] == 0 and us_candidate.stats.requests == 0
        assert (
            await metric(
                s, gw, 'meridian_shadow_dropped_total{model="test-model",reason="residency"}'
            )
            == 5
        )
        for _ in range(3):  # the global tenant is mirrored to the same candidate
            assert (await send(s, gw, GLOBAL_KEY))[0] == 200
        await until_pairs(s, gw, 3)
        assert us_candidate.stats.requests == 3
    # with an EU candidate too, the EU tenant's copies go there and only there
    both = gateway_config(
        [
            ("p-eu", "aws:eu-west-1", "v1", eu_primary.url),
            ("c-us", "aws:us-east-1", "v2", us_candidate.url),
            ("c-eu", "onprem:fra1", "v2", eu_candidate.url),
        ],
        versions={"v1": 100, "v2": 0},
        store=FAST,
    )
    gw = await gateways(both)
    async with aiohttp.ClientSession() as s:
        await shadow(s, gw)
        for _ in range(6):
            assert (await send(s, gw, EU_KEY))[0] == 200
        body = await until_pairs(s, gw, 6)
    assert body["verdict"] == "pending" and body["summary"]["mean_agreement"] == 1.0
    assert eu_candidate.stats.requests == 6 and us_candidate.stats.requests == 3


async def test_opted_out_and_excluded_tenants_are_never_mirrored(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    p, c = await emulators(), await emulators()
    config = gateway_config(
        [
            ("p", "aws:eu-west-1", "v1", p.url),
            ("c", "aws:eu-west-1", "v2", c.url),
        ],
        versions={"v1": 100, "v2": 0},
        store=FAST,
        tenant={"shadow_opt_out": True},  # the global tenant opted out in its config
    )
    gw = await gateways(config)
    async with aiohttp.ClientSession() as s:
        await shadow(s, gw, exclude_tenants=["eu"])  # and this plan excludes eu
        for key in (GLOBAL_KEY, EU_KEY) * 4:
            assert (await send(s, gw, key))[0] == 200
        await wait_for(lambda: p.stats.completed == 8)
        body = await until_pairs(s, gw, 0)
        async with asyncio.timeout(5):
            while body["summary"].get("skipped", 0) < 8:
                body = await until_pairs(s, gw, 0)
        assert body["summary"]["mirrored"] == 0 and c.stats.requests == 0
        # the control: a plan without the exclusion mirrors eu at once
        assert (await admin(s, gw, "POST", SHADOW + "/stop"))[0] == 200
        await shadow(s, gw)
        for key in (GLOBAL_KEY, EU_KEY) * 2:
            assert (await send(s, gw, key))[0] == 200
        await until_pairs(s, gw, 2)
    assert c.stats.requests == 2  # the two eu requests; global stays opted out


# -- caps ------------------------------------------------------------------------


async def test_the_concurrency_cap_holds_under_load(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """The candidate stalls before its first token, so every copy stays in flight:
    exactly ``max_concurrent`` reach it and every other one is dropped and counted,
    while 40 concurrent clients are all served in full."""
    p, c = await emulators(), await emulators()
    c.faults.stall_after_tokens = 0
    gw = await gateways(two_versions(p.url, c.url))
    async with aiohttp.ClientSession() as s:
        await shadow(s, gw, max_concurrent=3)
        results = await asyncio.gather(*(send(s, gw, prompt=f"load {i}") for i in range(40)))
        assert [r[0] for r in results] == [200] * 40
        assert all(r[2] for r in results)
        await wait_for(lambda: c.stats.requests >= 3)
        body = await until_pairs(s, gw, 0)
        async with asyncio.timeout(5):
            while body["summary"]["dropped"].get("concurrency", 0) < 37:
                body = await until_pairs(s, gw, 0)
        assert body["summary"]["mirrored"] == 3 and c.stats.requests == 3
        assert body["summary"]["dropped"] == {"concurrency": 37}
        mirror = gw.runtime.shadow if gw.runtime is not None else None
        assert mirror is not None and mirror._in_flight[MODEL] == 3


async def test_the_token_cap_drops_copies_for_the_rest_of_the_minute(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    p, c = await emulators(), await emulators()
    gw = await gateways(two_versions(p.url, c.url))
    mirror = gw.runtime.shadow if gw.runtime is not None else None
    assert mirror is not None
    async with aiohttp.ClientSession() as s:
        await shadow(s, gw, max_tokens_per_min=1)
        # One frozen instant (after the plan's start): a run across a minute
        # boundary would otherwise get a fresh token budget half-way.
        frozen = time.time()
        mirror._clock = lambda: frozen
        assert (await send(s, gw))[0] == 200
        await until_pairs(s, gw, 1)  # the first copy spent the minute's tokens
        for _ in range(4):
            assert (await send(s, gw))[0] == 200
        body = await until_pairs(s, gw, 1)
        async with asyncio.timeout(5):
            while body["summary"]["dropped"].get("tokens", 0) < 4:
                body = await until_pairs(s, gw, 1)
    assert c.stats.requests == 1 and body["summary"]["mirrored"] == 1
