"""Links: the injected delay of each region's write link, measured."""

from __future__ import annotations

from typing import Any

from bench.geo.lab import Lab
from bench.geo.proxy import measure_rtt_ms
from bench.geo.rtt import REGIONS, rtt_ms
from bench.geo.scenarios.common import Result


async def links(lab: Lab) -> Result:
    """The injected delay, measured: a Redis PING through each region's write link."""
    rows: list[dict[str, Any]] = []
    for r in REGIONS:
        link = lab.write_links[r.name]
        measured = await measure_rtt_ms(link.listen_host, link.port)
        table = rtt_ms(r.name, link.target.region)
        rows.append(
            {
                "region": r.name,
                "to": f"primary ({link.target.region})",
                "table_rtt_ms": table,
                "measured_rtt_ms": round(measured, 1),
                "error_pct": None if table == 0 else round((measured - table) / table * 100, 1),
            }
        )
    return {"rows": rows, "notes": [], "targets": []}
