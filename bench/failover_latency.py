"""What a region outage costs the clients streaming through it (issue 4).

Three emulated regions (separate processes), one gateway process, N concurrent
closed-loop streams. After a warm-up, one region's emulator is killed with
SIGKILL: its streams break mid-answer (the gateway resumes them elsewhere) and
requests routed to it before the breaker learns find it refusing connections
(the gateway fails over before the first token). Reported:

* failed requests (the target is zero);
* TTFT p50/p99 of requests that needed more than one attempt vs the rest —
  the added latency of failover;
* the largest gap between two chunks of each stream, p50/p99, for streams
  that were resumed vs the rest — the added latency of a resumption (the
  splice), against the emulator's inter-token interval.

``python -m bench.failover_latency [--streams 100] [--duration 8]``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import signal
import statistics
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import uvloop
import yaml

from bench.procs import Child, free_port, wait_http_ok
from bench.stack import _meridian

KEY = "sk-bench-failover"
REGIONS = [("aws:eu-west-1", "EU"), ("gcp:europe-west4", "EU"), ("onprem:fra1", "EU")]
SERVED = "meta-llama/Llama-3.1-8B-Instruct"


@dataclass
class Outcome:
    status: int
    attempts: int
    ttft: float
    max_gap: float
    backend: str
    started: float
    ended: float


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)


def _config(http: int, admin: int, emus: list[int]) -> dict[str, object]:
    return {
        "listen": {"http": f"127.0.0.1:{http}", "admin": f"127.0.0.1:{admin}", "grpc": None},
        "admin": {"token": "env:MERIDIAN_ADMIN_TOKEN"},
        "regions": [{"name": r, "tags": [t]} for r, t in REGIONS],
        "models": [{"name": "m", "versions": {"v1": 100}}],
        "backends": [
            {
                "name": f"b{i}",
                "model": "m",
                "version": "v1",
                "region": REGIONS[i][0],
                "provider": "vllm",
                "url": f"http://127.0.0.1:{port}",
                "served_model": SERVED,
            }
            for i, port in enumerate(emus)
        ],
        "tenants": [
            {"name": "t", "api_keys": ["sha256:" + hashlib.sha256(KEY.encode()).hexdigest()]}
        ],
        "failover": {"hedge": False},
    }


async def _stream(s: aiohttp.ClientSession, url: str, tokens: int, run: Run, i: int) -> None:
    body = {
        "model": "m",
        "messages": [{"role": "user", "content": f"tell me a story {i}"}],
        "stream": True,
        "max_tokens": tokens,
    }
    start = time.perf_counter()
    first = last = 0.0
    max_gap = 0.0
    chunks = 0
    async with s.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as resp:
        attempts = int(resp.headers.get("x-meridian-attempts", "0"))
        backend = resp.headers.get("x-meridian-backend", "")
        if resp.status != 200:
            await resp.read()
            run.outcomes.append(Outcome(resp.status, attempts, 0, 0, backend, start, start))
            return
        raw = b""
        async for piece in resp.content.iter_any():
            now = time.perf_counter()
            n = piece.count(b'"content":"')
            if n and not first:
                first = now
            elif n and last:
                max_gap = max(max_gap, now - last)
            if n:
                last = now
                chunks += n
            raw += piece
    ok = raw.rstrip().endswith(b"data: [DONE]") and b'"error"' not in raw
    end = time.perf_counter()
    run.outcomes.append(
        Outcome(200 if ok else 502, attempts, first - start, max_gap, backend, start, end)
    )


async def _load(url: str, streams: int, tokens: int, until: float, run: Run) -> None:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as s:

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < until:
                await _stream(s, url, tokens, run, w * 100_000 + i)
                i += 1

        await asyncio.gather(*(worker(w) for w in range(streams)))


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--streams", type=int, default=100)
    p.add_argument("--duration", type=float, default=8.0)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--itl-ms", type=float, default=10.0)
    p.add_argument("--ttft-ms", type=float, default=30.0)
    p.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        help="when to kill the region, as a fraction of the run (0 = as the load starts)",
    )
    args = p.parse_args()
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**os.environ, "MERIDIAN_ADMIN_TOKEN": "bench"}
        emus, children = [], []
        for i in range(len(REGIONS)):
            port = free_port()
            child = Child(
                f"emulator-{i}",
                [
                    _meridian(),
                    "emulate",
                    "vllm",
                    "--port",
                    str(port),
                    "--ttft-ms",
                    str(args.ttft_ms),
                    "--itl-ms",
                    str(args.itl_ms),
                    "--model",
                    SERVED,
                ],
                work / f"emu{i}.log",
                env,
            )
            stack.callback(child.stop)
            wait_http_ok(child, f"http://127.0.0.1:{port}/health", 20)
            emus.append(port)
            children.append(child)
        http, admin = free_port(), free_port()
        cfg = work / "meridian.yaml"
        cfg.write_text(yaml.safe_dump(_config(http, admin, emus)))
        gateway = Child(
            "gateway", [_meridian(), "serve", "--config", str(cfg)], work / "gw.log", env
        )
        stack.callback(gateway.stop)
        wait_http_ok(gateway, f"http://127.0.0.1:{http}/readyz", 20)
        run = Run()
        kill_at = time.monotonic() + args.duration * args.kill_at
        killed_at = [0.0]

        async def drive() -> None:
            until = time.monotonic() + args.duration
            load = asyncio.create_task(
                _load(
                    f"http://127.0.0.1:{http}/v1/chat/completions",
                    args.streams,
                    args.tokens,
                    until,
                    run,
                )
            )
            await asyncio.sleep(max(0.0, kill_at - time.monotonic()))
            killed_at[0] = time.perf_counter()
            os.killpg(children[0].pid, signal.SIGKILL)  # the region dies mid-stream
            await load

        uvloop.run(drive())
        resumed_total = _metric(admin, 'meridian_failover_events_total{event="resumed"}')
    ok = [o for o in run.outcomes if o.status == 200]
    failed = len(run.outcomes) - len(ok)
    single = [o.ttft for o in ok if o.attempts <= 1]
    multi = [o.ttft for o in ok if o.attempts > 1]
    # In flight at the kill: streamed by the killed backend (b0) -> spliced;
    # by the others -> the baseline under the same load at the same moment.
    at_kill = [o for o in ok if o.started < killed_at[0] < o.ended]
    spliced = [o.max_gap for o in at_kill if o.backend == "b0"]
    plain = [o.max_gap for o in at_kill if o.backend != "b0"]

    def line(label: str, xs: list[float]) -> str:
        p50, p99 = _pct(xs, 0.5) * 1000, _pct(xs, 0.99) * 1000
        return f"{label:<44} n={len(xs):5d}  p50 {p50:7.1f} ms  p99 {p99:7.1f} ms"

    print(f"requests {len(run.outcomes)}  failed {failed}  resumed (metric) {resumed_total:.0f}")
    print(line("TTFT, one attempt", single))
    print(line("TTFT, failed over before the first token", multi))
    print(line("largest chunk gap in flight at kill, others", plain))
    print(line("largest chunk gap in flight at kill, killed", spliced))
    if spliced and plain:
        added = (statistics.median(spliced) - statistics.median(plain)) * 1000
        print(f"added by a resumption (median gap difference): {added:.1f} ms")
    if multi and single:
        added = (statistics.median(multi) - statistics.median(single)) * 1000
        print(f"added by failover before the first token (median TTFT difference): {added:.1f} ms")
    if failed:
        raise SystemExit(1)


def _metric(admin_port: int, series: str) -> float:
    import urllib.request

    req = urllib.request.Request(
        f"http://127.0.0.1:{admin_port}/metrics", headers={"Authorization": "Bearer bench"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(series):
                    return float(line.rsplit(" ", 1)[1])
    except OSError:
        pass
    return 0.0


if __name__ == "__main__":
    main()
