"""``meridian weights show|set MODEL``: a model's traffic split between its versions."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

from gateway.cli.admin_client import AdminClient, AdminError

_PAIR = re.compile(r"^([^=\s]+)=(\d+)$")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    weights = sub.add_parser("weights", help="traffic split between a model's versions")
    verbs = weights.add_subparsers(dest="verb", required=True, metavar="VERB")
    show = verbs.add_parser("show", parents=[common], help="the split in force")
    show.add_argument("model")
    show.set_defaults(func=run_show)
    put = verbs.add_parser("set", parents=[common], help="set the split: MODEL v1=90 v2=10")
    put.add_argument("model")
    put.add_argument("weights", nargs="+", metavar="VERSION=WEIGHT")
    put.set_defaults(func=run_set)


def parse_weights(pairs: list[str]) -> dict[str, int]:
    """``["v1=90", "v2=10"]`` → ``{"v1": 90, "v2": 10}``; raises AdminError (one line)."""
    split: dict[str, int] = {}
    for pair in pairs:
        match = _PAIR.match(pair)
        if match is None:
            raise AdminError(f"bad weight {pair!r}: expected VERSION=WEIGHT, a whole number >= 0")
        if match[1] in split:
            raise AdminError(f"version {match[1]} is given twice")
        split[match[1]] = int(match[2])
    if sum(split.values()) <= 0:
        raise AdminError("weights must not all be 0: the model would get no traffic")
    return split


def _path(model: str) -> str:
    return f"/admin/v1/weights/{model}"


def print_split(body: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    total = sum(body["split"].values()) or 1
    console.print(
        f"[bold]{body['model']}[/]  revision {body['revision']}  "
        f"(from {body['source']}{'' if body['source'] == 'config' else ', overriding the config'})"
    )
    table = Table("version", "weight", "share", "config")
    for version, weight in body["split"].items():
        table.add_row(
            version, str(weight), f"{100 * weight / total:.0f}%", str(body["config"].get(version))
        )
    console.print(table)
    canary = body.get("canary")
    if canary and canary["phase"] in ("progressing", "waiting"):
        console.print(
            f"canary {canary['stable']} → {canary['candidate']}: {canary['phase']} "
            f"at {canary['weight']}%"
        )
    elif canary:  # it ended: its last weight is history, the table above is in force
        console.print(
            f"last canary {canary['stable']} → {canary['candidate']}: {canary['phase']} "
            f"(ended at {canary['weight']}%)"
        )


def run_show(args: argparse.Namespace) -> int:
    body = AdminClient(args.admin_url, args.token).get(_path(args.model))
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        print_split(body)
    return 0


def run_set(args: argparse.Namespace) -> int:
    from rich.console import Console

    split = parse_weights(args.weights)
    body = AdminClient(args.admin_url, args.token).send("PUT", _path(args.model), {"split": split})
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    old, new = body["old"], body["split"]
    moves = ", ".join(f"{v} {old.get(v, 0)} → {w}" for v, w in new.items())
    verb = "" if body["changed"] else " (unchanged)"
    Console().print(f"{body['model']}: {moves}  revision {body['revision']}{verb}")
    return 0
