"""The admission stage: a routed request becomes an ``Execution`` holding its admission.

Admission is a protocol the executor calls (``failover.executor.Admission``):
``Execution.start`` admits before the first attempt (429) and releases when
the execution closes. Which admission a tenant gets is the tenant limits'
decision (``gateway/control/limits.py``), asked through ``admission``; it
answers None while no limits are attached.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from failover.executor import Admission, Budgets, Execution
from failover.health import BackendHealth
from failover.policy import FailoverPolicy
from regions.provider import Provider
from regions.request import GenerationRequest
from routing.plan import Plan


class Admitter:
    __slots__ = ("_admission", "_budgets", "_health", "_policy", "_providers")

    def __init__(
        self,
        providers: Callable[[], Mapping[str, Provider]],
        admission: Callable[[str], Admission | None],
        *,
        policy: FailoverPolicy,
        health: BackendHealth,
        budgets: Budgets,
    ) -> None:
        self._providers = providers  # a reload swaps the dict; an execution keeps its own
        self._admission = admission
        self._policy = policy
        self._health = health
        self._budgets = budgets

    def execution(self, request: GenerationRequest, plan: Plan) -> Execution:
        """Its ``start`` first admits the request under the tenant's limits (429)."""
        return Execution(
            request,
            plan,
            self._providers(),
            self._policy,
            self._health,
            self._budgets,
            admission=self._admission(request.tenant),
            clock=self._health.clock,  # attempts timed on the clock health judges them by
        )
