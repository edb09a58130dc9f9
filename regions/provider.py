"""The interface every backend adapter implements.

An adapter owns its connection pool and knows one provider's wire format. It
does not retry, time out the first token, or pick backends: the failover
engine does those things around it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from regions.events import Event
from regions.request import GenerationRequest, Kind


@dataclass(frozen=True, slots=True)
class Probe:
    """An active health check's result; ``queue_depth`` when the backend reports load."""

    healthy: bool
    queue_depth: int | None = None


class Provider(Protocol):
    """A client of one backend.

    ``stream`` yields the backend's events for ``request`` and raises
    :class:`regions.errors.BackendError` on any failure, before or after the
    first token. Closing the iterator early (``aclose``, cancellation) must
    abort the upstream request and release its connection.
    """

    def stream(self, request: GenerationRequest) -> AsyncIterator[Event]: ...

    def passthrough(self, kind: Kind) -> bool:
        """True when events carry ``raw`` bytes in OpenAI's SSE format for ``kind``."""
        ...

    async def close(self) -> None: ...

    async def probe(self) -> Probe:
        """Health (and load, where the backend reports it). Adapters that cannot be
        probed cheaply may set ``probe = None`` as a class attribute instead."""
        ...
