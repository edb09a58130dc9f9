"""Closed-loop streaming load, run in a process of its own.

``concurrency`` workers share one aiohttp session whose pool holds exactly
that many connections; each worker sends a streaming chat request, reads it to
the end, and sends the next, until the window closes. Offered load therefore
follows the system's speed (closed loop), and the concurrency is the number of
open streams. The load generator lives in its own process (uvloop, nothing
else on its loop) so that its scheduling delays do not land in the numbers,
and so that its CPU use is visible apart from the measuring process.

Timeline of one run:

    start ── warm-up ──> t0 ──── measured window ────> t1 ── drain ──> result

- requests *started* in [t0, t1) give the latency samples (TTFT, E2E);
- chunks and completed requests *received* in [t0, t1) give the rates, so the
  rates cover a window in which all ``concurrency`` streams were open;
- errors are counted over the whole run, warm-up and drain included.

The child tells the parent when t0 and t1 pass (so that it can read the CPU
counters of the processes under test over the same window), then sends the
result.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from time import perf_counter

import aiohttp

from bench.stream import StreamMeter

_MAX_ERROR_SAMPLES = 5


@dataclass(frozen=True, slots=True)
class LoadJob:
    url: str
    headers: dict[str, str]
    body: bytes
    concurrency: int
    warmup_s: float
    duration_s: float
    drain_s: float = 15.0
    read_timeout_s: float = 30.0
    cpus: frozenset[int] | None = None  # pin the load generator to these cores


@dataclass(slots=True)
class LoadResult:
    window_s: float
    completed: int = 0  # requests whose [DONE] arrived within the window
    chunks: int = 0  # chunks that arrived within the window
    started: int = 0  # requests sent within the window that finished with [DONE]
    started_chunks: int = 0  # chunks of those requests
    ttft_ms: list[float] = field(default_factory=list)
    e2e_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    error_samples: list[str] = field(default_factory=list)
    client_cpu_s: float = 0.0  # the load generator's own CPU over the window


class _Run:
    """Shared counters of one run; touched only from the one event loop."""

    def __init__(self, job: LoadJob, t0: float) -> None:
        self.job = job
        self.t0 = t0
        self.t1 = t0 + job.duration_s
        self.result = LoadResult(window_s=job.duration_s)

    def error(self, kind: str, detail: str) -> None:
        errors = self.result.errors
        if kind not in errors and len(self.result.error_samples) < _MAX_ERROR_SAMPLES:
            self.result.error_samples.append(f"{kind}: {detail[:200]}")
        errors[kind] = errors.get(kind, 0) + 1

    async def request(self, session: aiohttp.ClientSession) -> None:
        job, t0, t1, result = self.job, self.t0, self.t1, self.result
        meter = StreamMeter()
        sent = perf_counter()
        try:
            async with session.post(job.url, data=job.body, headers=job.headers) as resp:
                if resp.status != 200:
                    body = await resp.read()
                    self.error(f"HTTP {resp.status}", body.decode(errors="replace"))
                    return
                async for data in resp.content.iter_any():
                    now = perf_counter()
                    added = meter.feed(data, now)
                    if t0 <= now < t1:
                        result.chunks += added
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.error(type(exc).__name__, str(exc))
            return
        done = meter.done_at
        if done is None:
            self.error("no [DONE]", "the stream ended without its terminator")
            return
        if meter.first_content_at is None:
            self.error("no content", "the stream carried no content token")
            return
        if t0 <= done < t1:
            result.completed += 1
        if t0 <= sent < t1:
            result.started += 1
            result.started_chunks += meter.chunks
            result.ttft_ms.append((meter.first_content_at - sent) * 1000.0)
            result.e2e_ms.append((done - sent) * 1000.0)

    async def worker(self, session: aiohttp.ClientSession) -> None:
        while perf_counter() < self.t1:
            await self.request(session)


def _own_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


async def run_load(job: LoadJob, notify: Callable[[str], None]) -> LoadResult:
    """Run ``job``; ``notify("start")`` and ``notify("end")`` mark the window."""
    n = job.concurrency
    connector = aiohttp.TCPConnector(limit=n, limit_per_host=n, ttl_dns_cache=None)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=5.0, sock_read=job.read_timeout_s)
    async with aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        auto_decompress=False,
        skip_auto_headers=("User-Agent",),
    ) as session:
        run = _Run(job, perf_counter() + job.warmup_s)
        cpu: dict[str, float] = {}

        def mark(which: str) -> None:
            if which not in cpu:
                cpu[which] = _own_cpu_s()
                notify(which)

        loop = asyncio.get_running_loop()
        loop.call_later(job.warmup_s, mark, "start")
        loop.call_later(job.warmup_s + job.duration_s, mark, "end")
        tasks = [asyncio.create_task(run.worker(session)) for _ in range(n)]
        done, pending = await asyncio.wait(
            tasks, timeout=job.warmup_s + job.duration_s + job.drain_s
        )
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
            run.error("drain timeout", f"{len(pending)} streams still open after the drain")
        for task in done:
            if (exc := task.exception()) is not None:
                raise exc
        mark("start")  # no-ops unless the window was shorter than a timer tick
        mark("end")
        run.result.client_cpu_s = cpu["end"] - cpu["start"]
        return run.result


def _child_main(job: LoadJob, conn: Connection) -> None:
    """Entry point of the load-generator process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    try:
        if job.cpus is not None:
            os.sched_setaffinity(0, job.cpus)  # before the loop starts any thread
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            result = runner.run(run_load(job, lambda which: conn.send(("mark", which))))
        conn.send(("result", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()


def run_in_process(
    job: LoadJob, on_mark: Callable[[str], None], on_tick: Callable[[], None]
) -> LoadResult:
    """Run ``job`` in a fresh process; calls ``on_mark`` at t0/t1 and ``on_tick`` ~5x/s."""
    ctx = multiprocessing.get_context("spawn")
    receiver, sender = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child_main, args=(job, sender), name="bench-loadgen", daemon=True)
    proc.start()
    sender.close()
    deadline = time.monotonic() + job.warmup_s + job.duration_s + job.drain_s + 60.0
    try:
        while time.monotonic() < deadline:
            on_tick()
            if not receiver.poll(0.2):
                continue
            try:
                kind, payload = receiver.recv()
            except EOFError:
                proc.join(5.0)
                raise RuntimeError(
                    f"load generator exited without a result (exit code {proc.exitcode})"
                ) from None
            if kind == "mark":
                on_mark(payload)
            elif kind == "result":
                result: LoadResult = payload
                return result
            else:
                raise RuntimeError(f"load generator failed:\n{payload}")
        raise RuntimeError("load generator did not finish before its deadline")
    finally:
        receiver.close()
        if proc.is_alive():
            proc.terminate()
        proc.join(5.0)
        if proc.is_alive():
            proc.kill()
            proc.join()
