"""Gateway memory per idle open stream (docs/design.md §8).

An idle stream is one the gateway has accepted and forwarded while the
upstream has not yet produced a token: the case of a slow model under a
burst, where memory per stream, not CPU, sets the limit. The probe starts an
emulator whose first token takes minutes, opens N streams through a fresh
gateway, waits until the gateway holds N upstream connections (read from
``/proc/net/tcp``: established sockets whose remote port is the emulator's),
and reads the gateway's RSS. Per stream = (RSS with N open - RSS before) / N;
it includes the client-side and upstream-side connection state, buffers and
request bookkeeping, and any allocator growth they cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
from pathlib import Path

import aiohttp
import orjson

from bench.procs import rss_bytes
from bench.results import IdleStreams
from bench.stack import Endpoint, Upstream, start_stack

_SILENT = Upstream(ttft_ms=600_000, itl_ms=0, max_tokens=1)
_OPEN_DEADLINE_S = 20.0  # for each batch
_BATCH = 200
_FDS_PER_STREAM = 2  # the gateway's: one to the client, one upstream
_ESTABLISHED = "01"


def established_to(port: int) -> int:
    """Established TCP connections (this network namespace) whose remote port is ``port``."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _ESTABLISHED and int(fields[2].rsplit(":", 1)[1], 16) == port:
                count += 1
    return count


async def _hold(endpoint: Endpoint, n: int, upstream_port: int, pid: int) -> tuple[int, int]:
    """Open ``n`` streams, wait until the gateway forwarded them all; (open, RSS).
    Stops at a batch that does not open within its deadline."""
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
                opened = established_to(upstream_port)
                # A stream refused or failed is done, and is not counted as open.
                while opened + sum(t.done() for t in tasks) < len(tasks):
                    if loop.time() > deadline:
                        return opened, rss_bytes(pid)  # the figure is then for fewer
                    await asyncio.sleep(0.05)  # polling a condition, bounded by the deadline
                    opened = established_to(upstream_port)
            return opened, rss_bytes(pid)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await asyncio.gather(*tasks, return_exceptions=True)


def _raise_fd_limit(n: int) -> None:
    """Room for ``n`` streams in this process and the children it starts (they
    inherit it): the gateway holds two sockets per stream, and 10,000 streams are
    past many systems' default of 1,024 or 20,000. Raising the hard limit needs
    root (CAP_SYS_RESOURCE); without it the soft limit goes as high as allowed."""
    want = _FDS_PER_STREAM * n + 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= want:
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))
    except (ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def probe_idle_streams(n: int, workdir: Path, workers: int = 1) -> IdleStreams:
    """Gateway RSS before and with ``n`` idle open streams, on a stack of its own."""
    _raise_fd_limit(n)
    with start_stack(_SILENT, workdir, gateway=True, litellm=False, workers=workers) as stack:
        gateway = stack.endpoint("gateway")
        assert gateway is not None and gateway.pid is not None
        before = rss_bytes(gateway.pid)
        opened, rss = asyncio.run(_hold(gateway, n, stack.emulator_port, gateway.pid))
        return IdleStreams(requested=n, open=opened, rss_before=before, rss_open=rss)
