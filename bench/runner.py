"""Runs the benchmark matrix: scenario x concurrency x contender, same workload.

Each scenario gets a fresh stack (emulator, gateway, the floors of its stack, nginx
and LiteLLM if installed),
so a scenario's memory baseline and pools are not inherited from another.
Within it, for each concurrency level, every contender takes the same
closed-loop load in turn, the direct connection first. During each window
the measuring process (this one, otherwise idle) reads the CPU counters of
the emulator and the proxy at t0 and t1 and samples the proxy's RSS.

With two or more cores every proxy runs on one core and the emulator, the
load generator and this process on another (``bench.procs.Pinning``), so the
proxies are compared on equal footing: one core each, nothing else on it.

With several ``--workers`` counts (``Options.workers_scaling``), the
throughput scenario then runs through the gateway alone at the highest
concurrency once per count, each on a fresh stack, for the workers ratio:
with a core per worker of the largest count and at least one more, the
workers get those cores and the load the rest, in every one of these runs;
otherwise none of them is pinned.
"""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import orjson

from bench.loadgen import LoadJob, LoadResult, run_in_process
from bench.memory import probe_idle_streams
from bench.procs import Pinning, cpu_seconds, machine_cpu_seconds, pinning, rss_bytes
from bench.results import (
    Report,
    RunRecord,
    Workers,
    compare,
    idle_rss,
    idle_streams_verdict,
    workers_verdict,
)
from bench.scenarios import THROUGHPUT, Scenario
from bench.stack import Endpoint, Stack, litellm_available, nginx_bin, start_stack
from bench.stats import Distribution

PROMPT = "Write a short story about a lighthouse keeper."


@dataclass(frozen=True, slots=True)
class Options:
    scenarios: tuple[Scenario, ...]
    concurrency: tuple[int, ...]
    duration_s: float
    warmup_s: float
    direct: bool = True
    gateway: bool = True
    workers: int = 1
    idle_streams: int = 0  # 0: skip the idle-stream memory probe
    pin: bool = True  # pin proxy and load to separate cores when there are two
    nginx: bool = True  # run nginx as a reference contender if it is installed
    floor: bool = True  # run the floors of the gateway's stack (bench.floor, bench.relay)
    pacing: bool = True  # the gateway's limits.pacing
    # Worker counts for the workers runs (gateway only); () skips them.
    workers_scaling: tuple[int, ...] = ()
    workers_scenario: Scenario = THROUGHPUT


def request_body(model: str, max_tokens: int) -> bytes:
    """The one request every contender gets. It asks for the usage chunk because
    the gateway always asks its upstream for it; both paths then carry the same events."""
    return orjson.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": PROMPT}],
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": max_tokens,
        }
    )


def measure(
    scenario: Scenario,
    stack: Stack,
    endpoint: Endpoint,
    concurrency: int,
    options: Options,
    idle_rss: int | None,
    pin: Pinning | None = None,
) -> RunRecord:
    """One closed-loop run against ``endpoint``, with CPU and RSS of the processes under test."""
    job = LoadJob(
        url=endpoint.url,
        headers={"Content-Type": "application/json", **endpoint.headers},
        body=request_body(endpoint.model, scenario.upstream.max_tokens),
        concurrency=concurrency,
        warmup_s=options.warmup_s,
        duration_s=options.duration_s,
        cpus=pin.load if pin else None,
    )
    watched = {"emulator": stack.emulator_pid}
    if endpoint.pid is not None:
        watched["proxy"] = endpoint.pid
    cpu: dict[str, dict[str, float]] = {}
    peak = 0

    def sample_rss() -> None:
        nonlocal peak
        if endpoint.pid is not None:
            peak = max(peak, rss_bytes(endpoint.pid))

    def on_mark(which: str) -> None:
        cpu[which] = {name: cpu_seconds(pid) for name, pid in watched.items()}
        cpu[which]["machine"], cpu[which]["steal"] = machine_cpu_seconds()
        sample_rss()

    def on_tick() -> None:
        if "start" in cpu and "end" not in cpu:
            sample_rss()

    result = run_in_process(job, on_mark, on_tick)
    cpu_s = {name: cpu["end"][name] - cpu["start"][name] for name in cpu["start"]}
    cpu_s["loadgen"] = result.client_cpu_s
    # Everything else that ran meanwhile, this measuring process included.
    cpu_s["other"] = max(0.0, cpu_s.pop("machine") - sum(cpu_s[n] for n in (*watched, "loadgen")))
    return _record(scenario.name, endpoint, concurrency, result, cpu_s, idle_rss, peak or None)


