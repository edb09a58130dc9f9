"""Stopping background loops for certain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger("meridian.tasks")


async def stop_tasks(tasks: Iterable[asyncio.Future[Any]], *, patience_s: float = 1.0) -> None:
    """Cancel ``tasks`` and wait until every one has ended.

    One cancel is not always enough: on Python 3.11 a cancel that lands just
    as an ``asyncio.timeout`` or ``wait_for`` inside the task expires comes
    out as a TimeoutError, which a loop built to survive timeouts swallows.
    So each task still running after ``patience_s`` is cancelled again, where
    a plain ``await task`` would wait forever. A task's own error is logged:
    the caller is shutting down and has nobody to hand it to.
    """
    tasks = list(tasks)
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=patience_s)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())
