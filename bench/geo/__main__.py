"""``python -m bench.geo``: the geo lab (issue 15). See docs/geo-lab.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from bench.geo.run import ALL, RunOptions, run_lab
from bench.procs import StartError


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench.geo", description=__doc__)
    p.add_argument(
        "--scenario",
        default=",".join(ALL),
        help=f"comma-separated, in this order: {','.join(ALL)} (default: all)",
    )
    p.add_argument("--replicas", type=int, default=2, help="gateway replicas per region")
    p.add_argument("--requests", type=int, default=40, help="steady state: requests per tenant")
    p.add_argument("--limit-rpm", type=int, default=600, help="limit accuracy: requests/min")
    p.add_argument("--limit-warmup", type=float, default=60.0, help="limit accuracy: seconds")
    p.add_argument("--limit-window", type=float, default=60.0, help="limit accuracy: seconds")
    p.add_argument("--changes", type=int, default=20, help="propagation: changes of each kind")
    p.add_argument("--cut", type=float, default=10.0, help="partition: seconds cut off")
    p.add_argument("--detect", type=float, default=1.0, help="primary lost: seconds to promote")
    p.add_argument(
        "--promote",
        choices=("auto", "admin", "endpoint"),
        default="auto",
        help="primary lost: tell the gateways (POST /admin/v1/store/primary) or move the"
        " write endpoint under them; auto = admin when the gateways have it",
    )
    p.add_argument("--after", type=float, default=5.0, help="region lost: seconds observed")
    p.add_argument(
        "--store-option",
        action="append",
        default=[],
        metavar="KEY=YAML",
        help="extra store: config key for every gateway (repeatable)",
    )
    p.add_argument("--workdir", type=Path, help="keep configs and logs here (default: temp)")
    p.add_argument("--json", type=Path, help="write every result as JSON to this path")
    return p


async def _run(workdir: Path, opts: RunOptions, console: Console) -> dict[str, Any]:
    # SIGTERM stops the run the way Ctrl-C does: every child is stopped on the way out
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    return await run_lab(workdir, opts, console)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    scenarios = [s.strip() for s in args.scenario.split(",") if s.strip()]
    unknown = [s for s in scenarios if s not in ALL]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    scenarios = [s for s in ALL if s in scenarios]  # the fleet-breaking ones last
    store: dict[str, object] = {}
    for item in args.store_option:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"--store-option wants KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        store[key] = yaml.safe_load(value)
    opts = RunOptions(
        scenarios=tuple(scenarios),
        replicas=args.replicas,
        requests=args.requests,
        limit_rpm=args.limit_rpm,
        limit_warmup_s=args.limit_warmup,
        limit_window_s=args.limit_window,
        changes=args.changes,
        cut_s=args.cut,
        detect_s=args.detect,
        promote=args.promote,
        after_s=args.after,
        store_options=store,
    )
    # a pipe or a file gets wide tables rather than folded cells
    console = Console() if sys.stdout.isatty() else Console(width=150)
    with tempfile.TemporaryDirectory(prefix="geo-lab-") as tmp:
        workdir = args.workdir or Path(tmp)
        try:
            results = asyncio.run(_run(workdir, opts, console))
        except StartError as exc:
            console.print(f"[red]the lab could not start[/red]: {exc}")
            return 3
        except TimeoutError:
            console.print(f"[red]the run passed its deadline ({opts.budget_s():.0f} s)[/red]")
            return 1
        except (KeyboardInterrupt, asyncio.CancelledError):
            return 130
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
