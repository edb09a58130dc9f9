"""``meridian route explain``: why a request would go where it goes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.admin_client import AdminClient, AdminError


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    route = sub.add_parser("route", help="routing decisions")
    verbs = route.add_subparsers(dest="verb", required=True, metavar="VERB")
    explain = verbs.add_parser(
        "explain", parents=[common], help="the plan a request would get, with reasons"
    )
    explain.add_argument("model")
    explain.add_argument("--tenant", help="tenant name (its residency, models, cost weight)")
    explain.add_argument("--prompt", default="", help="prompt text (for prefix affinity)")
    explain.add_argument("--residency", help="x-meridian-residency narrowing, e.g. DE")
    explain.add_argument("--max-tokens", type=int)
    explain.add_argument(
        "--needs",
        help="capabilities the request asks, e.g. tools,vision (backends lacking one are "
        "excluded, saying which)",
    )
    explain.set_defaults(func=run_explain)


def run_explain(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.max_tokens is not None and args.max_tokens < 1:
        raise AdminError(f"bad --max-tokens {args.max_tokens}: must be a whole number >= 1")
    client = AdminClient(args.admin_url, args.token)
    body = client.get(
        "/admin/v1/route/explain",
        model=args.model,
        tenant=args.tenant,
        prompt=args.prompt or None,
        residency=args.residency,
        max_tokens=args.max_tokens,
        needs=args.needs,
    )
    if args.json:
        print(json.dumps(body, indent=2))
        return 0 if "error" not in body else 1
    console = Console()
    if "error" in body:
        err = body["error"]
        raise AdminError(f"{err['status']}: {err['message']}")  # as every other refusal
    console.print(
        f"[bold]{body['model']}[/] → version [bold]{body['version']}[/]  "
        f"tenant {body['tenant'] or '(none)'}  residency {body['residency']}"
    )
    table = Table("#", "backend", "region", "provider", "score", "why")
    for i, c in enumerate(body["candidates"], 1):
        score = "" if c["score"] is None else f"{c['score']:.3f}"
        table.add_row(str(i), c["backend"], c["region"], c["provider"], score, c["reason"])
    for e in body["excluded"]:
        table.add_row("–", e["backend"], "", "", "", f"[dim]excluded: {e['why']}[/]")
    console.print(table)
    if body["candidates"]:
        console.print(
            "[dim]score: lower is better; #1 is the p2c pick, the better of two sampled; "
            "latency: (TTFT + ITL × tokens) × (in flight + 1)[/]"
        )
    return 0
