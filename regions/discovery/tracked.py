"""An adapter wrapper that knows its streams in flight, so it can be retired safely.

When discovery removes a backend (or replaces it: same name, new address),
the routing snapshot stops offering it at once, but streams already running
on it must finish. :class:`TrackedProvider` counts those streams; ``retire``
refuses new ones (a request planned on the previous snapshot fails over with
a CONNECT error before its first token, as for any unreachable backend),
waits until the count reaches zero (or a deadline, the longest a stream may
live), then closes the adapter and runs ``on_closed`` (which releases the
connection pool of its host).

A stream is counted either by :meth:`~TrackedProvider.stream` (a generator
around the adapter's) or, on the data plane, by :meth:`~TrackedProvider.lease`:
the adapter's own stream and a release its holder calls once it has closed it
(the failover executor closes every stream it opens), so events do not pass
through one more generator.

States::

    serving ──retire()──▶ retiring ──last stream ends / deadline──▶ closed
       └──────────────────────close()─────────────────────────────────┘
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from regions.errors import BackendError, FailureClass
from regions.events import Event
from regions.provider import Probe, Provider
from regions.request import GenerationRequest, Kind


class TrackedProvider:
    """Implements ``regions.provider.Provider`` around another adapter."""

    def __init__(
        self,
        name: str,
        inner: Provider,
        on_closed: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.name = name
        self.inner = inner
        self.in_flight = 0
        self._on_closed = on_closed
        self._retired = False
        self._closed = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def retired(self) -> bool:
        return self._retired

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def probeable(self) -> bool:
        return getattr(self.inner, "probe", None) is not None

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        return self._stream(request)

    def lease(self, request: GenerationRequest) -> tuple[AsyncIterator[Event], Callable[[], None]]:
        """The inner adapter's own stream, counted in flight until the returned
        release is called, once, after the stream is closed. The failover
        executor opens its attempts so, as it closes every stream it opens: one
        generator fewer between the adapter and the client for every event."""
        if self._retired:
            raise BackendError(
                FailureClass.CONNECT, f"backend {self.name} was removed by discovery"
            )
        events = self.inner.stream(request)  # raised: nothing taken
        self.in_flight += 1
        self._idle.clear()
        return events, self._release

    def _release(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._idle.set()

    async def _stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        events, release = self.lease(request)
        try:
            async for event in events:
                yield event
        finally:
            try:
                # ``async for`` does not close the inner generator on an early exit
                # (client gone, hedge lost): close it here so the upstream request
                # is aborted now, not whenever the garbage collector gets to it.
                aclose = getattr(events, "aclose", None)
                if aclose is not None:
                    await aclose()
            finally:  # even when aclose() raised: else retire waits it out
                release()

    def passthrough(self, kind: Kind) -> bool:
        return self.inner.passthrough(kind)

    async def probe(self) -> Probe:
        return await self.inner.probe()

    async def retire(self, deadline_s: float) -> int:
        """Stop taking streams, wait for those in flight (at most ``deadline_s``),
        then close. Returns how many streams were still running at the deadline."""
        self._retired = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(deadline_s):
                await self._idle.wait()
        left = self.in_flight
        await self.close()
        return left

    async def close(self) -> None:
        self._retired = True
        if self._closed:
            return
        self._closed = True
        try:
            await self.inner.close()
        finally:
            if self._on_closed is not None:
                await self._on_closed()
