"""The access log: one structured line per request, written off the event loop.

The request path builds a small dict of facts it already holds and hands it to
:meth:`AccessLog.write`, which only appends it to the loop's batch: never a
wait, never formatting. The batch goes to a daemon thread in one hand-off per
:data:`BATCH_S` (or sooner when it grows to a quarter of the bound), and the
thread formats it (JSON, logfmt or text) and emits it in one write, so neither
formatting nor a slow log sink ever delays a request, and the thread takes the
GIL from the loop once per batch rather than once per line. When the writer
falls behind, lines are dropped and counted
(``meridian_access_log_dropped_total``), never buffered without bound.

A record never holds an API key nor its digest (the tenant's name, and the
key's configured name under ``key``), nor prompt or completion text.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import random
import re
import sys
import threading
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from typing import IO

import orjson

from gateway.config.observability import AccessLogConfig

log = logging.getLogger("meridian.access")

Record = dict[str, object]

# A client's x-request-id is kept when it is this short and plain: it is echoed in
# headers, sent to backends and written in logs, so nothing that could split a line.
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:@/+=-]{1,128}$")

_STOP: Record = {}

# How long the loop gathers records before the writer gets them: one wake of the
# thread (and one write) per this many seconds of requests, instead of one per line.
BATCH_S = 0.05
# A batch goes sooner when it reaches this share of the bound, so gathering never
# drops a line that a writer keeping up would have taken.
_EARLY = 4
_BATCH_MAX = 1024

# The configured name of the API key the current request presented ("" for none or
# an unnamed key). The pipeline sets it when it authenticates; aiohttp and grpc.aio
# run each request in its own task, so it never carries over to the next request.
KEY_NAME: ContextVar[str] = ContextVar("meridian_key_name", default="")


def valid_request_id(value: str | None) -> bool:
    return value is not None and _REQUEST_ID.fullmatch(value) is not None


def _logfmt_value(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    if text and not any(c in text for c in ' ="\\\n\r\t'):
        return text
    return orjson.dumps(text).decode()


def format_json(record: Mapping[str, object]) -> str:
    return orjson.dumps(record).decode()


def format_logfmt(record: Mapping[str, object]) -> str:
    return " ".join(f"{key}={_logfmt_value(value)}" for key, value in record.items())


def format_text(record: Mapping[str, object]) -> str:
    """Apache-like: the essentials first, the rest as logfmt."""
    head = (
        f"{record.get('client') or '-'} {record.get('tenant') or '-'} "
        f'"{record.get("model") or "-"}" {record.get("status")} '
        f"{record.get('duration_ms')}ms"
    )
    rest = {k: v for k, v in record.items() if k not in {"client", "tenant", "model", "status"}}
    return f"{head} {format_logfmt(rest)}"


FORMATS: dict[str, Callable[[Mapping[str, object]], str]] = {
    "json": format_json,
    "logfmt": format_logfmt,
    "text": format_text,
}


class AccessLog:
    """Where lines go is ``config.destination``: ``log`` (the ``meridian.access``
    logger at INFO, so the process's logging setup decides), ``stdout``,
    ``stderr``, or a file path (appended, one line per request).

    The batch belongs to the event loop that writes; a record written where no
    loop runs (another thread, shutdown) goes to the writer on its own."""

    def __init__(
        self,
        config: AccessLogConfig,
        *,
        on_drop: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.destination = config.destination
        self._format = FORMATS[config.format]
        self._bound = config.queue
        self._early = max(1, min(_BATCH_MAX, config.queue // _EARLY))
        self._on_drop = on_drop
        self._rng = rng or random.Random()
        self._batch: list[Record] = []  # the loop's, not yet handed over
        self._timer: asyncio.TimerHandle | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # the batch's, while it has one
        # Batches for the writer: SimpleQueue's put and get are C, with no Python
        # Condition to notify per line.
        self._batches: queue.SimpleQueue[list[Record]] = queue.SimpleQueue()
        # Records handed over and taken by the writer; their difference is what
        # waits. Each is written by one side only (handed under the lock).
        self._handed = 0
        self._taken = 0
        self.wakes = 0  # times the writer took what was waiting: one per batch or fewer
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def wants(self, tenant: str, status: int) -> bool:
        """Whether a request of ``tenant`` that ended with ``status`` is logged."""
        config = self.config
        if not config.enabled or tenant in config.tenants_off:
            return False
        return status >= 400 or config.sample >= 1.0 or self._rng.random() < config.sample

    def write(self, record: Record) -> None:
        """On the request path: never blocks, never formats."""
        if self._thread is None:
            self._start()
        batch = self._batch
        if len(batch) + self._handed - self._taken >= self._bound:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._hand([record])
            return
        if self._timer is None:
            self._loop = loop
            self._timer = loop.call_later(BATCH_S, self._flush)
        elif loop is not self._loop:  # another loop's batch: not ours to touch
            self._hand([record])
            return
        batch.append(record)
        if len(batch) >= self._early:
            self._flush()

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._loop = None
        batch, self._batch = self._batch, []
        if batch:
            self._hand(batch)

    def _hand(self, batch: list[Record]) -> None:
        with self._lock:
            self._handed += len(batch)
            self._batches.put(batch)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="meridian-access-log", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        sink = self._open()
        batches = self._batches
        try:
            while True:
                taken = [batches.get()]
                while not batches.empty():
                    taken.append(batches.get_nowait())
                self.wakes += 1
                self._taken += sum(len(batch) for batch in taken)
                lines: list[str] = []
                stop = False
                for batch in taken:
                    for record in batch:
                        if record is _STOP:
                            stop = True
                            break
                        lines.append(self._line(record))
                    if stop:
                        break
                if lines:
                    if sink is None:
                        self._log(lines)
                    else:
                        lines.append("")
                        sink.write("\n".join(lines))
                        sink.flush()
                if stop:
                    return
        finally:
            if sink is not None and sink not in (sys.stdout, sys.stderr):
                sink.close()

    @staticmethod
    def _log(lines: list[str]) -> None:
        """One logging record per line (users' handlers expect it), made as
        ``log.info`` would but without its search of the stack for the caller,
        a third of its cost: the caller is always this thread's loop."""
        if not log.isEnabledFor(logging.INFO):
            return
        for line in lines:
            log.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, line, (), None, "_run"))

    def _line(self, record: Record) -> str:
        try:
            return self._format(record)
        except (TypeError, ValueError):  # a fact that does not serialise: say so
            return self._format({"request_id": record.get("request_id"), "bad": True})

    def _open(self) -> IO[str] | None:
        if self.destination == "log":
            return None
        if self.destination == "stdout":
            return sys.stdout
        if self.destination == "stderr":
            return sys.stderr
        return open(self.destination, "a", encoding="utf-8")

    def close(self, timeout: float = 2.0) -> None:
        """Write what is queued (within ``timeout``), then stop the writer."""
        thread = self._thread
        if thread is None:
            return
        self._flush()
        self._hand([_STOP])
        thread.join(timeout)
