"""``python -m bench.instructions``: the gateway's instructions per streamed request.

Wall-clock and even CPU-time figures move with whatever else the machine
runs; an instruction count does not. This runs ``meridian serve`` under
valgrind's callgrind with instrumentation off, in front of the emulator, sends
``--warmup`` streamed requests (pools, caches, first-call costs), switches
instrumentation on (``callgrind_control -i on``), sends ``--requests`` more,
asks for a dump and reads its total: instructions (Ir) per
request and per chunk, the gateway's whole process (interpreter, C
extensions, libc; the kernel is not counted).

The upstream's gap between tokens (``--itl-ms``, default 20 ms) is long
enough that each chunk is its own upstream read even at valgrind's ~50x
slowdown, so the count is that of the per-chunk path of the ``latency``
scenario; at a short gap reads would carry several chunks and the count
would depend on timing. Repeat runs agree within a few percent (timers and
the order streams are served in still vary); compare runs of 60 requests or more.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from bench.runner import request_body
from bench.stack import Upstream, start_stack

_READY_S = 300.0  # imports under valgrind
_DUMP_S = 60.0
_TOTALS = re.compile(rb"^(?:totals|summary):\s+(\d+)", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Count:
    requests: int
    chunks: int
    instructions: int

    @property
    def per_request(self) -> float:
        return self.instructions / max(self.requests, 1)

    @property
    def per_chunk(self) -> float:
        return self.instructions / max(self.chunks, 1)


async def _drive(url: str, headers: dict[str, str], body: bytes, n: int, concurrency: int) -> int:
    """Send ``n`` streamed requests, ``concurrency`` at a time; the data events received."""
    chunks = 0
    left = n

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal chunks, left
        while left > 0:
            left -= 1
            async with session.post(url, data=body, headers=headers) as resp:
                text = await resp.read()
                if resp.status != 200 or not text.endswith(b"data: [DONE]\n\n"):
                    raise RuntimeError(f"HTTP {resp.status}: {text[-300:]!r}")
                chunks += text.count(b"\n\ndata: ") + 1

    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return chunks


def _control(pid: int, *args: str) -> None:
    # callgrind_control exits 0 even when it finds no such process: read what it says.
    done = subprocess.run(
        ["callgrind_control", *args, str(pid)], capture_output=True, text=True, check=False
    )
    if "OK" not in done.stdout:
        raise RuntimeError(f"callgrind_control {' '.join(args)}: {done.stdout}{done.stderr}")


def measure(
    upstream: Upstream,
    requests: int,
    warmup: int,
    concurrency: int,
    keep: Path | None = None,
    access_log: bool = False,
) -> Count:
    with tempfile.TemporaryDirectory(prefix="meridian-instr-") as tmp:
        workdir = Path(tmp)
        out = workdir / "callgrind.out"
        wrap = (
            "valgrind",
            "--tool=callgrind",
            "--instr-atstart=no",
            f"--callgrind-out-file={out}",
            sys.executable,
        )
        with start_stack(
            upstream,
            workdir,
            gateway=True,
            litellm=False,
            gateway_wrap=wrap,
            gateway_ready_s=_READY_S,
            access_log=access_log,
            # Under valgrind the loop lags and pacing would merge reads: the count
            # would depend on timing, not on the per-chunk path it is meant to show.
            pacing=False,
        ) as stack:
            gateway = stack.endpoint("gateway")
            assert gateway is not None and gateway.pid is not None
            headers = {"Content-Type": "application/json", **gateway.headers}
            body = request_body(gateway.model, upstream.max_tokens)
            asyncio.run(_drive(gateway.url, headers, body, warmup, concurrency))
            _control(gateway.pid, "-i", "on")
            chunks = asyncio.run(_drive(gateway.url, headers, body, requests, concurrency))
            _control(gateway.pid, "-d")  # before "-i off", which spoils the counts
            total, dump = _dumped(workdir)
            if keep is not None:
                shutil.copyfile(dump, keep)
        return Count(requests, chunks, total)


def _dumped(workdir: Path) -> tuple[int, Path]:
    """The instructions in the dump ``callgrind_control -d`` asked for (written
    asynchronously, at the process's next trip through valgrind's scheduler)."""
    deadline = time.monotonic() + _DUMP_S
    while time.monotonic() < deadline:
        for dump in workdir.glob("callgrind.out.*"):
            found = _TOTALS.search(dump.read_bytes())
            if found:
                return int(found.group(1)), dump
        time.sleep(0.2)  # polling a file's appearance, bounded by the deadline
    raise RuntimeError(f"no callgrind dump in {workdir} within {_DUMP_S:g} s")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.instructions", description=__doc__.splitlines()[0]
    )
    p.add_argument("--requests", type=int, default=100, help="counted requests")
    p.add_argument("--warmup", type=int, default=20, help="uncounted requests before")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--tokens", type=int, default=64)
    p.add_argument("--itl-ms", type=float, default=20.0)
    p.add_argument(
        "--access-log",
        action="store_true",
        help="with the default access log on (the bench runs without one, as nginx does)",
    )
    p.add_argument("--out", type=Path, help="keep the callgrind dump here (callgrind_annotate)")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind (callgrind) is not installed: apt-get install valgrind")
        return 3
    upstream = Upstream(ttft_ms=5.0, itl_ms=args.itl_ms, max_tokens=args.tokens)
    count = measure(
        upstream, args.requests, args.warmup, args.concurrency, args.out, args.access_log
    )
    print(
        f"{count.requests} requests, {count.chunks} chunks at concurrency {args.concurrency}"
        f" (upstream gap {args.itl_ms:g} ms): {count.instructions:,} instructions ="
        f" {count.per_request / 1e6:.3f} M/request, {count.per_chunk / 1e3:.1f} k/chunk"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
