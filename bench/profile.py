"""``python -m bench.profile``: where the gateway's CPU goes, per streamed chunk.

Runs ``meridian serve`` under a cProfile that counts CPU time
(``time.process_time``; cProfile's default wall clock would charge the event
loop's idle ``epoll_wait`` to it) in front of the emulator, drives the bench's
closed-loop streaming workload through it (by default the latency scenario at
200 streams), profiles exactly the measured window (SIGUSR2 at its start
enables the profiler, SIGUSR2 at its end writes the file), and prints:

- the top functions by **self time** (cProfile's ``tottime``), each as µs per
  streamed chunk and as a share of all profiled time;
- the same self time grouped by where the code lives (a gateway module, a
  library, the interpreter's builtins).

Per chunk = self time / the chunks the load generator received in the
window, so a function called once per chunk shows its own cost. cProfile
adds a fixed cost to every Python call (here two clock reads, each a system
call), so absolute figures are inflated, most for small functions called
often; read the ranking and the shares, and take CPU per request from
``python -m bench``, which runs without a profiler.
Processes are pinned as in ``python -m bench`` (gateway on one core,
emulator and load generator on another) when there are two cores.
"""

from __future__ import annotations

import argparse
import os
import pstats
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench.loadgen import LoadJob, LoadResult, run_in_process
from bench.procs import cpu_seconds, pinning
from bench.runner import request_body
from bench.scenarios import SCENARIOS
from bench.stack import start_stack

# Runs a console script under a CPU-time cProfile toggled by SIGUSR2 (unused by
# the gateway): the first enables it, the second writes the stats and stops.
# argv: -c OUT SCRIPT ARGS...
_PROFILED = """
import cProfile, os, runpy, signal, sys, time
out, script = sys.argv[1], sys.argv[2]
sys.argv = sys.argv[2:]
prof = cProfile.Profile(time.process_time)
state = []
def toggle(signum, frame):
    if not state:
        state.append(1)
        prof.enable()
    elif len(state) == 1:
        state.append(2)
        prof.disable()
        prof.dump_stats(out + ".tmp")
        os.replace(out + ".tmp", out)
signal.signal(signal.SIGUSR2, toggle)
runpy.run_path(script, run_name="__main__")
"""
_DUMP_DEADLINE_S = 30.0

# pstats' key: (file, line, function name); its value: (primitive calls, calls,
# self time, cumulative time, callers).
_Key = tuple[str, int, str]


@dataclass(frozen=True, slots=True)
class Row:
    where: str
    calls: int
    self_s: float


@dataclass(frozen=True, slots=True)
class Profile:
    total_s: float  # all profiled self time
    functions: list[Row]  # by self time, highest first
    groups: list[Row]  # self time by module or library, highest first


def _short(path: str) -> str:
    """A file path as the package-relative name a reader knows it by."""
    if path.startswith("~") or path.startswith("<"):
        return path
    parts = Path(path).parts
    for anchor in ("site-packages", "lib-dynload"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor) + 1 :])
    for top in ("gateway", "routing", "regions", "failover", "bench"):
        if top in parts:
            return "/".join(parts[len(parts) - 1 - parts[::-1].index(top) :])
    if "lib" in parts:  # the standard library: python3.x/asyncio/events.py -> asyncio/events.py
        return "/".join(parts[parts.index("lib") + 2 :])
    return path


def _group(path: str, func: str) -> str:
    """Which module (ours) or package (a library) a function belongs to."""
    if path == "~":  # C functions called from Python (dict.get, isinstance, orjson.loads)
        return "C functions (builtins, extensions)"
    short = _short(path)
    top = short.split("/", 1)[0]
    if top in ("gateway", "routing", "regions", "failover"):
        return short  # one row per module of ours
    return top.removesuffix(".py")


