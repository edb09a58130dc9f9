"""Start the lab, run the chosen scenarios in order, stop everything.

Order matters: ``primary_lost`` and ``region_lost`` break the fleet for good,
so they come last. The whole run has a deadline computed from the options;
past it the run is cancelled and everything started is stopped.
"""

from __future__ import annotations

import asyncio
import platform
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console

from bench.geo import scenarios
from bench.geo.lab import Lab, LabOptions
from bench.geo.report import render
from bench.geo.rtt import REGIONS

ALL = ("steady", "limits", "propagation", "partition", "primary_lost", "region_lost")


@dataclass(frozen=True, slots=True)
class RunOptions:
    scenarios: tuple[str, ...] = ALL
    replicas: int = 2
    requests: int = 40
    limit_rpm: int = 600
    limit_warmup_s: float = 60.0
    limit_window_s: float = 60.0
    changes: int = 20
    cut_s: float = 10.0
    detect_s: float = 1.0
    promote: str = "auto"
    after_s: float = 5.0
    store_options: Mapping[str, Any] = field(default_factory=dict)

    def budget_s(self) -> float:
        """An upper bound on the run: startup plus each scenario's own bounds."""
        per = {
            "steady": 30 + self.requests * 1.5,
            "limits": max(self.limit_warmup_s, 120) + self.limit_window_s + 20,
            "propagation": self.changes * 25 + 10,
            "partition": self.cut_s + 40,
            "primary_lost": self.detect_s + 70,
            "region_lost": self.after_s + 25,
        }
        return 90 + sum(per[s] for s in self.scenarios)


def _checkout() -> str:
    """The commit the gateways run, and whether the work tree differs from it."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() or "unknown"


async def run_lab(
    workdir: Path, opts: RunOptions, console: Console | None = None
) -> dict[str, Any]:
    lab = Lab(
        workdir,
        LabOptions(
            replicas=opts.replicas,
            capped_rpm=opts.limit_rpm,
            store_options=opts.store_options,
        ),
    )
    results: dict[str, Any] = {
        "lab": {
            "regions": [r.name for r in REGIONS],
            "replicas": opts.replicas,
            "primary": lab.primary_region.name,
            "read_field": lab.read_field,
            "leases_expected_replicas": len(REGIONS) * opts.replicas if lab.leases else None,
            "machine": f"{platform.node()} {platform.machine()} python {platform.python_version()}",
            "workdir": str(workdir),
            "code": _checkout(),
        },
        "scenarios": {},
    }
    try:
        async with asyncio.timeout(opts.budget_s()):
            t0 = time.monotonic()
            await lab.start()
            results["lab"]["startup_s"] = round(time.monotonic() - t0, 1)
            out = results["scenarios"]
            out["links"] = await scenarios.links(lab)
            for name in (s for s in ALL if s in opts.scenarios):  # fleet-breaking ones last
                t = time.monotonic()
                if console is not None:
                    console.print(f"[dim]running {name}…[/dim]")
                if name == "steady":
                    out[name] = await scenarios.steady(lab, opts.requests)
                elif name == "limits":
                    out[name] = await scenarios.limit_accuracy(
                        lab, opts.limit_warmup_s, opts.limit_window_s
                    )
                elif name == "propagation":
                    out[name] = await scenarios.propagation(lab, opts.changes)
                elif name == "partition":
                    out[name] = await scenarios.partition(lab, opts.cut_s)
                elif name == "primary_lost":
                    out[name] = await scenarios.primary_lost(lab, opts.detect_s, opts.promote)
                elif name == "region_lost":
                    out[name] = await scenarios.region_lost(lab, opts.after_s)
                out[name]["duration_s"] = round(time.monotonic() - t, 1)
    finally:
        await lab.close()
        results["lab"]["pids"] = [c.pid for c in lab.children]
    if console is not None:
        render(results, console)
    return results
