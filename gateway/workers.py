"""``meridian serve --workers N``: N processes sharing the listening ports.

Each worker is a full gateway bound with SO_REUSEPORT, so the kernel spreads
connections across them and one slow worker never blocks another. The parent
only supervises: it forwards SIGTERM/SIGINT and waits, so shutdown drains
every worker. Each worker keeps its own metrics; scrape them through the
admin listener, which the kernel also balances (documented limitation).
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.app import Gateway
from gateway.config import Config, load

Runner = Callable[[Coroutine[Any, Any, None]], None]


def serve(config: Config, path: str, *, workers: int, run: Runner) -> int:
    if workers < 1:
        raise SystemExit("meridian: --workers must be at least 1")
    if workers == 1:
        run(Gateway(config).serve_until_signalled())
        return 0
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(path,), daemon=False) for _ in range(workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for proc in procs:
        proc.join()
    return max((p.exitcode or 0) for p in procs)


def _worker(path: str) -> None:
    config = load(path)
    try:
        import uvloop

        uvloop.run(Gateway(config, reuse_port=True).serve_until_signalled())
    except ImportError:  # pragma: no cover
        asyncio.run(Gateway(config, reuse_port=True).serve_until_signalled())
