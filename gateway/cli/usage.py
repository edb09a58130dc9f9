"""``meridian usage``: the fleet's tokens and spend per tenant and model over a window.

One admin call (``GET /admin/v1/usage``), from the store every replica counts
into, so any replica's admin URL answers for the whole fleet.
"""

from __future__ import annotations

import argparse
import datetime
import json
import re
from typing import TYPE_CHECKING, Any

from gateway.cli.admin_client import AdminClient
from gateway.control.usage import MAX_WINDOW_S, MIN_WINDOW_S

if TYPE_CHECKING:
    from rich.table import Table

_WINDOW = re.compile(r"(\d{1,6})([smhd]?)", re.ASCII)  # as the admin API: ASCII digits
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def window(text: str) -> int:
    """An argparse type: ``1h``, ``30m``, ``3600s`` or ``3600`` → seconds, 1 min to 24 h."""
    match = _WINDOW.fullmatch(text.strip())
    seconds = int(match[1]) * _UNIT_S[match[2]] if match else 0
    if not MIN_WINDOW_S <= seconds <= MAX_WINDOW_S:
        raise argparse.ArgumentTypeError(
            f"expected a window from 1m to 24h such as 1h, 30m or 3600s, got {text!r}"
        )
    return seconds


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    usage = sub.add_parser(
        "usage", parents=[common], help="tokens and spend per tenant and model, fleet-wide"
    )
    usage.add_argument(
        "--window", type=window, default=3600, help="how far back: 1h (default), 30m, 3600s, 24h"
    )
    usage.set_defaults(func=run_usage)


def _span(start: int, end: int) -> str:
    first, last = (datetime.datetime.fromtimestamp(t, datetime.UTC) for t in (start, end))
    until = f"{last:%H:%M}" if first.date() == last.date() else f"{last:%Y-%m-%d %H:%M}"
    return f"{first:%Y-%m-%d %H:%M} → {until} UTC"


def render(body: dict[str, Any]) -> Table:
    from rich.table import Table
    from rich.text import Text

    minutes = (body["to"] - body["from"]) // 60
    title = (
        f"usage {_span(body['from'], body['to'])} ({minutes} min, this one included; all replicas)"
    )
    table = Table(
        "tenant", "model", "requests", "prompt\ntokens", "completion\ntokens", "spend\nUSD",
        title=title,
    )  # fmt: skip
    # Names and numbers are never cut: a terminal too narrow folds names onto more lines.
    for column in table.columns[:2]:
        column.overflow = "fold"
    for column in table.columns[2:]:
        column.justify, column.no_wrap = "right", True
    for r in body["rows"]:
        # Text, not markup: a configured name may hold "[", and "[/x]" would raise.
        table.add_row(Text(r["tenant"]), Text(r["model"]), *_numbers(r))
    t = body["totals"]
    table.add_section()
    table.add_row("total", "", *_numbers(t), style="bold")
    return table


def _numbers(r: dict[str, Any]) -> tuple[str, str, str, str]:
    return (
        f"{r['requests']:,}",
        f"{r['prompt_tokens']:,}",
        f"{r['completion_tokens']:,}",
        f"{r['spend_usd']:,.6f}",
    )


def run_usage(args: argparse.Namespace) -> int:
    from rich.console import Console

    body = AdminClient(args.admin_url, args.token).get("/admin/v1/usage", window=args.window)
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        Console().print(render(body))
    return 0
