"""Stopping background loops for certain."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable
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


class BackgroundTasks:
    """Fire-and-forget work that is still owned: each task is kept referenced
    until it ends (the event loop holds only weak references), counted, and
    either awaited or stopped when its owner shuts down."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Future[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def add(self, task: asyncio.Future[Any]) -> asyncio.Future[Any]:
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        return self.add(asyncio.ensure_future(coro))

    async def wait(self) -> None:
        """Let every task finish (work that must still happen, e.g. a give-back)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def stop(self) -> None:
        """Cancel every task and wait until each has ended (see :func:`stop_tasks`)."""
        await stop_tasks(list(self._tasks))
