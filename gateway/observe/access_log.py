"""The access log: one structured line per request, written off the event loop.

The request path builds a small dict of facts it already holds and hands it to
:meth:`AccessLog.write`, which only samples it and puts it on a bounded queue
(``put_nowait``: never a wait). A daemon thread formats each record (JSON,
logfmt or text) and emits it, so neither formatting nor a slow log sink ever
delays a request. When the writer falls behind, lines are dropped and
counted (``meridian_access_log_dropped_total``), never buffered without bound.

A record never holds an API key nor its digest (the tenant's name, and the
key's configured name under ``key``), nor prompt or completion text.
"""

from __future__ import annotations

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
    ``stderr``, or a file path (appended, one line per request)."""

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
        self._queue: queue.Queue[Record] = queue.Queue(maxsize=config.queue)
        self._on_drop = on_drop
        self._rng = rng or random.Random()
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
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self.dropped += 1
            if self._on_drop is not None:
                self._on_drop()

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                thread = threading.Thread(target=self._run, name="meridian-access-log", daemon=True)
                thread.start()
                self._thread = thread

    def _run(self) -> None:
        sink = self._open()
        try:
            while True:
                record = self._queue.get()
                if record is _STOP:
                    return
                try:
                    line = self._format(record)
                except (TypeError, ValueError):  # a fact that does not serialise: say so
                    line = self._format({"request_id": record.get("request_id"), "bad": True})
                if sink is None:
                    log.info(line)
                else:
                    sink.write(line + "\n")
                    if self._queue.empty():
                        sink.flush()
        finally:
            if sink is not None and sink not in (sys.stdout, sys.stderr):
                sink.close()

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
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            return
        thread.join(timeout)
