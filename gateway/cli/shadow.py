"""``meridian shadow start|status|stop MODEL``.

``start`` stores a shadow plan; every replica then mirrors its share of the
model's admitted traffic to the candidate and adds the comparisons to the
plan's fleet-wide counters. ``status`` is the verdict an operator reads before
a canary: one table, primary against candidate, and pass/fail with the reason
for every failed threshold. Exit codes: 0 when the command worked (whatever
the verdict, unless ``status --check``: then 0 only for a pass, 3 for a
fail, 4 while pending, so a pipeline can gate on it), 1 for bad input or an
admin API refusal (one line on stderr), 2 for a malformed command line.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.admin_client import AdminClient, AdminError
from gateway.cli.canary import duration, finite


def share(text: str) -> float:
    """``50``, ``50%`` or ``12.5`` → percent; AdminError (one line) if outside 0–100."""
    try:
        value = float(text.strip().removesuffix("%"))
    except ValueError:
        raise AdminError(f"bad share {text!r}: use a percent, e.g. 10 or 10%") from None
    if not 0 <= value <= 100:
        raise AdminError(f"bad share {text!r}: must be between 0 and 100")
    return value


def _positive(name: str, value: float) -> None:
    if value <= 0:
        raise AdminError(f"bad {name} {value:g}: must be positive")


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    shadow = sub.add_parser("shadow", help="mirror live traffic to a candidate and compare")
    verbs = shadow.add_subparsers(dest="verb", required=True, metavar="VERB")
    start = verbs.add_parser("start", parents=[common], help="start mirroring to a candidate")
    start.add_argument("model")
    start.add_argument("--to", required=True, help="the candidate version")
    start.add_argument("--share", default="100", help="percent of requests to mirror (100)")
    start.add_argument("--duration", default="10m", help="how long to mirror (10m)")
    start.add_argument("--max-concurrent", type=int, default=8, help="copies in flight (8)")
    start.add_argument("--max-tokens-per-min", type=int, default=100_000, help="copy tokens")
    start.add_argument(
        "--exclude-tenant", action="append", default=[], help="never mirror (repeatable)"
    )
    start.add_argument("--min-pairs", type=int, default=20, help="pairs before a verdict (20)")
    start.add_argument("--max-error-delta", type=float, default=0.02, help="0.02 = +2 points")
    start.add_argument("--max-ttft-ratio", type=float, default=1.5, help="TTFT p95 vs primary")
    start.add_argument("--min-agreement", type=float, default=0.9, help="mean overlap (0..1)")
    start.set_defaults(func=run_start)
    for verb, text in (
        ("status", "the comparison so far and its verdict"),
        ("stop", "stop mirroring (the comparison stays readable)"),
    ):
        p = verbs.add_parser(verb, parents=[common], help=text)
        p.add_argument("model")
        if verb == "status":
            p.add_argument("--check", action="store_true", help="exit 3 on fail, 4 while pending")
        p.set_defaults(func=run_verb, verb=verb)


def _path(model: str) -> str:
    return f"/admin/v1/shadow/{model}"


def run_start(args: argparse.Namespace) -> int:
    _positive("--max-concurrent", args.max_concurrent)
    _positive("--max-tokens-per-min", args.max_tokens_per_min)
    _positive("--min-pairs", args.min_pairs)
    for option in ("--max-error-delta", "--max-ttft-ratio", "--min-agreement"):
        finite(option, getattr(args, option.removeprefix("--").replace("-", "_")))
    if not 0 <= args.min_agreement <= 1:
        raise AdminError(f"bad --min-agreement {args.min_agreement:g}: must be between 0 and 1")
    plan = {
        "candidate": args.to,
        "share": share(args.share),
        "duration_s": duration(args.duration),
        "max_concurrent": args.max_concurrent,
        "max_tokens_per_min": args.max_tokens_per_min,
        "exclude_tenants": list(args.exclude_tenant),
        "min_pairs": args.min_pairs,
        "max_error_delta": args.max_error_delta,
        "max_ttft_ratio": args.max_ttft_ratio,
        "min_agreement": args.min_agreement,
    }
    body = AdminClient(args.admin_url, args.token).send("POST", _path(args.model), plan)
    return show(args, body)


def run_verb(args: argparse.Namespace) -> int:
    client = AdminClient(args.admin_url, args.token)
    if args.verb == "status":
        body = client.get(_path(args.model))
    else:
        body = client.send("POST", f"{_path(args.model)}/stop")
    return show(args, body)


def _cell(value: Any, unit: str = "", fmt: str = "{:g}") -> str:
    return "–" if value is None else fmt.format(value) + unit


_CHECK_EXIT = {"pass": 0, "fail": 3}


def show(args: argparse.Namespace, body: Any) -> int:
    from rich.console import Console
    from rich.table import Table

    code = 0
    if getattr(args, "check", False) and isinstance(body, dict):
        code = _CHECK_EXIT.get(str(body.get("verdict")), 4)
    if args.json:
        print(json.dumps(body, indent=2))
        return code
    if not isinstance(body, dict) or "plan" not in body or "summary" not in body:
        raise AdminError("unexpected answer from the admin API")
    plan, s = body["plan"], body["summary"]
    console = Console()
    state = f"running, {body['remaining_s']:.0f}s left" if body["active"] else "stopped"
    console.print(
        f"[bold]{body['model']}[/] shadow → {plan['candidate']} "
        f"at {plan['share']:g}%: {state} (run {plan['run']})"
    )
    excluded = ", ".join(plan["excluded"]) or "none"
    console.print(
        f"caps {plan['max_concurrent']} concurrent, {plan['max_tokens_per_min']} tokens/min; "
        f"excluded tenants: {excluded}"
    )
    dropped = ", ".join(f"{k} {n}" for k, n in sorted(s["dropped"].items())) or "0"
    console.print(
        f"mirrored {s['mirrored']}, compared {s['pairs']}, skipped {s.get('skipped', 0)}, "
        f"disagreeing {s['disagreeing']}, dropped {dropped}"
    )
    table = Table("", "primary", "candidate")
    p, c = s["primary"], s["candidate"]
    table.add_row(
        "error rate", _cell(p["error_rate"], fmt="{:.1%}"), _cell(c["error_rate"], fmt="{:.1%}")
    )
    for key, label in (
        ("ttft_p50_ms", "TTFT p50"),
        ("ttft_p95_ms", "TTFT p95"),
        ("itl_p50_ms", "ITL p50"),
    ):
        table.add_row(label, _cell(p[key], " ms"), _cell(c[key], " ms"))
    table.add_row(
        "mean tokens", _cell(p["mean_tokens"], fmt="{:.1f}"), _cell(c["mean_tokens"], fmt="{:.1f}")
    )
    console.print(table)
    console.print(
        f"agreement {_cell(s['mean_agreement'], fmt='{:.3f}')}, "
        f"exact {_cell(s['exact_match_rate'], fmt='{:.1%}')}, "
        f"mean common prefix {_cell(s['mean_prefix_tokens'], ' tokens', '{:.1f}')}"
    )
    colour = {"pass": "green", "fail": "red"}.get(body["verdict"], "yellow")
    console.print(
        f"verdict: [bold {colour}]{body['verdict'].upper()}[/] — " + "; ".join(body["reasons"])
    )
    return code
