"""The admission protocol: the executor's one question before a request's first attempt."""

from __future__ import annotations

from typing import Protocol

from regions.events import Usage


class Admission(Protocol):
    """One request's admission: asked before its first attempt, told when it ends.

    ``admit`` is not a coroutine on purpose: admission decides from local state,
    so nothing on the request path waits on it (docs/design.md §3 step 1)."""

    def admit(self) -> None:
        """Raise :class:`~failover.failure.ExecutionFailed` (a 429 with
        ``retry_after``) to refuse."""
        ...

    def release(self, usage: Usage | None) -> None:
        """The admitted request ended (called once): give back what it held;
        ``usage`` is what it cost across all attempts."""
        ...
