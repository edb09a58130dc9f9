"""Steady state: TTFT direct and through each region's gateways, unlimited and limited tenants."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.geo.client import Tally, body, one
from bench.geo.lab import MODEL, SERVED_MODEL, Lab
from bench.geo.rtt import REGIONS, rtt_ms
from bench.geo.scenarios.common import Result, _headers, _p, _target, _urls


async def steady(lab: Lab, requests: int) -> Result:
    """TTFT direct to the region's emulator, then through its gateways for an
    unlimited and a limited tenant, interleaved one at a time (the three see the
    same machine load). The first three of each are warm-up."""
    o = lab.options
    tally = Tally()
    direct: dict[str, list[float]] = {r.name: [] for r in REGIONS}
    warm = 3

    async def region_loop(region: str) -> None:
        host = next(r.host for r in REGIONS if r.name == region)
        port, _ = lab.emulators[f"emu-{region}"]
        direct_url = f"http://{host}:{port}/v1/chat/completions"
        gw_payload = body(MODEL, o.max_tokens)
        direct_payload = body(SERVED_MODEL, o.max_tokens)
        urls = _urls(lab, region)
        deadline = time.monotonic() + 20 + requests * 1.0
        for i in range(requests + warm):
            if time.monotonic() > deadline:
                break
            d = await one(lab.http(), direct_url, {}, direct_payload, region, "direct")
            if i >= warm and d.ttft_ms is not None:
                direct[region].append(d.ttft_ms)
            for tenant in ("open", "metered"):
                s = await one(
                    lab.http(),
                    urls[i % len(urls)],
                    _headers(lab, tenant, region),
                    gw_payload,
                    region,
                    tenant,
                )
                if i >= warm:
                    tally.add(s)

    await asyncio.gather(*(region_loop(r.name) for r in REGIONS))
    rows: list[dict[str, Any]] = []
    targets = []
    for r in REGIONS:
        open_t = [
            s.ttft_ms
            for s in tally.samples
            if s.region == r.name and s.tenant == "open" and s.ttft_ms is not None
        ]
        met_t = [
            s.ttft_ms
            for s in tally.samples
            if s.region == r.name and s.tenant == "metered" and s.ttft_ms is not None
        ]
        d50, o50, m50 = _p(direct[r.name], 50), _p(open_t, 50), _p(met_t, 50)
        lost = tally.count(region=r.name)
        row: dict[str, Any] = {
            "region": r.name,
            "rtt_to_primary_ms": rtt_ms(r.name, lab.primary_region.name),
            "n": len(open_t),
            "direct_p50_ms": d50,
            "unlimited_p50_ms": o50,
            "unlimited_p99_ms": _p(open_t, 99),
            "limited_p50_ms": m50,
            "limited_p99_ms": _p(met_t, 99),
            "added_unlimited_p50_ms": None if o50 is None or d50 is None else round(o50 - d50, 1),
            "added_limited_p50_ms": None if m50 is None or d50 is None else round(m50 - d50, 1),
            "limit_cost_p50_ms": None if m50 is None or o50 is None else round(m50 - o50, 1),
            "lost": lost["lost"] + lost["cut"],
            "errors": tally.errors(r.name),
        }
        rows.append(row)
    # the case: the replica farthest from the primary but within 150 ms of it
    far = max(
        (r for r in REGIONS if rtt_ms(r.name, lab.primary_region.name) <= 150),
        key=lambda r: rtt_ms(r.name, lab.primary_region.name),
    )
    row = next(x for x in rows if x["region"] == far.name)
    cost = row["limit_cost_p50_ms"]
    targets.append(
        _target(
            f"limited − unlimited TTFT p50 ≤ 2 ms on a replica"
            f" {row['rtt_to_primary_ms']:g} ms from the primary ({far.name})",
            None if cost is None else cost <= 2.0,
            "no samples" if cost is None else f"{cost:+.1f} ms",
        )
    )
    notes = [
        "added = gateway p50 − direct p50 (two independent samples, same region, interleaved);"
        " limit cost = limited tenant p50 − unlimited tenant p50 on the same replicas",
    ]
    return {"rows": rows, "notes": notes, "targets": targets}
