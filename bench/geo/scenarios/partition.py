"""Partition: a region cut from the store, served fail-static, and healed."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.geo.client import Load, Tally, body, run
from bench.geo.lab import MODEL, Lab
from bench.geo.rtt import REGIONS
from bench.geo.scenarios.common import (
    Result,
    _admin_args,
    _headers,
    _target,
    _urls,
    cli,
    wait_until,
)
from bench.geo.scenarios.observe import _first, _observe


async def partition(lab: Lab, cut_s: float, heal_wait_s: float = 15.0) -> Result:
    cut_region = REGIONS[-1].name
    held_limit = lab.options.held_rpm
    tally = Tally()
    stop = asyncio.Event()
    log: list[dict[str, Any]] = []
    observe_stop = asyncio.Event()
    observer = asyncio.ensure_future(_observe(lab, lab.gateways, observe_stop, log))
    t_start = time.monotonic()
    # 1. the held tenant spends its minute's budget from every region
    exhaust = [
        Load(
            r.name,
            "held",
            _urls(lab, r.name),
            _headers(lab, "held", r.name),
            body(MODEL, 2),
            concurrency=2,
            max_requests=held_limit * 2,
        )
        for r in REGIONS
    ]
    await asyncio.gather(*(run(lab.http(), load, tally, asyncio.Event(), 10.0) for load in exhaust))
    # 2. steady traffic everywhere; the held tenant keeps asking in the cut region
    loads = [
        Load(
            r.name,
            "open",
            _urls(lab, r.name),
            _headers(lab, "open", r.name),
            body(MODEL, lab.options.max_tokens),
            concurrency=2,
            max_requests=100_000,
        )
        for r in REGIONS
    ] + [
        Load(
            cut_region,
            "held",
            _urls(lab, cut_region),
            _headers(lab, "held", cut_region),
            body(MODEL, 2),
            rate_per_s=5.0,
            max_requests=int(5 * (cut_s + heal_wait_s + 10)),
        )
    ]
    budget = cut_s + heal_wait_s + 10
    running = asyncio.ensure_future(
        asyncio.gather(*(run(lab.http(), load, tally, stop, budget) for load in loads))
    )
    await asyncio.sleep(1.0)
    cut_links = lab.links_of(cut_region)
    t_cut = time.monotonic()
    for link in cut_links:
        link.set_cut(True)
    # an operator in the cut region tries a change half-way through the cut
    await asyncio.sleep(cut_s / 2)
    cut_gw = lab.in_region(cut_region)[0]
    t_write = time.monotonic()
    code, said = await asyncio.to_thread(
        cli, ["weights", "set", MODEL, "v1=100", "v2=0", *_admin_args(cut_gw)]
    )
    write = {
        "gateway": cut_gw.name,
        "exit": code,
        "seconds": round(time.monotonic() - t_write, 2),
        "said": said.strip()[:200],
    }
    await asyncio.sleep(max(0.0, t_cut + cut_s - time.monotonic()))
    t_heal = time.monotonic()
    for link in cut_links:
        link.set_cut(False)

    async def all_ok() -> bool:
        return all(e["status"] == "ok" for e in log[-len(lab.gateways) :]) and log[-1]["t"] > t_heal

    recovered = await wait_until(all_ok, heal_wait_s, 0.2)
    stop.set()
    await running
    observe_stop.set()
    await observer
    t_end = time.monotonic()
    rows: list[dict[str, Any]] = []
    for r in REGIONS:
        during = tally.count(region=r.name, tenant="open", since=t_cut, until=t_heal)
        after = tally.count(region=r.name, tenant="open", since=t_heal, until=t_end)
        gws = lab.in_region(r.name)
        states = sorted(
            {
                f"{e['readyz']}/{e['status']}"
                for e in log
                if e["gateway"] in {g.name for g in gws} and t_cut <= e["t"] < t_heal
            }
        )
        to_degraded = [
            _first(log, g.name, t_cut, lambda e: e["status"] not in ("ok", None)) for g in gws
        ]
        to_ok = [_first(log, g.name, t_heal, lambda e: e["status"] == "ok") for g in gws]
        rows.append(
            {
                "region": r.name,
                "cut": r.name == cut_region,
                "sent_during_cut": sum(during.values()),
                "lost_during_cut": during["lost"],
                "cut_streams": during["cut"] + after["cut"],
                "lost_after_heal": after["lost"],
                "readyz/status seen during cut": states,
                "primary answers (store) during cut": sorted(
                    {
                        str(e["primary_answers"])
                        for e in log
                        if e["gateway"] in {g.name for g in gws} and t_cut <= e["t"] < t_heal
                    }
                ),
                "to_degraded_s": [None if x is None else round(x, 1) for x in to_degraded],
                "to_ok_after_heal_s": [None if x is None else round(x, 1) for x in to_ok],
                "errors": tally.errors(r.name),
            }
        )
    held_all = tally.count(tenant="held", since=t_start)["ok"]
    held_cut = tally.count(tenant="held", region=cut_region, since=t_cut, until=t_heal)["ok"]
    elapsed = t_heal - t_start
    allowance = held_limit * (1 + elapsed / 60)
    degraded_msgs = sorted(
        {str(e["error"])[:160] for e in log if e["status"] not in ("ok", None) and e["error"]}
    )[:2]
    unaffected_lost = sum(
        x["lost_during_cut"] + x["cut_streams"] + x["lost_after_heal"] for x in rows if not x["cut"]
    )
    started_cut = sum(x["cut_streams"] for x in rows)
    return {
        "rows": rows,
        "held": {
            "limit_per_min": held_limit,
            "admitted_total": held_all,
            "admitted_in_cut_region_during_cut": held_cut,
            "sliding_window_allowance": round(allowance, 1),
            "held": held_all <= 1.05 * allowance,
        },
        "recovered_s": None if recovered is None else round(recovered, 1),
        "write_while_cut": write,
        "notes": [
            f"{cut_region} cut from every other region for {cut_s:g} s (black hole: dropped, not"
            f" refused), {len(cut_links)} links; its gateways keep their local backend",
            f"limit: tenant 'held' ({held_limit}/min) spent its budget from every region first,"
            f" then asked 5/s in {cut_region}: {held_all} admitted in all over {elapsed:.1f} s"
            f" (a sliding window allows ≤ {allowance:.0f}), {held_cut} in the cut region while cut",
            *(f"status said: {m}" for m in degraded_msgs),
            f"`meridian weights set` on {cut_gw.name} while cut: exit {code} after"
            f" {write['seconds']:g} s: {write['said'] or '(nothing)'}",
        ],
        "targets": [
            _target(
                "partition: 0 requests lost in the unaffected regions",
                unaffected_lost == 0,
                f"{unaffected_lost} lost",
            ),
            _target(
                "partition: 0 started streams lost anywhere", started_cut == 0, f"{started_cut} cut"
            ),
            _target(
                "partition: the limit holds (≤ 105% of a sliding window's allowance)",
                held_all <= 1.05 * allowance,
                f"{held_all} admitted vs ≤ {allowance:.0f}",
            ),
        ],
    }
