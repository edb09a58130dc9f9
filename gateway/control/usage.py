"""Tokens and spend per tenant and model, counted by every replica into the store.

A request tap (``Runtime.taps``) adds each served request's tokens and cost
to the counters of its minute's window, ``usage/<minute>`` (rolled up into
``usage-hour/<hour>`` at flush time, for long reads), fields
``<tenant>\\x1f<model>\\x1f<what>`` (a ``%`` or ``\\x1f`` in a name is
written ``%25``/``%1F``: configured names may hold any character, and none
may make its counts unreadable); :class:`PendingCounts` adds the sums to
the store in the background, so the request path never awaits it, and once
more when the control plane stops (the spawned ``run`` flushes on cancel).
A request counts when a backend served it (some attempt streamed text):
one refused at the edge (401, 400, 404) or by a tenant limit (429), or
failed everywhere before a first token, used nothing.

Spend is kept in nano-USD because store counters are integers (64-bit: a
window's counter overflows past $9.2 billion): each request's cost
(``Price.cost``) is rounded to the nearest nano-USD before it is added, so a
total is the sum of its requests' rounded costs, exact whenever the prices
per million tokens have at most three decimals.

:func:`read_usage` sums the minutes of a window across the fleet. A window is
the whole minutes that overlap its last ``window_s`` seconds, the current one
included: so a request is never left out because a minute just turned (``1m``
at 10:00:05 is 09:59 and 10:00, not five seconds), at the price of up to a
minute more at the start. At most :data:`MAX_WINDOW_S`: every store keeps a
counter window ``COUNTS_TTL_S`` (7 days) after its last write, which covers it.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass

from failover.executor import Execution
from gateway.control.counts import PendingCounts
from gateway.store import Store

_SEP = "\x1f"
_WHAT = ("requests", "prompt_tokens", "completion_tokens", "spend_nusd")

DEFAULT_WINDOW_S = 3600
MIN_WINDOW_S = 60  # counters are per minute: a shorter window cannot be answered
MAX_WINDOW_S = 24 * 3600  # 24 hour windows and the minutes at the ends; kept 7 days


def hour_name(hour: int) -> str:
    return f"usage-hour/{hour}"


def _hour_of(window: str) -> str | None:
    """The hour window a minute window also counts into (``usage/M`` → ``usage-hour/M//60``)."""
    prefix, _, minute = window.partition("/")
    return hour_name(int(minute) // 60) if prefix == "usage" else None


def window_name(minute: int) -> str:
    return f"usage/{minute}"


def field_names(tenant: str, model: str) -> tuple[str, ...]:
    """The counters of one tenant and model in a window, in :data:`_WHAT`'s order."""
    tenant, model = _quoted(tenant), _quoted(model)
    return tuple(f"{tenant}{_SEP}{model}{_SEP}{what}" for what in _WHAT)


def _quoted(name: str) -> str:
    if "%" in name or _SEP in name:
        return name.replace("%", "%25").replace(_SEP, "%1F")
    return name


def _unquoted(part: str) -> str:
    # Every % in a field was written by _quoted: unquote is its exact inverse.
    return urllib.parse.unquote(part) if "%" in part else part


@dataclass(frozen=True, slots=True)
class UsageRow:
    tenant: str
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    spend_nusd: int  # nano-USD: sums stay exact

    @property
    def spend_usd(self) -> float:
        return self.spend_nusd / 1e9


@dataclass(frozen=True, slots=True)
class Usage:
    """The fleet's usage over ``[start, end)`` (Unix seconds, whole minutes)."""

    start: int
    end: int
    rows: list[UsageRow]

    @property
    def totals(self) -> UsageRow:
        return UsageRow(
            "",
            "",
            sum(r.requests for r in self.rows),
            sum(r.prompt_tokens for r in self.rows),
            sum(r.completion_tokens for r in self.rows),
            sum(r.spend_nusd for r in self.rows),
        )


class UsageTap:
    def __init__(
        self, store: Store, flush_s: float = 1.0, clock: Callable[[], float] = time.time
    ) -> None:
        self._counts = PendingCounts(store, "usage", flush_s=flush_s, rollup=_hour_of)
        self._clock = clock
        self._minute, self._window = -1, ""
        # field names per (tenant, model): both configured names, so a bounded cache
        self._fields: dict[tuple[str, str], tuple[str, ...]] = {}

    def count(self, tenant: str, model: str, prompt: int, completion: int, cost: float) -> None:
        """Add one request (on the request path: a few dict updates, no I/O)."""
        minute = int(self._clock() // 60)
        if minute != self._minute:
            self._minute, self._window = minute, window_name(minute)
        names = self._fields.get((tenant, model))
        if names is None:
            names = self._fields[(tenant, model)] = field_names(tenant, model)
        counts = self._counts.window(self._window)
        requests, prompt_tokens, completion_tokens, spend = names
        counts[requests] += 1
        counts[prompt_tokens] += prompt
        counts[completion_tokens] += completion
        counts[spend] += round(cost * 1e9)  # nano-USD

    def __call__(self, execution: Execution, status: int) -> None:
        usage = execution.usage
        if usage is None:
            return  # no backend served it: nothing used
        serving = execution.serving or execution.attempts[-1]
        prompt, completion = usage.prompt_tokens, usage.completion_tokens
        cost = serving.backend.price.cost(prompt, completion)
        self.count(execution.request.tenant, execution.request.model, prompt, completion, cost)

    async def flush(self) -> None:
        await self._counts.flush()

    async def run(self) -> None:
        await self._counts.run()


def minutes(window_s: int, now: float) -> range:
    """The minutes (``Unix time // 60``) that overlap ``[now - window_s, now]``."""
    return range(int((now - window_s) // 60), int(now // 60) + 1)


def windows(span: range) -> list[str]:
    """The store windows that cover the minutes of ``span`` exactly: the hours it
    holds whole, and the minutes at either end outside them (a day: 24 hours and
    at most 118 minutes instead of 1441 minutes)."""
    first_hour = -(-span.start // 60)  # the first hour starting inside the span
    end_hour = span.stop // 60  # hours before it end inside the span
    if first_hour >= end_hour:
        return [window_name(m) for m in span]
    return (
        [window_name(m) for m in range(span.start, first_hour * 60)]
        + [hour_name(h) for h in range(first_hour, end_hour)]
        + [window_name(m) for m in range(end_hour * 60, span.stop)]
    )


async def read_usage(store: Store, window_s: int, now: float | None = None) -> Usage:
    """The fleet's usage over the last ``window_s`` seconds, widened to whole
    minutes, by tenant and model."""
    if not MIN_WINDOW_S <= window_s <= MAX_WINDOW_S:
        raise ValueError(
            f"window must be a whole number of seconds from {MIN_WINDOW_S} to {MAX_WINDOW_S}"
        )
    span = minutes(window_s, time.time() if now is None else now)
    # Summed by the store, field by field, and parsed once per field after: the
    # same fields recur in every window, and a day of a thousand tenant × model
    # pairs is six million counters (a minute's read one by one, then parsed each).
    fields = await store.sum_counts(windows(span))
    sums: dict[tuple[str, str], dict[str, int]] = {}
    for name, n in fields.items():
        parts = name.split(_SEP)
        if len(parts) != 3 or parts[2] not in _WHAT:
            continue  # not a usage counter (none is written so)
        key = (_unquoted(parts[0]), _unquoted(parts[1]))
        sums.setdefault(key, dict.fromkeys(_WHAT, 0))[parts[2]] += n
    rows = [
        UsageRow(tenant, model, *(c[what] for what in _WHAT))
        for (tenant, model), c in sorted(sums.items())
    ]
    return Usage(span.start * 60, span.stop * 60, rows)
