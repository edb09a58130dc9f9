"""``meridian serve --workers N``: N processes sharing the listening ports.

Each worker is a full gateway bound with SO_REUSEPORT, so the kernel spreads
connections across them and one slow worker never blocks another. The parent
only supervises: it forwards SIGTERM/SIGINT and waits, so shutdown drains
every worker; when one worker dies, it stops the others and exits non-zero
so the service manager restarts the whole set rather than leaving it short.

Metrics cover the node: the parent points ``PROMETHEUS_MULTIPROC_DIR`` at a
fresh directory before it spawns the workers, each worker writes its values
there (prometheus-client's multiprocess mode), and a scrape of any worker's
admin listener reads them all (gateway.observe.metrics). Each worker sets up logging
as the parent's CLI did, so its start, drain and access-log lines appear.
Workers must share the control-plane store (a SQLite file or Redis): an
in-memory store would give each worker its own weights and canaries, so that
is refused.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine
from typing import Any

from gateway.app.server import Gateway
from gateway.config.model import Config, load
from gateway.observe.metrics import MULTIPROC_ENV

Runner = Callable[[Coroutine[Any, Any, None]], None]

# The CLI's own format (gateway.cli.main), so a worker's lines read like the parent's.
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def serve(config: Config, path: str, *, workers: int, run: Runner) -> int:
    if workers < 1:
        raise SystemExit("meridian: --workers must be at least 1")
    if workers == 1:
        run(Gateway(config).serve_until_signalled())
        return 0
    if config.store.kind == "embedded" and config.store.path is None:
        raise SystemExit(
            "meridian: --workers needs a store the workers share: "
            "set store.path (an SQLite file) or use store kind redis"
        )
    metrics_dir = _metrics_dir()
    try:
        return _supervise(path, workers)
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def _metrics_dir() -> str | None:
    """The shared metrics directory: the operator's (emptied of a previous run's
    files) or a fresh one this process removes at the end (returned)."""
    given = os.environ.get(MULTIPROC_ENV)
    if given:
        os.makedirs(given, exist_ok=True)
        for name in os.listdir(given):
            if name.endswith(".db"):
                os.unlink(os.path.join(given, name))
        return None
    made = tempfile.mkdtemp(prefix="meridian-metrics-")
    os.environ[MULTIPROC_ENV] = made  # inherited by the spawned workers
    return made


def _supervise(path: str, workers: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    level = logging.getLogger().getEffectiveLevel()
    procs = [ctx.Process(target=_worker, args=(path, level), daemon=False) for _ in range(workers)]
    for proc in procs:
        proc.start()

    def forward(signum: int, _frame: object) -> None:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                os.kill(proc.pid, signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGHUP, forward)  # every worker re-reads the config (gateway.app.reload)
    running = list(procs)
    while running:
        for ended in multiprocessing.connection.wait([p.sentinel for p in running]):
            proc = next(p for p in running if p.sentinel == ended)
            proc.join()
            running.remove(proc)
            if proc.exitcode and running:
                print(
                    f"meridian: worker {proc.pid} exited with {proc.exitcode}; stopping the rest",
                    file=sys.stderr,
                )
                forward(signal.SIGTERM, None)
    return max(abs(p.exitcode or 0) for p in procs)  # killed by a signal: -N


def _worker(path: str, level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format=LOG_FORMAT)
    config = load(path)
    from gateway.app import reload

    reload.ADMIN_RELOAD = False  # a POST reaches one worker; SIGHUP via the parent, all
    try:
        import uvloop

        uvloop.run(Gateway(config, reuse_port=True, config_path=path).serve_until_signalled())
    except ImportError:  # pragma: no cover
        asyncio.run(Gateway(config, reuse_port=True, config_path=path).serve_until_signalled())