def summarise(stats: pstats.Stats) -> Profile:
    raw: dict[_Key, tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    functions = []
    groups: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    total = 0.0
    for (path, line, func), (_prim, calls, self_s, _cum, _callers) in raw.items():
        total += self_s
        name = func if path == "~" else f"{_short(path)}:{line}({func})"
        functions.append(Row(name, calls, self_s))
        bucket = groups[_group(path, func)]
        bucket[0] += calls
        bucket[1] += self_s
    functions.sort(key=lambda r: r.self_s, reverse=True)
    grouped = [Row(k, int(v[0]), v[1]) for k, v in groups.items()]
    grouped.sort(key=lambda r: r.self_s, reverse=True)
    return Profile(total, functions, grouped)


def render(
    profile: Profile, result: LoadResult, gateway_cpu_s: float, top: int, out: Callable[[str], None]
) -> None:
    chunks = max(result.chunks, 1)
    out(
        f"{result.chunks} chunks and {result.completed} requests in the window;"
        f" gateway CPU (/proc) {gateway_cpu_s:.2f} s = {1e6 * gateway_cpu_s / chunks:.1f} µs/chunk"
        f" under the profiler; profiled self time {profile.total_s:.2f} s"
    )
    for title, rows in (("functions", profile.functions), ("by module", profile.groups)):
        out("")
        out(f"top {top} {title} by self time")
        out(f"{'µs/chunk':>9} {'share':>6} {'calls':>10} {'calls/chunk':>11}  where")
        for r in rows[:top]:
            out(
                f"{1e6 * r.self_s / chunks:9.2f} {100 * r.self_s / profile.total_s:5.1f}%"
                f" {r.calls:10d} {r.calls / chunks:11.2f}  {r.where}"
            )


def _wait_for(condition: Callable[[], bool], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)  # polling a file's appearance, bounded by the deadline
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--scenario", choices=tuple(SCENARIOS), default="latency")
    p.add_argument("--concurrency", type=int, default=200)
    p.add_argument("--duration", type=float, default=10.0, help="profiled seconds of load")
    p.add_argument("--warmup", type=float, default=1.0, help="unprofiled seconds before")
    p.add_argument("--top", type=int, default=25, help="rows per table")
    p.add_argument("--out", type=Path, help="keep the cProfile file here (for snakeviz, pstats)")
    p.add_argument(
        "--max-tokens", type=int, help="tokens per response (few: the per-request costs show)"
    )
    args = p.parse_args(argv)
    up = SCENARIOS[args.scenario].with_upstream(None, None, args.max_tokens).upstream
    pin = pinning()
    print(pin.describe() if pin else "not pinned: fewer than two usable cores")
    if pin is not None:
        os.sched_setaffinity(0, pin.load)  # this process only waits; keep it off the gateway's core
    print(
        f"scenario {args.scenario}: upstream ttft {up.ttft_ms:g} ms, itl {up.itl_ms:g} ms,"
        f" {up.max_tokens} tokens; {args.concurrency} streams for {args.duration:g} s"
    )
    with tempfile.TemporaryDirectory(prefix="meridian-profile-") as tmp:
        workdir = Path(tmp)
        prof = args.out.resolve() if args.out else workdir / "gateway.prof"
        wrap = (sys.executable, "-c", _PROFILED, str(prof))
        cpu: dict[str, float] = {}
        with start_stack(
            up, workdir, gateway=True, litellm=False, pin=pin, gateway_wrap=wrap
        ) as stack:
            gateway = stack.endpoint("gateway")
            assert gateway is not None and gateway.pid is not None
            gateway_pid = gateway.pid
            job = LoadJob(
                url=gateway.url,
                headers={"Content-Type": "application/json", **gateway.headers},
                body=request_body(gateway.model, up.max_tokens),
                concurrency=args.concurrency,
                warmup_s=args.warmup,
                duration_s=args.duration,
                cpus=pin.load if pin else None,
            )

            def on_mark(which: str) -> None:
                cpu[which] = cpu_seconds(gateway_pid)
                os.kill(gateway_pid, signal.SIGUSR2)

            result = run_in_process(job, on_mark, lambda: None)
            if not _wait_for(prof.exists, _DUMP_DEADLINE_S):
                logs = (log.read_text(errors="replace") for log in workdir.glob("gateway-*.log"))
                tail = "\n".join("\n".join(text.splitlines()[-20:]) for text in logs)
                print(f"no profile written to {prof}; the gateway's log ends:\n{tail}")
                return 3
        errors = sum(result.errors.values())
        if errors:
            print(f"warning: {errors} requests failed: {result.error_samples}")
        render(
            summarise(pstats.Stats(str(prof))),
            result,
            cpu["end"] - cpu["start"],
            args.top,
            print,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
