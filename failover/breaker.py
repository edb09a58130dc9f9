"""Circuit breaker per backend: resilience4j's state machine, clock injected.

State machine (resilience4j ``CircuitBreakerStateMachine``)::

    CLOSED ──(rate ≥ threshold, ≥ minimum_calls)──▶ OPEN
    OPEN ──(first allow() after opened_until)──▶ HALF_OPEN
    HALF_OPEN ──(probe verdict: rates < thresholds)──▶ CLOSED    (backoff reset)
    HALF_OPEN ──(probe verdict: a rate ≥ threshold)──▶ OPEN      (wait × open_backoff)
    HALF_OPEN ──(no verdict within max_half_open_s)──▶ OPEN      (wait × open_backoff)

Formulas, over the sliding window (the last ``window_size`` calls, or the
calls of the last ``window_s`` seconds in ``window_buckets`` time buckets)::

    failure_rate = failed / calls        slow_rate = slow / calls
    a call is slow when duration_s ≥ slow_call_s (failed or not)
    open when calls ≥ minimum_calls and (failure_rate ≥ failure_rate_threshold
                                         or slow_rate ≥ slow_call_rate_threshold)
    open period k (k = 0 after a close) = min(open_s × open_backoff**k, max_open_s)

Half-open admits at most ``half_open_probes`` probes (started and not released);
the verdict is the same rule over those probes' outcomes, taken as soon as it
can no longer change. Metrics reset on entering HALF_OPEN and on closing, as
in resilience4j. ``max_half_open_s`` is resilience4j's
``maxWaitDurationInHalfOpenState``: without it a hanging probe keeps the
breaker half-open for ever (resilience4j issue #903).

The caller decides what a failure is. Pass ``success=False`` for connect
errors, timeouts, 5xx and broken streams; a 4xx client error is the request's
fault, so pass ``success=True`` or call :meth:`CircuitBreaker.release`; a 429
counts or not per route policy (resilience4j's ``ignoreExceptions``) —
:func:`outcome_of` is that default mapping. For streams, ``duration_s`` should be
the time to first token, not the stream's length.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass

from regions.errors import FailureClass


@dataclass(frozen=True, slots=True)
class BreakerPolicy:
    window_size: int = 20
    window_s: float | None = None
    minimum_calls: int = 10
    failure_rate: float = 0.5
    slow_call_s: float = 10.0
    slow_call_rate: float = 0.8
    open_s: float = 10.0
    open_backoff: float = 2.0
    max_open_s: float = 120.0
    half_open_probes: int = 3
    max_half_open_s: float = 30.0
    window_buckets: int = 10  # time-based window only: its resolution is window_s / buckets

    def __post_init__(self) -> None:
        if self.window_size < 1 or self.minimum_calls < 1 or self.half_open_probes < 1:
            raise ValueError("window_size, minimum_calls and half_open_probes must be ≥ 1")
        if self.slow_call_s <= 0 or self.max_half_open_s <= 0:
            raise ValueError("slow_call_s and max_half_open_s must be > 0 (math.inf: never)")
        if self.window_s is not None and (self.window_s <= 0 or self.window_buckets < 1):
            raise ValueError("window_s must be > 0 and window_buckets ≥ 1")
        if not (0 < self.failure_rate <= 1 and 0 < self.slow_call_rate <= 1):
            raise ValueError("rate thresholds must be in (0, 1]")
        if self.open_s <= 0 or self.open_backoff < 1 or self.max_open_s < self.open_s:
            raise ValueError("need open_s > 0, open_backoff ≥ 1, max_open_s ≥ open_s")

    @property
    def effective_minimum(self) -> int:
        """resilience4j caps minimumNumberOfCalls at the size of a count window."""
        cap = self.window_size if self.window_s is None else self.minimum_calls
        return min(self.minimum_calls, cap)


class BreakerState(enum.Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def outcome_of(failure: FailureClass | None, *, overloaded_counts: bool = False) -> bool | None:
    """Default mapping of an attempt's end to :meth:`CircuitBreaker.record`'s ``success``.

    ``None`` means "do not record; call ``release``": a client error (4xx) says
    nothing about the backend, nor does a 429 unless the policy counts it.
    """
    if failure is FailureClass.CLIENT or (
        failure is FailureClass.OVERLOADED and not overloaded_counts
    ):
        return None
    return failure is None


class _Window:
    """(calls, failed, slow) over the last N calls or the last T seconds, O(1) a call.

    A ring of N one-call entries, or of ``window_buckets`` buckets of T / buckets
    seconds (resilience4j keeps one per second); totals by subtract-on-evict.
    """

    __slots__ = ("_epoch", "_i", "_ring", "_width", "calls", "failed", "slow")

    def __init__(self, policy: BreakerPolicy) -> None:
        n = policy.window_size if policy.window_s is None else policy.window_buckets
        self._width = None if policy.window_s is None else policy.window_s / n
        self._ring: list[tuple[int, int, int]] = [(0, 0, 0)] * n
        self._i = 0
        self._epoch: int | None = None
        self.calls = self.failed = self.slow = 0

    def add(self, failed: bool, slow: bool, now: float) -> None:
        if self._width is None:
            i, self._i = self._i, (self._i + 1) % len(self._ring)
            self._set(i, (1, failed, slow))
        else:
            i = self.expire(now)
            c, f, s = self._ring[i]
            self._set(i, (c + 1, f + failed, s + slow))

    def expire(self, now: float) -> int:
        """Time mode: drop the buckets older than the window; the current bucket."""
        if self._width is None:
            return self._i
        epoch, n = math.floor(now / self._width), len(self._ring)
        last = epoch if self._epoch is None else self._epoch
        for e in range(last + 1, min(epoch, last + n) + 1):
            self._set(e % n, (0, 0, 0))
        self._epoch = max(epoch, last)
        return self._epoch % n

    def _set(self, i: int, value: tuple[int, int, int]) -> None:
        c, f, s = self._ring[i]
        self._ring[i] = value
        self.calls += value[0] - c
        self.failed += value[1] - f
        self.slow += value[2] - s


class CircuitBreaker:
    """One backend's breaker. Not thread-safe; one event loop owns it.

    ``now`` is any monotonic clock in seconds; times that go backwards are
    treated as the latest time seen.
    """

    def __init__(
        self,
        policy: BreakerPolicy,
        now: float,
        *,
        on_transition: Callable[[BreakerState, BreakerState], None] | None = None,
    ) -> None:
        self.policy = policy
        self.on_transition = on_transition
        self.transitions = 0
        self.not_permitted = 0  # allow() refusals, resilience4j's numberOfNotPermittedCalls
        self.opened_until: float | None = None
        self._state = BreakerState.CLOSED
        self._now = now
        self._window = _Window(policy)
        self._open_period = policy.open_s
        self._half_open_since = 0.0
        self._probes = self._probe_failed = self._probe_slow = self._probe_done = 0

    @property
    def state(self) -> BreakerState:
        return self._state

    @property
    def probes_in_flight(self) -> int:
        return self._probes - self._probe_done if self._state is BreakerState.HALF_OPEN else 0

    @property
    def epoch(self) -> int:
        """Changes at every transition. Read it right after :meth:`allow` returns True
        and pass it to :meth:`record` / :meth:`release`: then a call admitted before
        the breaker opened, ending during a later HALF_OPEN, is never taken for a
        probe (without it, it may be — resilience4j has the same blind spot)."""
        return self.transitions

    def allow(self, now: float) -> bool:
        now = self._tick(now)
        if self._state is BreakerState.OPEN:
            assert self.opened_until is not None
            if now < self.opened_until:
                self.not_permitted += 1
                return False
            self._to(BreakerState.HALF_OPEN, now)
        if self._state is BreakerState.HALF_OPEN:
            if self._probes >= self.policy.half_open_probes:
                self.not_permitted += 1
                return False
            self._probes += 1
        return True

    def record(
        self, success: bool, duration_s: float, now: float, *, epoch: int | None = None
    ) -> None:
        """The outcome of a call :meth:`allow` permitted. Ignored while OPEN (a late
        outcome of a call admitted before the breaker opened) and, in HALF_OPEN, when
        no probe is in flight or ``epoch`` shows the call was not a probe."""
        now = self._tick(now)
        failed, slow = not success, duration_s >= self.policy.slow_call_s
        if self._state is BreakerState.CLOSED:
            w = self._window
            w.add(failed, slow, now)
            if w.calls >= self.policy.effective_minimum and self._over(w.failed, w.slow, w.calls):
                self._to(BreakerState.OPEN, now)
        elif self._is_probe(epoch):
            self._probe_done += 1
            self._probe_failed += failed
            self._probe_slow += slow
            n = self.policy.half_open_probes
            left = n - self._probe_done
            if self._over(self._probe_failed, self._probe_slow, n):
                self._to(BreakerState.OPEN, now)  # fails whatever the other probes do
            elif not self._over(self._probe_failed + left, self._probe_slow + left, n):
                self._to(BreakerState.CLOSED, now)  # passes whatever the other probes do

    def release(self, now: float, *, epoch: int | None = None) -> None:
        """A permitted call ended with nothing worth recording (client cancelled,
        4xx, a 429 not counted): frees its half-open probe slot."""
        now = self._tick(now)
        if self._is_probe(epoch):
            self._probes -= 1

    def reset(self, now: float) -> None:
        """Operator action: close with empty metrics and the backoff reset."""
        now = self._tick(now)
        if self._state is not BreakerState.CLOSED:
            self._to(BreakerState.CLOSED, now)
        self._window = _Window(self.policy)
        self._open_period = self.policy.open_s

    def poll(self, now: float) -> BreakerState:
        """Apply the half-open time cap without a call (for status displays)."""
        self._tick(now)
        return self._state

    def failure_rate(self, now: float | None = None) -> float | None:
        """Over the window; None below minimum_calls (so in HALF_OPEN, whose metrics
        start empty). Pass ``now`` to expire a time window first."""
        calls = self._calls(now)
        return None if calls is None else self._window.failed / calls

    def slow_rate(self, now: float | None = None) -> float | None:
        calls = self._calls(now)
        return None if calls is None else self._window.slow / calls

    def _calls(self, now: float | None) -> int | None:
        if now is not None:
            self._window.expire(self._tick(now))
        calls = self._window.calls
        return calls if calls >= self.policy.effective_minimum else None

    def _over(self, failed: int, slow: int, calls: int) -> bool:
        p = self.policy
        return failed / calls >= p.failure_rate or slow / calls >= p.slow_call_rate

    def _is_probe(self, epoch: int | None) -> bool:
        return self.probes_in_flight > 0 and (epoch is None or epoch == self.transitions)

    def _tick(self, now: float) -> float:
        now = max(now, self._now)
        self._now = now
        if (
            self._state is BreakerState.HALF_OPEN
            and now - self._half_open_since >= self.policy.max_half_open_s
        ):
            self._to(BreakerState.OPEN, now)
        return now

    def _to(self, new: BreakerState, now: float) -> None:
        old, p = self._state, self.policy
        if new is BreakerState.OPEN:
            if old is BreakerState.HALF_OPEN:
                self._open_period = min(self._open_period * p.open_backoff, p.max_open_s)
            self.opened_until = now + self._open_period
        else:
            self.opened_until = None
            if new is BreakerState.CLOSED:
                self._open_period = p.open_s
        if new is BreakerState.HALF_OPEN:
            self._half_open_since = now
        self._probes = self._probe_failed = self._probe_slow = self._probe_done = 0
        if new is not BreakerState.OPEN:  # an OPEN breaker keeps the window that tripped it
            self._window = _Window(p)
        self._state = new
        self.transitions += 1
        if self.on_transition is not None:
            self.on_transition(old, new)
