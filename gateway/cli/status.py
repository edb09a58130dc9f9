"""``meridian status``, ``meridian top`` (the same, live) and ``meridian audit``.

``status`` is one admin call (``GET /admin/v1/status``) rendered as a table:
per backend its region, weight share, dial, breaker, availability, in-flight
count and TTFT estimates, under a header with the revision and the control
plane's state, and each model's SLOs with the error budget left (from the
admin ``/metrics``: gateway.cli.slo). ``top`` redraws it every ``--interval``
seconds with ``rich.live`` until Ctrl-C; ``--once`` draws one frame (scripts,
tests).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from gateway.cli.admin_client import AdminClient, AdminError
from gateway.cli.slo import report, scrape
from gateway.cli.top_view import Row, Scrape, parse, rows

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.table import Table


def add(sub: Any, common: argparse.ArgumentParser) -> None:
    status = sub.add_parser("status", parents=[common], help="regions, backends, health, weights")
    status.set_defaults(func=run_status)
    top = sub.add_parser("top", parents=[common], help="status and traffic per backend, live")
    top.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    top.add_argument("--once", action="store_true", help="draw one frame and exit")
    top.set_defaults(func=run_top)
    audit = sub.add_parser("audit", parents=[common], help="who changed what, when")
    audit.add_argument("--limit", type=int, default=20)
    audit.set_defaults(func=run_audit)


def _ms(value: Any) -> str:
    return "" if value is None else f"{value:.0f}"


def render(body: dict[str, Any]) -> RenderableType:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    cp = body.get("control_plane") or {}
    state = cp.get("status", "off")
    color = {"ok": "green", "degraded": "bold red"}.get(state, "yellow")
    header = Text.assemble(
        ("revision ", "dim"),
        (str(body["revision"]), "bold"),
        ("  control plane ", "dim"),
        (state, color),
        (f" ({cp.get('store', '?')} {cp.get('where', '')})", "dim"),
        ("  ready " if body["ready"] else "  NOT READY ", "dim" if body["ready"] else "bold red"),
        (f"  in-flight {body['in_flight']}", "dim"),
    )
    if cp.get("error"):
        header.append(f"\n{cp['error']}", "red")
    totals = {m: sum(split.values()) for m, split in body["models"].items()}
    columns = "backend model@version region provider weight dial breaker health in-flight"
    table = Table(*columns.split(), "TTFT ms", "p95 ms")
    for b in sorted(body["backends"], key=lambda b: (b["model"], b["version"], b["region"])):
        total = totals.get(b["model"]) or 1
        share = 100 * b.get("weight", 0) / total
        ok = b.get("available", True)
        health = "[green]ok[/]" if ok else f"[red]{b.get('why') or 'unavailable'}[/]"
        breaker = b.get("breaker", "")
        table.add_row(
            b["name"],
            f"{b['model']}@{b['version']}",
            b["region"],
            b["provider"],
            f"{share:.0f}%",
            "[red]drained[/]" if b["dial"] == 0 else str(b["dial"]),
            breaker if breaker == "closed" else f"[red]{breaker}[/]",
            health,
            str(b.get("in_flight", "")),
            _ms(b.get("ttft_ms")),
            _ms(b.get("ttft_p95_ms")),
        )
    slos = body.get("slo") or []
    if not slos:
        return Group(header, table)
    return Group(header, table, slo_table(slos))


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def _budget(left: float) -> str:
    color = "green" if left > 0.5 else "yellow" if left > 0 else "bold red"
    return f"[{color}]{_pct(left, 1)}[/]"


def slo_table(slos: list[dict[str, Any]]) -> Table:
    from rich.table import Table

    table = Table(
        "model",
        "availability",
        "objective",
        "budget left",
        "TTFT within",
        "objective",
        "budget left",
        "requests",
        title="SLOs since the gateway started (fleet windows: deploy/prometheus)",
    )
    for m in slos:
        table.add_row(
            m["model"],
            _pct(m["availability"], 3),
            _pct(m["availability_objective"], 3),
            _budget(m["availability_budget_left"]),
            _pct(m["ttft_within"]),
            f"p{100 * m['ttft_objective']:.0f} < {1000 * m['ttft_threshold_s']:.0f} ms",
            _budget(m["ttft_budget_left"]),
            f"{m['requests']:.0f}",
        )
    return table


def status(client: AdminClient) -> dict[str, Any]:
    """The admin status, with each model's SLO report under ``slo``."""
    return _status_and_scrape(client)[0]


