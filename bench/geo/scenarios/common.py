"""Helpers the scenarios share: percentiles, headers, targets, the CLI in-process, polling."""

from __future__ import annotations

import asyncio
import contextlib
import io
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from bench.geo.lab import ADMIN_TOKEN, Gateway, Lab
from bench.geo.rtt import REGIONS
from bench.stats import percentile

Result = dict[str, Any]
_POLL_S = 0.025


def _p(values: Sequence[float], p: float) -> float | None:
    return round(percentile(sorted(values), p), 1) if values else None


def _headers(lab: Lab, tenant: str, region: str) -> dict[str, str]:
    tag = next(r.tag for r in REGIONS if r.name == region)
    return {"Authorization": f"Bearer {lab.tenants[tenant].key}", "x-meridian-residency": tag}


def _urls(lab: Lab, region: str) -> list[str]:
    return [g.http + "/v1/chat/completions" for g in lab.in_region(region) if g.alive]


def _target(name: str, holds: bool | None, measured: str) -> dict[str, Any]:
    return {"target": name, "holds": holds, "measured": measured}


def cli(argv: Sequence[str]) -> tuple[int, str]:
    """``meridian ARGV`` in this process (``gateway.cli.main.main``): exit code and stdout."""
    from gateway.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(argv))
    return code, out.getvalue() + err.getvalue()


def _admin_args(gw: Gateway) -> list[str]:
    return ["--admin-url", gw.admin, "--token", ADMIN_TOKEN]


async def wait_until(
    check: Callable[[], Awaitable[bool]], deadline_s: float, every_s: float = _POLL_S
) -> float | None:
    """Seconds until ``check()`` holds, or None if it did not within ``deadline_s``."""
    t0 = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - t0
        if time.monotonic() - t0 > deadline_s:
            return None
        await asyncio.sleep(every_s)
