"""Gateway memory per idle open stream (docs/design.md §8).

An idle stream is one the gateway has accepted and forwarded while the
upstream has not yet produced a token: the case of a slow model under a
burst, where memory per stream, not CPU, sets the limit. The probe starts an
emulator whose first token takes minutes, opens N streams through a fresh
gateway, waits until the emulator holds N more open files than before (its
accepted connections: the gateway's N upstream connections), and reads the
gateway's RSS. Per stream = (RSS with N open - RSS before) / N;
it includes the client-side and upstream-side connection state, buffers and
request bookkeeping, and any allocator growth they cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
from pathlib import Path

import aiohttp
import orjson

from bench.procs import rss_bytes
from bench.results import FD_HEADROOM, FDS_PER_STREAM, IdleStreams
from bench.stack import Endpoint, Upstream, start_stack

_SILENT = Upstream(ttft_ms=600_000, itl_ms=0, max_tokens=1)
_OPEN_DEADLINE_S = 20.0  # for each batch
_BATCH = 200


def open_files(pid: int) -> int:
    """Open file descriptors of process ``pid``.

    One directory read, where ``/proc/net/tcp`` (which the probe read before) makes the
    kernel format every socket on the machine: about 190 ms a read with 10,000 streams
    held, 47 s of a 79 s probe.
    """
    return len(os.listdir(f"/proc/{pid}/fd"))


async def _hold(endpoint: Endpoint, n: int, upstream_pid: int, pid: int) -> tuple[int, int]:
    """Open ``n`` streams, wait until the gateway forwarded them all (the upstream,
    ``upstream_pid``, accepted them); (open, RSS of ``pid``). Stops at a batch that
    does not open within its deadline."""
    body = orjson.dumps(
        {
            "model": endpoint.model,
            "messages": [{"role": "user", "content": "hello"}],
            "stream": True,
            "max_tokens": 1,
        }
    )
    headers = {"Content-Type": "application/json", **endpoint.headers}
    connector = aiohttp.TCPConnector(limit=n)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def stream() -> None:
            async with session.post(endpoint.url, data=body, headers=headers) as resp:
                await resp.read()

        tasks: list[asyncio.Task[None]] = []
        baseline = open_files(upstream_pid)
        try:
            loop = asyncio.get_running_loop()
            opened = 0
            # In batches: thousands of connects at once overflow the emulator's
            # accept backlog, and the dropped SYNs' retries outlast the gateway's
            # connect timeout (a 503, not an idle stream).
            while len(tasks) < n:
                batch = [asyncio.create_task(stream()) for _ in range(min(_BATCH, n - len(tasks)))]
                tasks += batch
                deadline = loop.time() + _OPEN_DEADLINE_S
                opened = open_files(upstream_pid) - baseline
                # A stream refused or failed is done, and is not counted as open.
                while opened + sum(t.done() for t in tasks) < len(tasks):
                    if loop.time() > deadline:
                        return opened, rss_bytes(pid)  # the figure is then for fewer
                    await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
                    opened = open_files(upstream_pid) - baseline
            return opened, rss_bytes(pid)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)


def _raise_fd_limit(n: int) -> int:
    """Room for ``n`` streams in this process and the children it starts (they
    inherit it): the gateway holds two sockets per stream, and 10,000 streams are
    past many systems' default of 1,024 or 20,000. Raising the hard limit needs
    root (CAP_SYS_RESOURCE); without it the soft limit goes as high as allowed.
    Returns the soft limit the children get."""
    want = FDS_PER_STREAM * n + FD_HEADROOM
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def probe_idle_streams(n: int, workdir: Path, workers: int = 1) -> IdleStreams:
    """Gateway RSS before and with ``n`` idle open streams, on a stack of its own."""
    fd_limit = _raise_fd_limit(n)
    with start_stack(_SILENT, workdir, gateway=True, litellm=False, workers=workers) as stack:
        gateway = stack.endpoint("gateway")
        assert gateway is not None and gateway.pid is not None
        before = rss_bytes(gateway.pid)
        opened, rss = asyncio.run(_hold(gateway, n, stack.emulator_pid, gateway.pid))
        return IdleStreams(
            requested=n, open=opened, rss_before=before, rss_open=rss, fd_limit=fd_limit
        )