def _status_and_scrape(client: AdminClient) -> tuple[dict[str, Any], str]:
    body: dict[str, Any] = client.get("/admin/v1/status")
    text = scrape(client)
    body["slo"] = [m.as_json() for m in report(text)]
    return body, text


def run_status(args: argparse.Namespace) -> int:
    from rich.console import Console

    body = status(AdminClient(args.admin_url, args.token))
    if args.json:
        print(json.dumps(body, indent=2))
    else:
        Console().print(render(body))
    return 0


def run_top(args: argparse.Namespace) -> int:
    """The status and a live traffic view per backend; ``q`` quits, Ctrl-C is 130."""
    from rich.console import Console, Group
    from rich.live import Live

    if not 0.1 <= args.interval <= 3600:  # also refuses nan and inf
        raise AdminError(f"bad --interval {args.interval:g}: seconds from 0.1 to 3600")
    client = AdminClient(args.admin_url, args.token)
    if args.json:  # a script wants one answer, not a redrawn screen
        return run_status(args)
    previous: Scrape | None = None

    def frame() -> RenderableType:
        nonlocal previous
        body, text = _status_and_scrape(client)
        current = parse(text, time.monotonic())
        view = Group(render(body), traffic_table(rows(previous, current, body)))
        previous = current
        return view

    if args.once:
        Console().print(frame())
        return 0
    try:
        with Live(frame(), auto_refresh=False) as live, _keys() as key:
            while True:
                if key(args.interval) in ("q", "Q"):
                    return 0
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        return 130  # docs/cli.md: Ctrl-C is 130, as for every command


def traffic_table(found: list[Row]) -> Table:
    from rich.table import Table

    rates = any(r.requests_per_s is not None for r in found)
    title = "traffic per backend" + ("" if rates else " (totals since start; rates next frame)")
    table = Table(
        "backend",
        "region",
        "model@version",
        "req/s" if rates else "requests",
        "errors",
        "TTFT p50 ms",
        "TTFT p95 ms",
        "tokens/s",
        "in-flight",
        "breaker",
        title=title,
    )
    for r in found:
        table.add_row(
            r.backend,
            r.region,
            r.model,
            f"{r.requests_per_s:.1f}" if r.requests_per_s is not None else f"{r.requests:.0f}",
            _pct(r.error_rate, 1),
            _ms(None if r.ttft_p50_s is None else 1000 * r.ttft_p50_s),
            _ms(None if r.ttft_p95_s is None else 1000 * r.ttft_p95_s),
            "–" if r.tokens_per_s is None else f"{r.tokens_per_s:.0f}",
            str(r.in_flight),
            r.breaker if r.breaker == "closed" else f"[red]{r.breaker}[/]",
        )
    return table


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[float], str | None]]:
    """A wait of up to N seconds that returns the key pressed meanwhile (a terminal in
    cbreak mode, restored on exit); without a terminal, a plain wait."""
    if not sys.stdin.isatty():

        def sleep(timeout: float) -> str | None:
            time.sleep(timeout)
            return None

        yield sleep
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(timeout: float) -> str | None:
        ready, _, _ = select.select([fd], [], [], timeout)
        return os.read(fd, 1).decode("utf-8", "replace") if ready else None

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _when(at: float) -> str:
    return datetime.datetime.fromtimestamp(at).strftime("%Y-%m-%d %H:%M:%S")


def _brief(value: Any) -> str:
    return "–" if value is None else json.dumps(value, separators=(",", ":"))[:60]


def run_audit(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    if not 1 <= args.limit <= 1000:
        raise AdminError(f"bad --limit {args.limit}: a whole number from 1 to 1000")
    body = AdminClient(args.admin_url, args.token).get("/admin/v1/audit", limit=args.limit)
    if args.json:
        print(json.dumps(body, indent=2))
        return 0
    table = Table("rev", "when", "actor", "action", "key", "old → new", "note")
    for e in body["entries"]:
        table.add_row(
            str(e["revision"]),
            _when(e["at"]),
            e["actor"],
            e["action"],
            e["key"],
            f"{_brief(e['old'])} → {_brief(e['new'])}",
            e["note"][:80],
        )
    Console().print(table)
    return 0
