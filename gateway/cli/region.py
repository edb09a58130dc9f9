"""``meridian region drain|undrain|dial REGION`` and ``meridian region list``.

Draining sets the region's effective dial to 0 on every replica (new requests
go elsewhere; streams in flight finish); undraining restores the dial it had.
``dial`` turns a region down (or back up) gradually: its share of the traffic
it would get on merit, 0–100, e.g. to let a region take load slowly after an
incident.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.admin_client import AdminClient, AdminError


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    region = sub.add_parser("region", help="drain or undrain a region")
    verbs = region.add_subparsers(dest="verb", required=True, metavar="VERB")
    for verb, text in (("drain", "take a region out of rotation"), ("undrain", "put it back")):
        p = verbs.add_parser(verb, parents=[common], help=text)
        p.add_argument("region", help="e.g. aws:us-east-1")
        p.set_defaults(func=run_drain, drain=verb == "drain")
    dial = verbs.add_parser("dial", parents=[common], help="set a region's traffic dial (0-100)")
    dial.add_argument("region", help="e.g. aws:us-east-1")
    dial.add_argument("percent", help="0-100")
    dial.set_defaults(func=run_dial)
    listing = verbs.add_parser("list", parents=[common], help="regions with dials and drains")
    listing.set_defaults(func=run_list)


def run_drain(args: argparse.Namespace) -> int:
    verb = "drain" if args.drain else "undrain"
    body = AdminClient(args.admin_url, args.token).send(
        "POST", f"/admin/v1/regions/{args.region}/{verb}"
    )
    if args.json:
        print(json.dumps(body, indent=2))
    elif not body["changed"]:
        print(f"{body['region']} was already {verb}ed (dial {body['dial']})")
    else:
        print(
            f"{verb}ed {body['region']}: dial {body['dial_before']} → {body['dial']}  "
            f"revision {body['revision']}"
        )
    return 0


def _percent(text: str) -> int:
    try:
        value = int(text.rstrip("%"))
    except ValueError:
        raise AdminError(f"bad dial {text!r}: a percentage from 0 to 100") from None
    if not 0 <= value <= 100:
        raise AdminError(f"bad dial {text!r}: a percentage from 0 to 100")
    return value


def run_dial(args: argparse.Namespace) -> int:
    body = AdminClient(args.admin_url, args.token).send(
        "PUT", f"/admin/v1/regions/{args.region}/dial", {"dial": _percent(args.percent)}
    )
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    drained = "  (drained: routes nothing until undrained)" if body["drained"] else ""
    print(
        f"dial of {body['region']}: {body['dial_before']} → {body['dial']}  "
        f"revision {body['revision']}{drained}"
    )
    return 0


def run_list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    body = AdminClient(args.admin_url, args.token).get("/admin/v1/regions")
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    table = Table("region", "tags", "dial", "drained")
    for r in body["regions"]:
        table.add_row(r["name"], ",".join(r["tags"]), str(r["dial"]), "yes" if r["drained"] else "")
    Console().print(table)
    return 0
