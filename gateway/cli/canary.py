"""``meridian canary start|status|promote|abort MODEL``.

``start`` sends the plan (candidate, steps, bake interval, thresholds); the
canary controller of the fleet then advances, holds or rolls back on its own.
``status`` shows the phase, the current step, the live sample of the step
window and every transition with its reason; ``promote`` and ``abort`` are
the manual overrides (100% / 0% at once).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import re
from typing import Any

from gateway.cli.admin_client import AdminClient, AdminError

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h)?$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
MAX_DURATION_S = 366 * 86400.0


def duration(text: str) -> float:
    """``60s``, ``2m``, ``500ms``, ``0.2`` (seconds) → seconds; AdminError (one line) if bad."""
    match = _DURATION.match(text.strip())
    seconds = float(match[1]) * _UNIT[match[2] or "s"] if match else math.nan
    if not 0 < seconds <= MAX_DURATION_S:
        raise AdminError(f"bad interval {text!r}: use e.g. 60s, 2m, 500ms (at most 1 year)")
    return seconds


def finite(option: str, value: float) -> float:
    """``value`` of ``option`` when it is a finite number; else AdminError (one line):
    argparse's ``float`` takes ``nan`` and ``inf``, which no threshold can mean."""
    if not math.isfinite(value):
        raise AdminError(f"bad {option} {value}: must be a finite number")
    return value


def steps(text: str) -> list[int]:
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise AdminError(f"bad steps {text!r}: use e.g. 5,25,50,100") from None


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    canary = sub.add_parser("canary", help="shift traffic to a new version step by step")
    verbs = canary.add_subparsers(dest="verb", required=True, metavar="VERB")
    start = verbs.add_parser("start", parents=[common], help="start a canary")
    start.add_argument("model")
    start.add_argument("--to", required=True, help="the candidate version")
    start.add_argument("--from", dest="stable", help="the stable version (default: the busiest)")
    start.add_argument("--steps", default="5,25,50,100", help="weights, e.g. 5,25,50,100")
    start.add_argument("--interval", default="60s", help="bake time per step (60s)")
    start.add_argument("--max-error-delta", type=float, default=0.02, help="e.g. 0.02 = +2 points")
    start.add_argument("--max-ttft-ratio", type=float, default=1.5, help="TTFT p95 vs stable")
    start.add_argument("--min-requests", type=int, default=50, help="sample needed per step")
    start.add_argument(
        "--require-shadow",
        action="store_true",
        help="refuse every step unless a shadow of the candidate passed (meridian shadow)",
    )
    start.set_defaults(func=run_start)
    for verb, text in (
        ("status", "phase, step, sample and history"),
        ("promote", "send 100%% to the candidate now"),
        ("abort", "send 0%% to the candidate now"),
    ):
        p = verbs.add_parser(verb, parents=[common], help=text)
        p.add_argument("model")
        p.set_defaults(func=run_verb, verb=verb)


def _path(model: str) -> str:
    return f"/admin/v1/canary/{model}"


def run_start(args: argparse.Namespace) -> int:
    plan = {
        "to": args.to,
        "from": args.stable,
        "steps": steps(args.steps),
        "interval_s": duration(args.interval),
        "max_error_delta": finite("--max-error-delta", args.max_error_delta),
        "max_ttft_ratio": finite("--max-ttft-ratio", args.max_ttft_ratio),
        "min_requests": args.min_requests,
        "require_shadow": args.require_shadow,
    }
    body = AdminClient(args.admin_url, args.token).send("POST", _path(args.model), plan)
    return show(args, body)


def run_verb(args: argparse.Namespace) -> int:
    client = AdminClient(args.admin_url, args.token)
    if args.verb == "status":
        body = client.get(_path(args.model))
    else:
        body = client.send("POST", f"{_path(args.model)}/{args.verb}")
    return show(args, body)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value} ms"  # no sample in this step yet


def _time(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%H:%M:%S")


def show(args: argparse.Namespace, body: dict[str, Any]) -> int:
    from rich.console import Console
    from rich.table import Table

    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    if "plan" not in body:
        raise AdminError("unexpected answer from the admin API")
    plan = body["plan"]
    console = Console()
    step = (
        f"step {body['step'] + 1}/{body['steps_total']} " if body["phase"] == "progressing" else ""
    )
    due = body.get("next_analysis_in_s")
    console.print(
        f"[bold]{body['model']}[/] canary {plan['stable']} → {plan['candidate']}: "
        f"[bold]{body['phase']}[/], {step}at {body['weight']}%"
        + ("" if due is None else f", next analysis in {due:.1f}s")
    )
    console.print(
        f"steps {','.join(map(str, plan['steps']))}, interval {plan['interval_s']}s, "
        f"max error delta {plan['max_error_delta']}, max TTFT ratio {plan['max_ttft_ratio']}, "
        f"min requests {plan['min_requests']}"
        + (", requires a passing shadow" if plan.get("require_shadow") else "")
    )
    console.print(f"last: {body['last']}")
    window = body.get("window")
    if window:
        console.print(
            "this step: "
            + "  ".join(
                f"{w['version']} {w['requests']} req {w['errors']} err p95 {_ms(w['ttft_p95_ms'])}"
                for w in window.values()
            )
        )
    if body.get("warning"):
        console.print(f"[yellow]warning:[/] {body['warning']}")
    table = Table("time", "phase", "weight", "by", "reason")
    for h in body["history"]:
        table.add_row(_time(h["at"]), h["phase"], f"{h['weight']}%", h["actor"], h["reason"])
    console.print(table)
    return 0
