"""Primary lost: the store's primary killed, the nearest replica promoted, writes moved to it."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from bench.geo.client import Load, Tally, body, run
from bench.geo.lab import MODEL, Gateway, Lab
from bench.geo.proxy import Target
from bench.geo.rtt import REGIONS, rtt_ms
from bench.geo.scenarios.common import (
    Result,
    _admin_args,
    _headers,
    _target,
    _urls,
    cli,
    wait_until,
)
from bench.geo.scenarios.observe import _observe, _recovered


async def primary_lost(
    lab: Lab, detect_s: float, promote: str = "auto", write_deadline_s: float = 30.0
) -> Result:
    """Kill the primary, promote the nearest replica, and move the writes to it:
    ``admin`` = ``POST /admin/v1/store/primary`` on every replica whose copy is
    not the promoted one (the others find it themselves); ``endpoint`` = repoint
    every region's write-endpoint link, as DNS would; ``auto`` = ``admin`` when
    the gateways have ``GET /admin/v1/store``."""
    from bench.geo.lab import redis_command

    old = lab.primary_region
    new = REGIONS[1]
    operator = lab.in_region(new.name)[0]
    tally = Tally()
    stop = asyncio.Event()
    log: list[dict[str, Any]] = []
    observe_stop = asyncio.Event()
    observer = asyncio.ensure_future(_observe(lab, lab.gateways, observe_stop, log))
    loads = [
        Load(
            r.name,
            t,
            _urls(lab, r.name),
            _headers(lab, t, r.name),
            body(MODEL, lab.options.max_tokens),
            concurrency=1,
            max_requests=100_000,
        )
        for r in REGIONS
        for t in ("open", "metered")
    ]
    budget = detect_s + write_deadline_s + 20
    running = asyncio.ensure_future(
        asyncio.gather(*(run(lab.http(), load, tally, stop, budget) for load in loads))
    )
    # the last write before the kill, acknowledged
    code, out = await asyncio.to_thread(
        cli, ["weights", "set", MODEL, "v1=77", "v2=23", "--json", *_admin_args(operator)]
    )
    before = json.loads(out) if code == 0 else {}
    await asyncio.sleep(0.5)
    t_kill = time.monotonic()
    lab.kill(lab.redis[old.name].child)
    await asyncio.sleep(detect_s)
    node = lab.redis[new.name]
    promoted = await redis_command(new.host, node.port, "REPLICAOF", "NO", "ONE")
    target = Target(new.host, node.port, new.name)
    links: dict[str, str] = {new.name: f"redis://{new.host}:{node.port}/0"}
    for r in REGIONS:
        if r.name == new.name:
            continue
        link = await lab.add_link(f"{r.name}->redis-{new.name}", r, target)
        links[r.name] = f"redis://{link.address}/0"
        if r.name != old.name:
            rn = lab.redis[r.name]
            await redis_command(r.host, rn.port, "REPLICAOF", link.listen_host, str(link.port))
    mode = promote
    if mode == "auto":
        mode = (
            "admin" if await lab.admin_get(operator, "/admin/v1/store") is not None else "endpoint"
        )
    repointed: dict[str, int] = {}
    if mode == "endpoint":
        for r in REGIONS:
            lab.write_links[r.name].retarget(target, rtt_ms(r.name, new.name) / 2000)
    else:
        # what docs/control-plane.md says an operator does: every replica whose
        # copy is not the promoted one is told the new primary (the old primary's
        # region also moves its reads, its copy was the lost primary itself)
        async def repoint(gw: Gateway) -> None:
            body_ = {"url": links[gw.region.name]}
            if gw.region.name == old.name:
                body_["read_url"] = links[gw.region.name]
            repointed[gw.name] = await lab.admin_post(gw, "/admin/v1/store/primary", body_)

        await asyncio.gather(*(repoint(g) for g in lab.gateways if g.region.name != new.name))
    lab.primary_region = new
    t_promoted = time.monotonic()

    async def api_write(gw: Gateway) -> float | None:
        # PUT /admin/v1/weights, what `meridian weights set` sends, per region at once
        deadline = time.monotonic() + write_deadline_s
        while time.monotonic() < deadline:
            status = await lab.admin_put(
                gw, f"/admin/v1/weights/{MODEL}", {"split": {"v1": 100, "v2": 0}}
            )
            if status == 200:
                return round(time.monotonic() - t_kill, 1)
            await asyncio.sleep(0.2)
        return None

    api_ok = asyncio.ensure_future(
        asyncio.gather(*(api_write(lab.in_region(r.name)[0]) for r in REGIONS))
    )
    write_ok = None
    tries = 0
    deadline = time.monotonic() + write_deadline_s
    while time.monotonic() < deadline:
        tries += 1
        code, _ = await asyncio.to_thread(
            cli, ["weights", "set", MODEL, "v1=100", "v2=0", *_admin_args(operator)]
        )
        if code == 0:
            write_ok = time.monotonic() - t_kill
            break
        await asyncio.sleep(0.2)
    writes_per_region = dict(zip((r.name for r in REGIONS), await api_ok, strict=True))
    del t_promoted
    audit = await lab.admin_get(operator, "/admin/v1/audit?limit=20", 3.0)
    entries = audit.get("entries", audit) if isinstance(audit, dict) else audit
    kept = None
    if before and isinstance(entries, list):
        kept = any(
            isinstance(e, dict)
            and e.get("revision") == before.get("revision")
            and e.get("new") == before.get("split")
            for e in entries
        )
    t_write = time.monotonic()

    async def all_ok() -> bool:
        n = len(lab.gateways)
        return (
            len(log) >= n
            and log[-1]["t"] > t_write + 1
            and all(e["status"] == "ok" for e in log[-n:])
        )

    await wait_until(all_ok, 15.0, 0.2)
    stop.set()
    await running
    observe_stop.set()
    await observer
    rows: list[dict[str, Any]] = []
    for r in REGIONS:
        c = tally.count(region=r.name, since=t_kill)
        gws = lab.in_region(r.name)
        rows.append(
            {
                "region": r.name,
                "sent_after_kill": sum(c.values()),
                "lost": c["lost"],
                "cut_streams": c["cut"],
                "status_seen": sorted(
                    {
                        str(e["status"])
                        for e in log
                        if e["t"] >= t_kill and e["gateway"] in {g.name for g in gws}
                    }
                ),
                "ok_again_after_kill_s": [_recovered(log, g.name, t_kill) for g in gws],
                "writes_work_after_kill_s": writes_per_region.get(r.name),
                "errors": tally.errors(r.name),
            }
        )
    lost = sum(x["lost"] + x["cut_streams"] for x in rows)
    return {
        "rows": rows,
        "write_ok_after_s": None if write_ok is None else round(write_ok, 1),
        "promotion": mode,
        "repointed": repointed,
        "pre_kill_write_kept": kept,
        "notes": [
            f"redis primary in {old.name} SIGKILLed 0.5 s after an acknowledged `weights set`"
            f" (revision {before.get('revision')}); after {detect_s:g} s the lab promotes"
            f" {new.name} (REPLICAOF NO ONE → {promoted}), then "
            + (
                "repoints every region's write endpoint (a link, like a DNS failover);"
                " gateways are neither restarted nor told"
                if mode == "endpoint"
                else "POSTs /admin/v1/store/primary to the replicas outside"
                f" {new.name} (answers: {sorted(set(repointed.values()))}); those in"
                f" {new.name}, whose copy was promoted, are not told"
            ),
            "writes work after kill = first 200 from PUT /admin/v1/weights (what the CLI"
            " sends) on each region's first replica, retried every 0.2 s",
            f"`meridian weights set` via {operator.name} retried every 0.2 s: "
            + (
                "never worked"
                if write_ok is None
                else f"worked {write_ok:.1f} s after the kill ({tries} tries)"
            ),
            f"the pre-kill write in the audit log after promotion: {kept}",
        ],
        "targets": [
            _target("primary lost: 0 requests lost anywhere", lost == 0, f"{lost} lost"),
            _target("primary lost: nothing written before the kill lost", kept, str(kept)),
        ],
    }
