"""Watching the fleet during a fault: each gateway's readiness and control plane over time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence
from typing import Any

from bench.geo.lab import Gateway, Lab


async def _observe(
    lab: Lab, gws: Sequence[Gateway], stop: asyncio.Event, log: list[dict[str, Any]]
) -> None:
    """Every 200 ms (bounded), each gateway's /readyz and its status's control plane."""
    for _ in range(600):
        if stop.is_set():
            return
        t = time.monotonic()
        for gw, ready, status, store in zip(
            gws,
            await asyncio.gather(*(lab.readyz(g) for g in gws)),
            await asyncio.gather(*(lab.admin_get(g, "/admin/v1/status", 1.0) for g in gws)),
            # where writes go and whether the primary answers, where the gateway has it
            await asyncio.gather(*(lab.admin_get(g, "/admin/v1/store", 1.5) for g in gws)),
            strict=True,
        ):
            cp = status.get("control_plane") if isinstance(status, dict) else None
            log.append(
                {
                    "t": t,
                    "gateway": gw.name,
                    "readyz": None if ready is None else ready.get("http_status"),
                    "readyz_control_plane": None if ready is None else ready.get("control_plane"),
                    "status": None if not isinstance(cp, dict) else cp.get("status"),
                    "error": None if not isinstance(cp, dict) else cp.get("error"),
                    "primary_answers": None
                    if not isinstance(store, dict)
                    else store.get("primary_answers"),
                }
            )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


def _first(
    log: Sequence[dict[str, Any]], gw: str, since: float, pred: Callable[[dict[str, Any]], bool]
) -> float | None:
    return next(
        (e["t"] - since for e in log if e["gateway"] == gw and e["t"] >= since and pred(e)), None
    )


def _recovered(log: Sequence[dict[str, Any]], gw: str, since: float) -> float | str | None:
    """Seconds from ``since`` until ``gw`` was ok again after not being ok;
    "never degraded" if it was ok throughout, None if it did not recover."""
    went_bad = None
    for e in log:
        if e["gateway"] != gw or e["t"] < since:
            continue
        if e["status"] != "ok" and went_bad is None:
            went_bad = e["t"]
        elif e["status"] == "ok" and went_bad is not None:
            return round(float(e["t"]) - since, 1)
    return "never degraded" if went_bad is None else None
