"""Fault injection for one emulator instance, switchable per test or over HTTP.

A test (or a subprocess's controller, through ``POST /_emulator/faults``)
sets fields on the emulator's :class:`Faults`; each generation request takes a
:meth:`Faults.take` snapshot when it arrives, so changing or clearing faults
never alters a request already in flight. ``times`` bounds how many requests
see the faults before they clear themselves, which is how a test says "the
first attempt fails, the retry succeeds" without racing the gateway.

Fields (``None`` = off):

- ``status``: every request fails with this HTTP status and a vLLM error body.
- ``retry_after``: seconds sent as ``Retry-After`` (meant for 429/503).
- ``stall_after_tokens``: after N tokens stop sending, keep the connection
  open (0 = right after the response headers, before the first token).
- ``reset_after_tokens``: after N tokens abort the TCP connection (no
  ``[DONE]``, no final chunk).
- ``drip_interval_s``: slow drip, replaces the inter-token delay.
- ``ttft_s`` / ``itl_s``: override the emulator's configured timing.
- ``times``: apply to the next N requests only, then clear.
- ``rate``: the share (0–1] of requests that see the faults, spread evenly
  and deterministically (0.05 = the 20th, 40th, … request), so "5 % errors"
  gives the same sequence in every run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any


@dataclass
class Faults:
    status: int | None = None
    retry_after: float | None = None
    stall_after_tokens: int | None = None
    reset_after_tokens: int | None = None
    drip_interval_s: float | None = None
    ttft_s: float | None = None
    itl_s: float | None = None
    times: int | None = None
    rate: float | None = None

    def __post_init__(self) -> None:
        self._arrived = 0  # requests seen while ``rate`` applies

    @property
    def active(self) -> bool:
        """Whether any fault (not counting the ``times`` and ``rate`` bounds) is set."""
        return any(getattr(self, f.name) is not None for f in fields(self) if f.name not in _BOUNDS)

    def take(self) -> Faults | None:
        """The faults one arriving request must apply, or None when there are none.

        Counts the request against ``times`` and clears everything when the
        count is used up, so the next request is served normally.
        """
        if not self.active:
            return None
        if self.rate is not None:
            self._arrived += 1
            if math.floor(self._arrived * self.rate) == math.floor((self._arrived - 1) * self.rate):
                return None
        snapshot = dataclasses.replace(self)
        if self.times is not None:
            self.times -= 1
            if self.times <= 0:
                self.clear()
        return snapshot

    def update(self, data: Mapping[str, Any]) -> None:
        """Set the given fields (others unchanged); all-or-nothing on bad input.

        Raises ValueError for a non-object, an unknown key or a value of the
        wrong type or range, naming the offending key.
        """
        if not isinstance(data, Mapping):
            raise ValueError("faults must be a JSON object")
        checked = {key: _check(key, value) for key, value in data.items()}
        for key, value in checked.items():
            setattr(self, key, value)

    def clear(self) -> None:
        for f in fields(self):
            setattr(self, f.name, None)
        self._arrived = 0

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_INT_FIELDS = frozenset({"status", "stall_after_tokens", "reset_after_tokens", "times"})
_FLOAT_FIELDS = frozenset({"retry_after", "drip_interval_s", "ttft_s", "itl_s", "rate"})
_BOUNDS = frozenset({"times", "rate"})


def _check(key: str, value: Any) -> int | float | None:
    if key not in _INT_FIELDS and key not in _FLOAT_FIELDS:
        raise ValueError(f"unknown fault {key!r}")
    if value is None:
        return None
    # bool is an int subclass; `true` as a status or a delay is a caller bug.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"fault {key!r} must be a number or null")
    if key in _INT_FIELDS:
        if not isinstance(value, int):
            raise ValueError(f"fault {key!r} must be an integer")
        if key == "status" and not 400 <= value <= 599:
            raise ValueError("fault 'status' must be an HTTP error status (400-599)")
        if key == "times" and value < 1:
            raise ValueError("fault 'times' must be at least 1")
    if key == "rate" and not 0 < value <= 1:
        raise ValueError("fault 'rate' must be a share in (0, 1]")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"fault {key!r} must be a finite, non-negative number")
    return value if key in _INT_FIELDS else float(value)
