"""Peak-EWMA latency estimate (Finagle ``PeakEwma``, tower ``load::PeakEwma``).

On a sample ``r`` taken ``Δt`` after the previous update, with decay time τ::

    w = exp(-Δt / τ)
    cost = r                      if r > cost    (peaks are taken at once)
    cost = cost·w + r·(1 - w)     otherwise

so a backend that slows down is avoided immediately, while one that recovers
regains traffic over ~τ. Reading does not decay the estimate toward zero here
(tower does): LLM backends idle for long periods, and forgetting that one was
slow just because nobody asked it is how a slow region gets re-flooded. The
router instead gives idle backends a probe share (see ``routing.score``).

Time is passed in; nothing reads a clock.
"""

from __future__ import annotations

import math


class PeakEwma:
    __slots__ = ("_cost", "_stamp", "decay_s", "samples")

    def __init__(self, decay_s: float = 10.0) -> None:
        self.decay_s = decay_s
        self._cost = 0.0
        self._stamp = 0.0
        self.samples = 0

    def observe(self, sample: float, now: float) -> None:
        if self.samples == 0 or sample > self._cost:
            self._cost = sample
        else:
            w = math.exp(-max(0.0, now - self._stamp) / self.decay_s)
            self._cost = self._cost * w + sample * (1.0 - w)
        self._stamp = now
        self.samples += 1

    @property
    def value(self) -> float | None:
        """The estimate in seconds, or None before the first sample (a cold backend)."""
        return self._cost if self.samples else None
