"""Outlier ejection across a model's backends: Envoy's consecutive-errors detector.

The request path reports each attempt's outcome (:meth:`OutlierDetector.record`,
Envoy's ``putResult``); the detector decides; routing asks
:meth:`OutlierDetector.is_ejected`. Source: Envoy
``source/extensions/outlier_detection`` / ``config.cluster.v3.OutlierDetection``.

Per backend::

    IN SERVICE ──(consecutive_errors failures in a row, share cap allows)──▶ EJECTED
    EJECTED ──(now ≥ ejected_until, noticed lazily on any query)──▶ IN SERVICE
    EJECTED ──(uneject(): a passing active health check)──▶ IN SERVICE

Formulas (Envoy's ``base_ejection_time``, ``max_ejection_time``,
``max_ejection_percent``)::

    n ← max(0, n − ⌊healthy time since return / base⌋) + 1     at each ejection
    ejection time = min(base_ejection_s × n, max_ejection_s)
    eject only if ejected_in_group < max(1, ⌊max_ejection_share × group size⌋)

The decay of ``n`` is Envoy's: each ``base_ejection_time`` a host stays in
service after returning takes one off its back-off multiplier (Envoy does it in
its interval sweep; here it is computed at the next ejection, so there is no
sweep). ``n`` stops growing once ``base × n`` reaches the cap, as in Envoy.

Share cap: like Envoy, at least one backend of a group can always be ejected,
whatever the share — but only in a group of two or more. Ejecting a model's
only backend would move its traffic nowhere; the breaker guards that backend.
A backend held back by the cap keeps its error streak, so it is ejected on its
next failure once another returns (Envoy resets the streak and counts an
``ejections_overflow``; :attr:`OutlierDetector.overflows` counts those here).

The caller's ``success`` flag decides what counts: ``False`` for 5xx and
gateway failures (connect, timeout, broken stream), ``True`` for any answer
from the backend including a 4xx; a 429 is best not recorded (it is not a
5xx in Envoy). Records for unknown backends and records while a backend is
ejected (late outcomes of attempts started before) are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class EjectionPolicy:
    consecutive_errors: int = 5
    base_ejection_s: float = 30.0
    max_ejection_s: float = 300.0
    max_ejection_share: float = 0.5

    def __post_init__(self) -> None:
        if self.consecutive_errors < 1:
            raise ValueError("consecutive_errors must be ≥ 1")
        if not 0 < self.base_ejection_s <= self.max_ejection_s:
            raise ValueError("need 0 < base_ejection_s ≤ max_ejection_s")
        if not 0 <= self.max_ejection_share <= 1:
            raise ValueError("max_ejection_share must be in [0, 1]")

    def cap(self, group_size: int) -> int:
        """How many of a group's backends may be ejected at once."""
        if group_size < 2:
            return 0
        # the epsilon keeps 0.3 × 10 at 3 despite binary floating point
        return max(1, math.floor(self.max_ejection_share * group_size + 1e-9))


@dataclass(slots=True)
class _Host:
    group: str
    streak: int = 0
    n: int = 0  # Envoy's ejectTimeBackoff
    ejected_until: float | None = None
    returned_at: float | None = None


class OutlierDetector:
    """Consecutive-error ejection for many backends, grouped by model."""

    def __init__(self, policy: EjectionPolicy) -> None:
        self.policy = policy
        self.ejections = 0
        self.overflows = 0
        self._hosts: dict[str, _Host] = {}
        self._groups: dict[str, set[str]] = {}
        self._ejected: dict[str, set[str]] = {}  # group → backends possibly still ejected

    def register(self, backend: str, group: str) -> None:
        """Add a backend to a group (model name); re-registering moves it, keeping its state."""
        host = self._hosts.get(backend)
        if host is not None and host.group != group:
            self.unregister(backend)
            host.group = group
        elif host is None:
            host = _Host(group)
        self._hosts[backend] = host
        self._groups.setdefault(group, set()).add(backend)
        if host.ejected_until is not None:
            self._ejected.setdefault(group, set()).add(backend)

    def unregister(self, backend: str) -> None:
        host = self._hosts.pop(backend, None)
        if host is None:
            return
        self._groups.get(host.group, set()).discard(backend)
        self._ejected.get(host.group, set()).discard(backend)

    def record(self, backend: str, success: bool, now: float) -> bool:
        """One attempt's outcome; True when this record ejected the backend."""
        host = self._hosts.get(backend)
        if host is None or self._still_ejected(backend, host, now):
            return False
        if success:
            host.streak = 0
            return False
        host.streak += 1
        if host.streak < self.policy.consecutive_errors:
            return False
        ejected = self._ejected_in(host.group, now)
        if len(ejected) >= self.policy.cap(len(self._groups[host.group])):
            self.overflows += 1
            return False
        self._eject(backend, host, now)
        return True

    def is_ejected(self, backend: str, now: float) -> bool:
        host = self._hosts.get(backend)
        return host is not None and self._still_ejected(backend, host, now)

    def ejected_until(self, backend: str) -> float | None:
        """When the current ejection ends (None when not ejected as of the last query)."""
        host = self._hosts.get(backend)
        return None if host is None else host.ejected_until

    def ejected(self, group: str, now: float) -> frozenset[str]:
        """The group's backends ejected at ``now``."""
        return frozenset(self._ejected_in(group, now))

    def ejection_count(self, backend: str, now: float) -> int:
        """Envoy's back-off multiplier ``n`` as of ``now`` (decayed while healthy)."""
        host = self._hosts.get(backend)
        if host is None:
            return 0
        self._still_ejected(backend, host, now)
        return self._decayed(host, now)

    def uneject(self, backend: str, now: float) -> bool:
        """Return an ejected backend early (Envoy: a passing active health check
        un-ejects). True when it was ejected."""
        host = self._hosts.get(backend)
        if host is None or not self._still_ejected(backend, host, now):
            return False
        self._return(backend, host, now)
        return True

    def _eject(self, backend: str, host: _Host, now: float) -> None:
        p = self.policy
        n = self._decayed(host, now)
        if p.base_ejection_s * n < p.max_ejection_s:
            n += 1
        host.n = n
        host.streak = 0
        host.returned_at = None
        host.ejected_until = now + min(p.base_ejection_s * n, p.max_ejection_s)
        self._ejected.setdefault(host.group, set()).add(backend)
        self.ejections += 1

    def _decayed(self, host: _Host, now: float) -> int:
        if host.returned_at is None or host.ejected_until is not None:
            return host.n
        healthy_periods = math.floor(max(0.0, now - host.returned_at) / self.policy.base_ejection_s)
        return max(0, host.n - healthy_periods)

    def _still_ejected(self, backend: str, host: _Host, now: float) -> bool:
        if host.ejected_until is None:
            return False
        if now < host.ejected_until:
            return True
        self._return(backend, host, host.ejected_until)
        return False

    def _return(self, backend: str, host: _Host, at: float) -> None:
        host.ejected_until = None
        host.returned_at = at
        host.streak = 0
        self._ejected.get(host.group, set()).discard(backend)

    def _ejected_in(self, group: str, now: float) -> set[str]:
        ejected = self._ejected.get(group, set())
        for backend in list(ejected):
            self._still_ejected(backend, self._hosts[backend], now)
        return ejected
