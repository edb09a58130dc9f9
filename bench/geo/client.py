"""Clients of one region: streaming requests and what became of each.

Every loop here is bounded twice, by a request count and by a deadline, and
every request by a total timeout, so the lab stops by itself whatever the
gateways do.

Outcomes:

- ``ok``: 200 and the stream reached ``[DONE]``;
- ``limited``: 429 (a tenant limit said no: an answer, not a loss);
- ``lost``: anything else before a token (5xx, connection refused or reset,
  timeout);
- ``cut``: a stream that had started (a content token arrived) and did not
  reach ``[DONE]``: the worst kind of loss.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
import orjson

from bench.stream import StreamMeter

REQUEST_TIMEOUT_S = 15.0
LOST_BACKOFF_S = 0.05
_MAX_BODY = 1 << 20


@dataclass(frozen=True, slots=True)
class Sample:
    region: str
    tenant: str
    sent: float  # time.monotonic()
    ended: float
    outcome: str
    ttft_ms: float | None
    detail: str = ""


@dataclass(slots=True)
class Tally:
    samples: list[Sample] = field(default_factory=list)

    def add(self, s: Sample) -> None:
        self.samples.append(s)

    def count(
        self,
        *,
        region: str | None = None,
        tenant: str | None = None,
        since: float = float("-inf"),
        until: float = float("inf"),
    ) -> Counter[str]:
        return Counter(
            s.outcome
            for s in self.samples
            if (region is None or s.region == region)
            and (tenant is None or s.tenant == tenant)
            and since <= s.sent < until
        )

    def errors(self, region: str, limit: int = 3) -> list[str]:
        return [
            s.detail for s in self.samples if s.region == region and s.outcome in ("lost", "cut")
        ][:limit]


def body(model: str, max_tokens: int) -> bytes:
    return orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say something about geography."}],
            "stream": True,
            "max_tokens": max_tokens,
        }
    )


async def one(
    session: aiohttp.ClientSession,
    url: str,
    headers: dict[str, str],
    payload: bytes,
    region: str,
    tenant: str,
    timeout_s: float = REQUEST_TIMEOUT_S,
) -> Sample:
    sent = time.monotonic()
    t0 = time.perf_counter()
    meter = StreamMeter()
    status = 0
    try:
        async with session.post(
            url,
            data=payload,
            headers={"Content-Type": "application/json", **headers},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            status = resp.status
            if status != 200:
                text = (await resp.content.read(_MAX_BODY)).decode(errors="replace")
                outcome = "limited" if status == 429 else "lost"
                return Sample(
                    region, tenant, sent, time.monotonic(), outcome, None, f"{status} {text[:160]}"
                )
            async for data in resp.content.iter_any():
                meter.feed(data, time.perf_counter())
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        started = meter.first_content_at is not None
        return Sample(
            region,
            tenant,
            sent,
            time.monotonic(),
            "cut" if started else "lost",
            None,
            f"{type(exc).__name__}: {exc}"[:200],
        )
    ttft = None if meter.first_content_at is None else (meter.first_content_at - t0) * 1000
    if meter.done_at is None:
        outcome = "cut" if ttft is not None else "lost"
        return Sample(region, tenant, sent, time.monotonic(), outcome, ttft, "stream ended early")
    return Sample(region, tenant, sent, time.monotonic(), "ok", ttft)


@dataclass(frozen=True, slots=True)
class Load:
    """A region's clients of one tenant: closed loop, or paced when ``rate_per_s`` is set."""

    region: str
    tenant: str
    urls: Sequence[str]  # one per gateway replica of the region; requests rotate over them
    headers: dict[str, str]
    payload: bytes
    concurrency: int = 1
    rate_per_s: float | None = None
    max_requests: int = 10_000


async def run(
    session: aiohttp.ClientSession, load: Load, tally: Tally, stop: asyncio.Event, deadline_s: float
) -> None:
    """Drive ``load`` until ``stop`` is set, ``deadline_s`` passes or ``max_requests`` are sent."""
    end = time.monotonic() + deadline_s
    urls = itertools.cycle(load.urls)
    sent = 0

    async def send() -> None:
        sample = await one(
            session, next(urls), load.headers, load.payload, load.region, load.tenant
        )
        tally.add(sample)
        if sample.outcome in ("lost", "cut"):
            await asyncio.sleep(LOST_BACKOFF_S)  # as a client would: no tight loop on a dead port

    if load.rate_per_s is None:

        async def worker() -> None:
            nonlocal sent
            while not stop.is_set() and time.monotonic() < end and sent < load.max_requests:
                sent += 1
                await send()

        await asyncio.gather(*(worker() for _ in range(load.concurrency)))
        return
    interval = 1.0 / load.rate_per_s
    pending: set[asyncio.Task[None]] = set()
    next_at = time.monotonic()
    while not stop.is_set() and time.monotonic() < end and sent < load.max_requests:
        sent += 1
        task = asyncio.ensure_future(send())
        pending.add(task)
        task.add_done_callback(pending.discard)
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            with_stop = asyncio.ensure_future(stop.wait())
            await asyncio.wait([with_stop], timeout=delay)
            with_stop.cancel()
    if pending:
        await asyncio.wait(pending, timeout=REQUEST_TIMEOUT_S + 1)
