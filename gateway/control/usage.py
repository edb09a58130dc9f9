"""Tokens and spend per tenant and model, counted by every replica into the store.

A request tap (``Runtime.taps``) adds each finished request's tokens and cost
to the counters of its minute's window, ``usage/<minute>``, fields
``<tenant>\\x1f<model>\\x1f<what>``; :class:`PendingCounts` adds the sums to
the store in the background, so the request path never awaits it. Spend is
kept in micro-USD because store counters are integers. :func:`read_usage`
sums the minutes of a window across the fleet.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from failover.executor import Execution
from gateway.control.counts import PendingCounts
from gateway.store import Store

_SEP = "\x1f"
_WHAT = ("requests", "prompt_tokens", "completion_tokens", "spend_uusd")


def window_name(minute: int) -> str:
    return f"usage/{minute}"


def fields(
    tenant: str, model: str, prompt: int, completion: int, cost_usd: float
) -> dict[str, int]:
    key = f"{tenant}{_SEP}{model}{_SEP}"
    values = (1, prompt, completion, round(cost_usd * 1e6))
    return {key + what: n for what, n in zip(_WHAT, values, strict=True)}


@dataclass(frozen=True, slots=True)
class UsageRow:
    tenant: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    spend_usd: float


class UsageTap:
    def __init__(
        self, store: Store, flush_s: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._counts = PendingCounts(store, "usage", flush_s=flush_s)
        self._clock = clock

    def count(self, tenant: str, model: str, prompt: int, completion: int, cost: float) -> None:
        minute = int(self._clock() // 60)
        self._counts.window(window_name(minute)).update(
            fields(tenant, model, prompt, completion, cost)
        )

    def __call__(self, execution: Execution, status: int) -> None:
        usage = execution.usage
        serving = execution.serving or (execution.attempts[-1] if execution.attempts else None)
        price = serving.backend.price if serving is not None else None
        prompt = usage.prompt_tokens if usage is not None else 0
        completion = usage.completion_tokens if usage is not None else 0
        cost = 0.0 if price is None else price.cost(prompt, completion)
        self.count(execution.request.tenant, execution.request.model, prompt, completion, cost)

    async def flush(self) -> None:
        await self._counts.flush()

    async def run(self) -> None:
        await self._counts.run()


async def read_usage(store: Store, window_s: int, now: float | None = None) -> list[UsageRow]:
    """The fleet's usage over the last ``window_s`` seconds, whole minutes, by tenant and model."""
    if window_s <= 0:
        raise ValueError("window must be a positive number of seconds")
    last = int((time.time() if now is None else now) // 60)
    first = last - max(1, -(-window_s // 60)) + 1
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for minute in range(first, last + 1):
        for name, n in (await store.read_counts(window_name(minute))).items():
            parts = name.split(_SEP)
            if len(parts) != 3:
                continue
            row = sums.setdefault((parts[0], parts[1]), dict.fromkeys(_WHAT, 0))
            if parts[2] in row:
                row[parts[2]] += n
    return [
        UsageRow(
            tenant,
            model,
            c["requests"],
            c["prompt_tokens"],
            c["completion_tokens"],
            c["spend_uusd"] / 1e6,
        )
        for (tenant, model), c in sorted(sums.items())
    ]
