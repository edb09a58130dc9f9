"""Readiness and graceful shutdown.

States: starting → ready → draining → stopped. On SIGTERM the gateway goes to
draining: ``/readyz`` answers 503 and new requests are refused with 503, while
streams in flight may finish for up to the grace period. Requests still
running then are cut: their handler task is cancelled with ``cutting`` set, and
the handler answers instead of just closing the connection: a stream that has
started ends with an error event, a request whose response has not (still
waiting for its first token, or a non-stream answer being generated) gets 503
``shutting_down``, and a gRPC call ends UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator


class Lifecycle:
    def __init__(self) -> None:
        self.ready = False
        self.draining = False
        self.cutting = False
        self._streams: set[asyncio.Task[object]] = set()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def in_flight(self) -> int:
        return len(self._streams)

    @contextlib.contextmanager
    def tracking(self) -> Iterator[asyncio.Task[object]]:
        task: asyncio.Task[object] | None = asyncio.current_task()
        assert task is not None
        self._streams.add(task)
        self._idle.clear()
        try:
            yield task
        finally:
            self._streams.discard(task)
            if not self._streams:
                self._idle.set()

    async def drain(self, grace: float) -> int:
        """Refuse new work, let streams finish for ``grace`` s; return how many were cut."""
        self.draining = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace):
                await self._idle.wait()
        remaining = list(self._streams)
        if not remaining:
            return 0
        self.cutting = True
        for task in remaining:
            task.cancel()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5.0):
                await self._idle.wait()
        return len(remaining)
