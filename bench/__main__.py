"""``python -m bench``: the gateway against a direct connection, one run, same workload.

Exit status: 0 when every request succeeded, 1 when some failed, 3 when the
harness could not run (a process did not start, the load generator died),
130 on Ctrl-C. Missed performance targets are printed, not turned into a
failing status: on a shared 2-core machine they are a measurement, not a bug.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import orjson
from rich.console import Console

from bench.procs import StartError
from bench.report import render
from bench.runner import Options, run
from bench.scenarios import SCENARIOS, THROUGHPUT

_MIN_WIDTH = 130


def _positive_ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 10,200, got {text!r}") from None
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _scenarios(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"scenarios are {', '.join(SCENARIOS)}; got {text!r}")
    return names


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    p.add_argument(
        "--concurrency",
        type=_positive_ints,
        default=(10, 200),
        help="comma-separated open-stream counts (default 10,200)",
    )
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per run")
    p.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds before each")
    p.add_argument(
        "--scenario",
        type=_scenarios,
        default=tuple(SCENARIOS),
        help=f"comma-separated, from {', '.join(SCENARIOS)} (default all)",
    )
    p.add_argument("--ttft-ms", type=float, help="override the emulator's time to first token")
    p.add_argument("--itl-ms", type=float, help="override the emulator's inter-token latency")
    p.add_argument("--max-tokens", type=int, help="override the tokens per response")
    p.add_argument(
        "--workers",
        type=_positive_ints,
        default=(1,),
        help="gateway worker processes; several (e.g. 1,2): the matrix runs at the fewest,"
        " then the throughput scenario through the gateway alone at each count, for the"
        " workers ratio (default 1)",
    )
    p.add_argument(
        "--idle-streams",
        type=int,
        help="idle open streams for the memory probe (default: highest concurrency; 0 skips it)",
    )
    p.add_argument(
        "--no-pin",
        action="store_true",
        help="do not pin the proxy and its load to separate cores",
    )
    p.add_argument(
        "--no-nginx", action="store_true", help="skip the nginx reference even if installed"
    )
    p.add_argument(
        "--no-floor",
        action="store_true",
        help="skip the floors of the gateway's stack: the aiohttp and relay contenders",
    )
    p.add_argument(
        "--no-pacing",
        action="store_true",
        help="the gateway with limits.pacing off (every chunk read as it arrives, even under load)",
    )
    p.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    only = p.add_mutually_exclusive_group()
    only.add_argument("--gateway-only", action="store_true", help="skip the direct runs")
    only.add_argument("--direct-only", action="store_true", help="skip the gateway")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.warmup < 0:
        p.error("--duration must be > 0 and --warmup >= 0")
    if len(set(args.workers)) > 1 and args.direct_only:
        p.error("several --workers counts compare gateways: not with --direct-only")
    return args


def options_from(args: argparse.Namespace) -> Options:
    scenarios = tuple(
        SCENARIOS[name].with_upstream(args.ttft_ms, args.itl_ms, args.max_tokens)
        for name in args.scenario
    )
    idle = max(args.concurrency) if args.idle_streams is None else args.idle_streams
    counts = tuple(sorted(set(args.workers)))
    return Options(
        scenarios=scenarios,
        concurrency=args.concurrency,
        duration_s=args.duration,
        warmup_s=args.warmup,
        direct=not args.gateway_only,
        gateway=not args.direct_only,
        workers=counts[0],
        idle_streams=idle,
        pin=not args.no_pin,
        nginx=not args.no_nginx,
        floor=not args.no_floor,
        pacing=not args.no_pacing,
        workers_scaling=counts if len(counts) > 1 else (),
        workers_scenario=THROUGHPUT.with_upstream(args.ttft_ms, args.itl_ms, args.max_tokens),
    )


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every `with`, which stops the children


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console = Console()
    if console.width < _MIN_WIDTH:  # e.g. piped to a log: wrap lines rather than cut figures
        console = Console(width=_MIN_WIDTH)
    signal.signal(signal.SIGTERM, _terminate)
    workdir = Path(tempfile.mkdtemp(prefix="meridian-bench-"))
    keep = True
    try:
        report = run(options_from(args), workdir, lambda line: console.print(line, markup=False))
        render(report, console)
        if args.json is not None:
            args.json.write_bytes(orjson.dumps(report.to_json(), option=orjson.OPT_INDENT_2))
            console.print(f"JSON written to {args.json}")
        keep = report.errors > 0
        return 1 if report.errors else 0
    except (StartError, FileNotFoundError, RuntimeError) as exc:
        console.print(f"bench failed: {exc}", markup=False)
        return 3
    except KeyboardInterrupt:
        console.print("interrupted; processes stopped")
        return 130
    finally:
        if keep:
            console.print(f"process logs kept in {workdir}", markup=False)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
