"""The plan stage: one request and its caller → a routed ``Plan`` (``routing/router.py``).

Routing is pure; this stage hands it the current routing snapshot (read once,
through a getter, as the composer swaps it whole), the health signals and
the caller's model allow-list and cost weight.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from gateway.observe import tracing
from gateway.pipeline.edge import Caller
from regions.request import GenerationRequest
from routing.plan import Plan, RoutingError
from routing.router import Router
from routing.signals import Signals
from routing.snapshot import RoutingSnapshot


class Planner:
    __slots__ = ("_clock", "_route", "_signals", "_snapshot")

    def __init__(
        self,
        router: Router,
        snapshot: Callable[[], RoutingSnapshot],
        signals: Signals,
        clock: Callable[[], float],
    ) -> None:
        self._route = router.plan
        self._snapshot = snapshot
        self._signals = signals
        self._clock = clock

    def plan(self, request: GenerationRequest, caller: Caller) -> Plan:
        """Route one request; raises routing.plan.RoutingError subclasses."""
        now = self._clock()
        tenant = caller.tenant
        plan = self._route(
            self._snapshot(),
            request,
            tenant.models,
            signals=self._signals,
            now=now,
            cost_weight=tenant.cost_weight,
        )
        if tracing.active():
            tracing.routed(now, self._clock())
        return plan


def log_refusal(logger: logging.Logger, request_id: str, tenant: str, exc: RoutingError) -> None:
    """Routing's full account of a refusal, for the operator the tenant quotes the id to."""
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    what = "request %s of tenant %s refused (%s): %s"
    logger.log(level, what, request_id, tenant, exc.code, exc.message)
