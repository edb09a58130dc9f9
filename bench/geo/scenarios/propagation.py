"""Propagation: weight changes and shared breaker openings reaching every region."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from typing import Any

from bench.geo.client import body, one
from bench.geo.lab import MODEL, PROBE_MODEL, Gateway, Lab
from bench.geo.rtt import REGIONS, rtt_ms
from bench.geo.scenarios.common import (
    _POLL_S,
    Result,
    _admin_args,
    _headers,
    _p,
    _target,
    cli,
    wait_until,
)


async def propagation(lab: Lab, changes: int) -> Result:
    operator = lab.in_region(lab.primary_region.name)[0]
    weights: dict[str, list[float]] = {g.name: [] for g in lab.gateways}
    missed: dict[str, int] = {g.name: 0 for g in lab.gateways}
    cli_failures: list[str] = []
    for k in range(1, changes + 1):
        split = {"v1": 100 - k, "v2": k}

        async def applied(gw: Gateway, split: dict[str, int] = split) -> bool:
            view = await lab.admin_get(gw, f"/admin/v1/weights/{MODEL}", 1.0)
            return isinstance(view, dict) and view.get("split") == split

        argv = [
            "weights",
            "set",
            MODEL,
            f"v1={split['v1']}",
            f"v2={split['v2']}",
            *_admin_args(operator),
        ]
        t0 = time.monotonic()
        write = asyncio.ensure_future(asyncio.to_thread(cli, argv))
        delays = await asyncio.gather(
            *(wait_until(functools.partial(applied, g), 10.0) for g in lab.gateways)
        )
        code, out = await write
        if code != 0:
            cli_failures.append(out.strip()[:200])
        for gw, d in zip(lab.gateways, delays, strict=True):
            if d is None:
                missed[gw.name] += 1
            else:
                weights[gw.name].append(d * 1000)
        del t0
    breaker, breaker_missed, breaker_notes = await _breaker_cycles(lab, changes)
    rows: list[dict[str, Any]] = []
    targets = []
    for r in REGIONS:
        gws = lab.in_region(r.name)
        w = [x for g in gws for x in weights[g.name]]
        b = [x for g in gws for x in breaker.get(g.name, [])]
        budget_ms = rtt_ms(r.name, lab.primary_region.name) + 1000
        rows.append(
            {
                "region": r.name,
                "replicas": len(gws),
                "weights_p50_ms": _p(w, 50),
                "weights_p99_ms": _p(w, 99),
                "weights_max_ms": round(max(w), 1) if w else None,
                "weights_missed": sum(missed[g.name] for g in gws),
                "breaker_p50_ms": _p(b, 50),
                "breaker_p99_ms": _p(b, 99),
                "breaker_missed": sum(breaker_missed.get(g.name, 0) for g in gws),
                "budget_ms": budget_ms,
            }
        )
        w99, b99 = _p(w, 99), _p(b, 99)
        nmiss = sum(missed[g.name] + breaker_missed.get(g.name, 0) for g in gws)
        ok = w99 is not None and w99 <= budget_ms and nmiss == 0
        ok = ok and (
            (r.name == lab.primary_region.name and not b) or (b99 is not None and b99 <= budget_ms)
        )
        targets.append(
            _target(
                f"{r.name}: weights and breaker on every replica within RTT + 1 s"
                f" ({budget_ms:g} ms), p99",
                ok,
                f"weights p99 {w99} ms, breaker p99 {b99} ms, {nmiss} missed",
            )
        )
    notes = [
        f"weights: `meridian weights set` against {operator.name} ({changes} changes); time from"
        " the command until each replica's GET /admin/v1/weights shows the split (polled every"
        f" {_POLL_S * 1000:g} ms)",
        *breaker_notes,
    ]
    if cli_failures:
        notes.append(f"CLI failures: {cli_failures[:3]}")
    return {"rows": rows, "notes": notes, "targets": targets}


async def _fail_until_open(
    lab: Lab, url: str, headers: dict[str, str], payload: bytes, limit: int
) -> None:
    for _ in range(limit):
        await one(lab.http(), url, headers, payload, lab.primary_region.name, "open", 5.0)


async def _breaker_cycles(
    lab: Lab, changes: int
) -> tuple[dict[str, list[float]], dict[str, int], list[str]]:
    """Open the probe backend's breaker on one replica ``changes`` times; for every
    other replica, the time until its status shows the backend unavailable."""
    origin = lab.in_region(lab.primary_region.name)[0]
    peers = [g for g in lab.gateways if g is not origin]
    seen: dict[str, list[float]] = {g.name: [] for g in peers}
    missed: dict[str, int] = {g.name: 0 for g in peers}
    hold_s = lab.options.breaker_open_s
    url = origin.http + "/v1/chat/completions"
    headers = _headers(lab, "open", lab.primary_region.name)
    payload = body(PROBE_MODEL, 2)

    async def probe_state(gw: Gateway) -> dict[str, Any] | None:
        status = await lab.admin_get(gw, "/admin/v1/status", 1.0)
        if not isinstance(status, dict):
            return None
        return next((b for b in status.get("backends", []) if b.get("name") == "probe"), None)

    async def unavailable(gw: Gateway) -> bool:
        st = await probe_state(gw)
        return st is not None and st.get("available") is False

    async def available(gw: Gateway) -> bool:
        st = await probe_state(gw)
        return st is not None and st.get("available") is True

    opened = 0
    await lab.set_faults("emu-probe", {"status": 500})
    try:
        for _ in range(changes):
            # the origin's breaker is watched while failing requests are sent (a
            # request can span several attempts and open it half-way through)
            t_open = None
            sender = asyncio.ensure_future(_fail_until_open(lab, url, headers, payload, 40))
            # open = the origin stops taking it (its status keeps saying "open" after
            # the open time has passed, until a request moves it to half-open)
            d = await wait_until(functools.partial(unavailable, origin), 30.0, 0.01)
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender
            if d is None:
                break
            t_open = time.monotonic()
            opened += 1

            async def watch(gw: Gateway, t_open: float = t_open) -> None:
                d = await wait_until(lambda: unavailable(gw), hold_s)
                if d is None:
                    missed[gw.name] += 1
                else:
                    seen[gw.name].append((time.monotonic() - t_open) * 1000)

            await asyncio.gather(*(watch(g) for g in peers))
            # the hold ends with the breaker's open time; wait until everyone is back
            await asyncio.gather(
                *(
                    wait_until(functools.partial(available, g), hold_s + 5, 0.1)
                    for g in lab.gateways
                )
            )
    finally:
        await lab.set_faults("emu-probe", None)
    notes = [
        f"breaker: the probe backend answers 500 and {origin.name} alone sends to it; {opened} of"
        f" {changes} openings; time from the moment its status showed the backend unavailable"
        " (open) until each"
        " other replica's GET /admin/v1/status shows it unavailable (a shared hold); both"
        f" polled (origin every 10 ms, peers every {_POLL_S * 1000:g} ms);"
        f" missed = not seen within the hold ({hold_s:g} s)",
    ]
    return seen, missed, notes
