"""``meridian replicas MODEL``: where each version's weights are verified (routable)."""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

from gateway.cli.admin_client import AdminClient


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    replicas = sub.add_parser("replicas", parents=[common], help="replica status per region")
    replicas.add_argument("model")
    replicas.set_defaults(func=run_replicas)


def run_replicas(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    body = AdminClient(args.admin_url, args.token).get(f"/admin/v1/replicas/{args.model}")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    table = Table("version", "region", "status", "routable", "from", "detail", "updated")
    for r in body["replicas"]:
        updated = r["updated"]
        table.add_row(
            r["version"],
            r["region"],
            r["status"],
            "[green]yes[/]" if r["ready"] else "[red]no[/]",
            r["source"],
            r["detail"],
            ""
            if updated is None
            else datetime.datetime.fromtimestamp(updated).strftime("%H:%M:%S"),
        )
    Console().print(f"[bold]{body['model']}[/]  revision {body['revision']}")
    Console().print(table)
    return 0
