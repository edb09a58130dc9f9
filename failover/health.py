"""Live state of every backend, beside the request path (linkerd/Envoy style).

The request path only *asks* (``admit``, ``signal``, ``hedge_delay``) and
*reports* (``attempt_finished``); this registry decides. Per backend it keeps:

* a circuit breaker (``failover.breaker``) fed by attempt outcomes;
* outlier ejection (``failover.outlier``) on consecutive gateway/5xx errors,
  capped per model so a bad day never ejects a whole fleet;
* the active health-check verdict and the queue depth a health probe scraped;
* a throttle until a backend's ``Retry-After`` has passed (429s do not trip
  the breaker: being busy is not being broken);
* peak-EWMA estimates of time to first token and inter-token latency, the
  in-flight count, and a small window of TTFT samples for the p95 that sets
  the hedge delay.

It implements ``routing.signals.Signals`` and ``failover.attempt.OutcomeSink``.
The clock is injected.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from failover.attempt import Attempt
from failover.backoff import soonest_retry_after
from failover.breaker import BreakerPolicy, BreakerState, CircuitBreaker, outcome_of
from failover.outlier import EjectionPolicy, OutlierDetector
from regions.errors import FailureClass
from regions.inventory import BackendSpec
from routing.ewma import PeakEwma
from routing.signals import BackendSignal

_HEDGE_MIN_SAMPLES = 20
_RECHECK_S = 0.05


class HealthEvents(Protocol):
    """Where state changes are reported (metrics, logs, shared store)."""

    def attempt_finished(self, attempt: Attempt) -> None: ...

    def breaker_changed(self, backend: BackendSpec, state: BreakerState) -> None: ...

    def ejected(self, backend: BackendSpec, until: float) -> None: ...

    def count(self, event: str) -> None: ...


@dataclass(frozen=True, slots=True)
class HealthPolicy:
    breaker: BreakerPolicy = field(default_factory=BreakerPolicy)
    ejection: EjectionPolicy = field(default_factory=EjectionPolicy)
    ttft_decay_s: float = 10.0
    ttft_window: int = 128


@dataclass(slots=True)
class _State:
    spec: BackendSpec
    breaker: CircuitBreaker
    ttft: PeakEwma
    itl: PeakEwma
    samples: deque[float]
    in_flight: int = 0
    queue_depth: int = 0
    probe_healthy: bool = True
    throttled_until: float = 0.0
    held_until: float = 0.0  # a peer replica reported this backend down (shared health)
    held_why: str = ""
    p95: float | None = None
    since_p95: int = 0
    # Cached availability verdict: events that can change it reset recheck_at;
    # while unavailable, time alone can end it, so it is re-derived every 50 ms.
    verdict: str = ""
    recheck_at: float = 0.0


@dataclass
class BackendHealth:
    policy: HealthPolicy = field(default_factory=HealthPolicy)
    events: HealthEvents | None = None
    clock: Callable[[], float] = time.monotonic
    _states: dict[str, _State] = field(default_factory=dict)
    _outliers: OutlierDetector = field(init=False)

    def __post_init__(self) -> None:
        self._outliers = OutlierDetector(self.policy.ejection)

    def track(self, backends: Iterable[BackendSpec]) -> None:
        """Start tracking backends (keeping the state of those already known)."""
        now = self.clock()
        for spec in backends:
            if spec.name in self._states:
                self._states[spec.name].spec = spec
                continue
            self._states[spec.name] = _State(
                spec,
                CircuitBreaker(self.policy.breaker, now, on_transition=self._transition(spec)),
                PeakEwma(self.policy.ttft_decay_s),
                PeakEwma(self.policy.ttft_decay_s),
                deque(maxlen=self.policy.ttft_window),
            )
            self._outliers.register(spec.name, spec.model)

    def _transition(self, spec: BackendSpec) -> Callable[[BreakerState, BreakerState], None]:
        def changed(_old: BreakerState, new: BreakerState) -> None:
            if self.events is not None:
                self.events.breaker_changed(spec, new)

        return changed

    # -- routing.signals.Signals -------------------------------------------

    def signal(self, backend: str, now: float) -> BackendSignal:
        st = self._states.get(backend)
        if st is None:
            return BackendSignal()
        if now >= st.recheck_at:
            st.verdict = why = self._unavailable(st, now)
            st.recheck_at = now + _RECHECK_S if why else float("inf")
        else:
            why = st.verdict
        return BackendSignal(
            st.ttft.value,
            st.itl.value,
            st.in_flight,
            st.queue_depth,
            available=not why,
            why_unavailable=why,
        )

    def _unavailable(self, st: _State, now: float) -> str:
        breaker = st.breaker
        state = breaker.poll(now)
        if state is BreakerState.OPEN and (breaker.opened_until or 0.0) > now:
            return "breaker open"
        if (
            state is BreakerState.HALF_OPEN
            and breaker.probes_in_flight >= self.policy.breaker.half_open_probes
        ):
            return "breaker half-open, probes in flight"
        if self._outliers.is_ejected(st.spec.name, now):
            return "ejected"
        if st.held_until > now:
            return st.held_why
        if not st.probe_healthy:
            return "failing health checks"
        if st.throttled_until > now:
            return "throttled (Retry-After)"
        return ""

    # -- failover.attempt.OutcomeSink ---------------------------------------

    def admit(self, backend: BackendSpec, now: float) -> int | None:
        """None when the breaker or an ejection refuses; else the breaker's epoch,
        so a long stream admitted before an open/half-open cycle cannot take or
        free a half-open probe slot when it finally ends."""
        st = self._states.get(backend.name)
        if st is None:
            return 0
        st.recheck_at = 0.0
        if st.held_until > now:
            return None
        if self._outliers.is_ejected(backend.name, now) or not st.breaker.allow(now):
            return None
        st.in_flight += 1
        return st.breaker.epoch

    def attempt_finished(self, attempt: Attempt) -> None:
        if self.events is not None:
            self.events.attempt_finished(attempt)
        st = self._states.get(attempt.backend.name)
        if st is None:
            return
        now = attempt.ended if attempt.ended is not None else self.clock()
        st.in_flight = max(0, st.in_flight - 1)
        st.recheck_at = 0.0
        failure = attempt.failure.failure if attempt.failure else None
        if attempt.cancelled:
            st.breaker.release(now, epoch=attempt.permit)
            if attempt.first_token is None:
                # A hedge loser (or a client that gave up) waited this long
                # without a first token: a lower bound on TTFT, and peak-EWMA
                # takes peaks at once, so the next plans learn it is slow.
                st.ttft.observe(now - attempt.started, now)
            return
        if attempt.first_token is not None:
            ttft = attempt.first_token - attempt.started
            st.ttft.observe(ttft, now)
            self._sample(st, ttft)
            if attempt.tokens > 1 and attempt.ended is not None:
                itl = (attempt.ended - attempt.first_token) / (attempt.tokens - 1)
                st.itl.observe(itl, now)
        elif failure is FailureClass.TIMEOUT:
            # No first token in time is itself a latency sample: the estimate
            # must learn that this backend is slow, not only that it failed.
            st.ttft.observe(now - attempt.started, now)
        success = outcome_of(failure)
        duration = (attempt.first_token or now) - attempt.started
        if success is None:
            st.breaker.release(now, epoch=attempt.permit)
        else:
            st.breaker.record(success, duration, now, epoch=attempt.permit)
        if failure is FailureClass.OVERLOADED and attempt.failure is not None:
            hint = soonest_retry_after([attempt.failure.retry_after]) or 1.0
            st.throttled_until = max(st.throttled_until, now + hint)
        gateway_or_5xx = failure is not None and failure not in (
            FailureClass.CLIENT,
            FailureClass.OVERLOADED,
        )
        if self._outliers.record(st.spec.name, not gateway_or_5xx, now) and self.events:
            until = self._outliers.ejected_until(st.spec.name)
            self.events.ejected(st.spec, until or now)

    def _sample(self, st: _State, ttft: float) -> None:
        st.samples.append(ttft)
        st.since_p95 += 1
        if st.p95 is None or st.since_p95 >= 16:
            if len(st.samples) >= _HEDGE_MIN_SAMPLES:
                ordered = sorted(st.samples)
                st.p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            st.since_p95 = 0

    def hedge_delay(self, backend: BackendSpec) -> float | None:
        """The backend's p95 TTFT; until it has enough samples, the slowest p95
        among the same model's backends (a new backend is not yet trusted to
        be faster than its peers); None when nobody has one yet."""
        st = self._states.get(backend.name)
        if st is None:
            return None
        if st.p95 is not None:
            return st.p95
        peers = [o.p95 for o in self._states.values() if o.spec.model == backend.model and o.p95]
        return max(peers) if peers else None

    def count(self, event: str) -> None:
        if self.events is not None:
            self.events.count(event)

    def hold(self, backend: str, until: float, why: str) -> None:
        """Treat ``backend`` as unavailable until ``until`` (this clock): another
        replica's breaker opened or it ejected the backend (gateway.control.plane)."""
        st = self._states.get(backend)
        if st is not None and until > st.held_until:
            st.held_until, st.held_why = until, why
            st.recheck_at = 0.0

    # -- active health checks and load reports ------------------------------

    def probed(self, backend: str, healthy: bool, queue_depth: int | None, *, passed: bool) -> None:
        """One active check's result: ``healthy`` is the verdict after the
        thresholds, ``passed`` this check alone. A pass on a healthy backend
        also ends its outlier ejection, as Envoy does by default."""
        st = self._states.get(backend)
        if st is None:
            return
        st.probe_healthy = healthy
        st.recheck_at = 0.0
        if healthy and passed:
            self._outliers.uneject(backend, self.clock())
        if queue_depth is not None:
            st.queue_depth = queue_depth

    # -- status ---------------------------------------------------------------

    def status(self, now: float) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for name, st in self._states.items():
            ttft = st.ttft.value
            out[name] = {
                "breaker": st.breaker.poll(now).value,
                "available": not self._unavailable(st, now),
                "why": self._unavailable(st, now),
                "in_flight": st.in_flight,
                "queue_depth": st.queue_depth,
                "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
                "ttft_p95_ms": None if st.p95 is None else round(st.p95 * 1000, 1),
                "healthy": st.probe_healthy,
            }
        return out