def _record(
    scenario: str,
    endpoint: Endpoint,
    concurrency: int,
    result: LoadResult,
    cpu_s: dict[str, float],
    idle_rss: int | None,
    peak_rss: int | None,
) -> RunRecord:
    window = result.window_s
    return RunRecord(
        scenario=scenario,
        contender=endpoint.name,
        concurrency=concurrency,
        window_s=window,
        requests_per_s=result.completed / window,
        chunks_per_s=result.chunks / window,
        chunks_per_request=result.started_chunks / result.started if result.started else 0.0,
        ttft_ms=Distribution.of(result.ttft_ms),
        e2e_ms=Distribution.of(result.e2e_ms),
        errors=sum(result.errors.values()),
        error_kinds=dict(result.errors),
        error_samples=list(result.error_samples),
        cpu_s=cpu_s,
        proxy_rss_idle=idle_rss if endpoint.pid is not None else None,
        proxy_rss_peak=peak_rss if endpoint.pid is not None else None,
    )


def decide_pinning(options: Options) -> tuple[Pinning | None, str]:
    """The pinning for this run and the line that says so."""
    if not options.pin:
        return None, "not pinned (--no-pin): processes float over all cores"
    if options.workers != 1:
        return None, f"not pinned: --workers {options.workers} needs more than one core"
    pin = pinning()
    if pin is None:
        return None, "not pinned: fewer than two usable cores"
    return pin, pin.describe()


def run(options: Options, workdir: Path, progress: Callable[[str], None]) -> Report:
    """The whole benchmark; ``progress`` gets one line per step."""
    litellm = options.gateway and litellm_available()
    nginx = options.gateway and options.nginx and nginx_bin() is not None
    pin, pin_line = decide_pinning(options)
    report = Report(meta=_meta(options))
    report.meta["pinning"] = pin_line
    if options.gateway and options.nginx and not nginx:
        report.notes.append("nginx not installed (make bench-deps): reference contender skipped.")
    if options.gateway and not litellm:
        report.notes.append("LiteLLM proxy not installed: third contender skipped.")
    progress(pin_line)
    before = os.sched_getaffinity(0)
    if pin is not None:
        os.sched_setaffinity(0, pin.load)  # this process only samples /proc; keep it off the proxy
    try:
        _run_matrix(
            options,
            workdir,
            progress,
            report,
            pin,
            nginx=nginx,
            floor=options.gateway and options.floor,
            litellm=litellm,
        )
    finally:
        os.sched_setaffinity(0, before)
    report.comparisons = compare(
        report.runs,
        {s.name: s.targets for s in options.scenarios},
        _nginx_absent(options, nginx),
    )
    if options.gateway and options.workers_scaling:
        report.workers = _run_workers(options, workdir, progress)
    if options.gateway and options.idle_streams > 0:
        progress(f"memory: {options.idle_streams} idle open streams through the gateway")
        report.idle_streams = probe_idle_streams(options.idle_streams, workdir, options.workers)
    if options.gateway:
        report.idle_rss = idle_rss(report.runs, report.idle_streams, options.workers)
        report.idle_streams_verdict = idle_streams_verdict(
            report.idle_streams, "probe skipped (--idle-streams 0)"
        )
    return report


def _nginx_absent(options: Options, installed: bool) -> str:
    if not options.nginx:
        return "nginx did not run (--no-nginx)"
    if not installed:
        return "nginx did not run: not installed (make bench-deps)"
    return "nginx did not run in this scenario at this concurrency"


