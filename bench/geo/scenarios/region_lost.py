"""Region lost: every gateway of a region killed under load."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.geo.client import Load, Tally, body, run
from bench.geo.lab import MODEL, Lab
from bench.geo.rtt import REGIONS
from bench.geo.scenarios.common import Result, _headers, _target, _urls


async def region_lost(lab: Lab, after_s: float) -> Result:
    victim = REGIONS[-1]
    tally = Tally()
    stop = asyncio.Event()
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
    ]
    running = asyncio.ensure_future(
        asyncio.gather(*(run(lab.http(), load, tally, stop, after_s + 15) for load in loads))
    )
    await asyncio.sleep(1.5)
    t_kill = time.monotonic()
    for gw in lab.in_region(victim.name):
        lab.kill(gw.child)
    lab.kill(lab.emulators[f"emu-{victim.name}"][1])
    lab.kill(lab.redis[victim.name].child)
    await asyncio.sleep(after_s)
    stop.set()
    await running
    rows: list[dict[str, Any]] = []
    for r in REGIONS:
        before = tally.count(region=r.name, until=t_kill)
        c = tally.count(region=r.name, since=t_kill)
        rows.append(
            {
                "region": r.name,
                "killed": r.name == victim.name,
                "ok_before": before["ok"],
                "sent_after_kill": sum(c.values()),
                "ok_after_kill": c["ok"],
                "lost_after_kill": c["lost"],
                "cut_streams": c["cut"] + before["cut"],
                "errors": tally.errors(r.name) if r.name != victim.name else [],
            }
        )
    lost = sum(x["lost_after_kill"] + x["cut_streams"] for x in rows if not x["killed"])
    return {
        "rows": rows,
        "notes": [
            f"every gateway, the emulator and the redis replica of {victim.name} SIGKILLed;"
            f" the other regions' clients kept sending for {after_s:g} s"
        ],
        "targets": [
            _target("region lost: 0 requests lost in the other regions", lost == 0, f"{lost} lost")
        ],
    }