def workers_pinning(counts: tuple[int, ...], pin: bool) -> tuple[Pinning | None, str, int | None]:
    """The workers runs' pinning as a function of the count: the first N usable cores
    for N workers and, for the load, every core after the largest count's. None when
    there are not that many cores plus one (or ``pin`` is off); with the line that says
    so and how many cores the load is pinned to."""
    usable = sorted(os.sched_getaffinity(0))
    most = max(counts)
    if not pin:
        return None, "not pinned (--no-pin)", None
    if len(usable) < most + 1:
        return (
            None,
            f"not pinned: {most} workers and their load need {most + 1} cores,"
            f" {len(usable)} usable",
            None,
        )
    load = frozenset(usable[most:])
    line = (
        f"pinned: N workers on the first N of CPU {_cpus(usable[:most])}, load on CPU {_cpus(load)}"
    )
    return Pinning(proxy=frozenset(usable[:most]), load=load), line, len(load)


def _cpus(cpus: Iterable[int]) -> str:
    return ",".join(str(c) for c in sorted(cpus))


def _run_workers(options: Options, workdir: Path, progress: Callable[[str], None]) -> Workers:
    """The throughput scenario through the gateway alone, at the highest concurrency,
    once per worker count on a fresh stack."""
    scenario = options.workers_scenario
    counts = tuple(sorted(set(options.workers_scaling)))
    concurrency = max(options.concurrency)
    pin, line, load_cores = workers_pinning(counts, options.pin)
    up = scenario.upstream
    progress(
        f"workers {','.join(map(str, counts))}: scenario {scenario.name}, gateway only; {line}"
    )
    runs = []
    before = os.sched_getaffinity(0)
    try:
        for n in counts:
            # n workers on n of the cores; the load on the same cores in every run
            each = None if pin is None else Pinning(frozenset(sorted(pin.proxy)[:n]), pin.load)
            if each is not None:
                os.sched_setaffinity(0, each.load)
            with start_stack(
                up, workdir, gateway=True, litellm=False, workers=n, pin=each, pacing=options.pacing
            ) as stack:
                gateway = stack.endpoint("gateway")
                assert gateway is not None and gateway.pid is not None
                idle = rss_bytes(gateway.pid)
                progress(f"  gateway  c={concurrency:<4} {options.duration_s:g}s, {n} workers")
                record = measure(scenario, stack, gateway, concurrency, options, idle, each)
                runs.append(replace(record, workers=n))
    finally:
        os.sched_setaffinity(0, before)
    usable = len(before)
    runs_t = tuple(runs)
    return Workers(line, usable, runs_t, workers_verdict(runs_t, usable, load_cores))


def _run_matrix(
    options: Options,
    workdir: Path,
    progress: Callable[[str], None],
    report: Report,
    pin: Pinning | None,
    *,
    nginx: bool,
    floor: bool,
    litellm: bool,
) -> None:
    for scenario in options.scenarios:
        up = scenario.upstream
        progress(
            f"scenario {scenario.name}: upstream ttft {up.ttft_ms:g} ms, itl {up.itl_ms:g} ms,"
            f" {up.max_tokens} tokens"
        )
        with start_stack(
            up,
            workdir,
            gateway=options.gateway,
            litellm=litellm,
            workers=options.workers,
            nginx=nginx,
            floor=floor,
            pin=pin,
            pacing=options.pacing,
        ) as stack:
            idle = {e.name: rss_bytes(e.pid) for e in stack.endpoints if e.pid is not None}
            for concurrency in options.concurrency:
                for endpoint in stack.endpoints:
                    if endpoint.name == "direct" and not options.direct:
                        continue
                    progress(f"  {endpoint.name:<8} c={concurrency:<4} {options.duration_s:g}s")
                    record = measure(
                        scenario,
                        stack,
                        endpoint,
                        concurrency,
                        options,
                        idle.get(endpoint.name),
                        pin,
                    )
                    report.runs.append(replace(record, workers=options.workers))


def _meta(options: Options) -> dict[str, object]:
    return {
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "duration_s": options.duration_s,
        "warmup_s": options.warmup_s,
        "concurrency": list(options.concurrency),
        "gateway_workers": options.workers,
        "workers_scaling": list(options.workers_scaling),
        "scenarios": {
            s.name: {
                "ttft_ms": s.upstream.ttft_ms,
                "itl_ms": s.upstream.itl_ms,
                "max_tokens": s.upstream.max_tokens,
            }
            for s in options.scenarios
        },
    }
