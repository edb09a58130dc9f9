"""Mirroring: a copy of admitted requests goes to a shadow plan's candidate version.

The request path calls :meth:`ShadowMirror.offer` once the primary has been
admitted and has its first token; ``offer`` never awaits and never raises —
it decides and, at most, schedules a task. The decision, in order:

1. a plan for the model is active (not stopped, not expired);
2. the tenant is neither excluded by the plan nor opted out in its config
   (``tenants[].shadow_opt_out``) — counted as ``skipped``, not as a drop;
3. the request falls in the plan's ``share``: the affinity key hashes to a
   point in [0, 1) (``routing.router.affinity_point``, salted with
   ``shadow``) that must be below ``share / 100`` — sticky, so a conversation
   is mirrored whole or not at all;
4. room under the caps, else the copy is *dropped and counted*: concurrent
   copies of the plan (``max_concurrent``), copies pending on this replica
   (``max_pending``, a bound on memory whatever the plans say), and copy
   tokens used this minute (``max_tokens_per_min``; checked before a copy
   starts, so a minute overshoots by at most the copies in flight).

The copy is routed (synchronously, in ``offer``: routing is pure and quick)
by the same router with the candidate version forced and the *same* request
— so the same tenant and residency constraint: a copy that residency leaves
nowhere to go is not sent (counted as ``dropped|residency``), and the
executor re-checks residency at every attempt. It runs without hedging,
resumption or a second round, on its own retry budget, so it never spends
the primary's.

When both sides of a pair have ended (the primary through the request tap
:meth:`finished`, the copy through its task), they are compared
(``gateway.shadow.compare``) and the counters are added to the plan's window
in memory; :meth:`run` adds them to the store every ``flush_s``, where every
replica's sums meet (``Store.add_counts``).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from failover.executor import Budgets, Execution
from failover.health import BackendHealth
from failover.policy import FailoverPolicy
from gateway.config.model import Config
from gateway.control.counts import PendingCounts
from gateway.observe.metrics import Metrics
from gateway.shadow.compare import Side, compare, fields
from gateway.shadow.plan import ShadowPlan, from_doc
from gateway.shadow.tap import run_copy, side_of
from gateway.store import Store, StoreUnavailable
from regions.provider import Provider
from regions.request import GenerationRequest
from regions.tasks import BackgroundTasks
from routing.plan import Plan, ResidencyViolation, RoutingError
from routing.router import Router, affinity_point
from routing.snapshot import RoutingSnapshot

log = logging.getLogger("meridian.shadow")


@dataclass(slots=True)
class _Pair:
    plan: ShadowPlan
    primary: Side | None = None
    candidate: Side | None = None


class ShadowMirror:
    def __init__(
        self,
        store: Store,
        *,
        snapshot: Callable[[], RoutingSnapshot],
        providers: Callable[[], Mapping[str, Provider]],
        config: Callable[[], Config],
        router: Router,
        health: BackendHealth,
        metrics: Metrics,
        policy: FailoverPolicy,
        flush_s: float = 1.0,
        max_pending: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Getters for what a reload or discovery swaps; the rest is fixed for the process.
        self._snapshot, self._providers, self._config = snapshot, providers, config
        self._router, self._health, self._metrics = router, health, metrics
        self.max_pending = max_pending
        self._clock = clock
        self.plans: dict[str, ShadowPlan] = {}
        self._pairs: dict[int, _Pair] = {}  # id(primary execution) → pair, while it runs
        self._in_flight: Counter[str] = Counter()  # model → copies running
        self._minute: dict[str, tuple[int, int]] = {}  # model → (minute, tokens used)
        self._tasks = BackgroundTasks()
        self._counts = PendingCounts(store, "shadow", flush_s=flush_s)
        self._policy = replace(policy, hedge=False, resume=False, rounds=1)
        self._budgets = Budgets()
        self._opt_out: tuple[object, frozenset[str]] = (None, frozenset())

    def watch(self, entries: Mapping[str, Any]) -> None:
        """Called with the store's documents at every applied revision."""
        plans: dict[str, ShadowPlan] = {}
        for key, doc in entries.items():
            kind, _, model = key.partition("/")
            if kind != "shadow":
                continue
            try:
                plans[model] = from_doc(doc)
            except (KeyError, ValueError, TypeError) as exc:
                log.warning("ignoring malformed store entry %s: %s", key, exc)
        self.plans = plans

    # -- the request path: never awaits --------------------------------------

    def offer(self, execution: Execution) -> None:
        request = execution.request
        plan = self.plans.get(request.model)
        if plan is None or not plan.active(self._clock()):
            return
        if request.tenant in plan.excluded or request.tenant in self._opted_out():
            self._count(plan, "skipped")
            return
        point = affinity_point(request.affinity_key or request.request_id, f"shadow\0{plan.model}")
        if point >= plan.share / 100:
            return
        reason = self._refusal(plan)
        if reason is not None:
            self._drop(plan, reason)
            return
        try:
            routed: Plan | None = self._router.plan(
                self._snapshot(),
                request,
                signals=self._health,
                now=self._health.clock(),
                version=plan.candidate,
            )
        except ResidencyViolation:
            self._drop(plan, "residency")  # a copy is user data too: never outside the policy
            return
        except RoutingError:
            routed = None  # the candidate cannot serve: compared as an error
        pair = _Pair(plan)
        self._pairs[id(execution)] = pair
        self._in_flight[plan.model] += 1
        self._count(plan, "mirrored")
        self._metrics.shadow_mirrored.labels(plan.model).inc()
        self._tasks.spawn(self._copy(request, routed, pair))

    def _opted_out(self) -> frozenset[str]:
        config = self._config()
        if self._opt_out[0] is not config:  # the config is replaced whole on reload
            names = frozenset(t.name for t in config.tenants if t.shadow_opt_out)
            self._opt_out = (config, names)
        return self._opt_out[1]

    def _refusal(self, plan: ShadowPlan) -> str | None:
        if self._in_flight[plan.model] >= plan.max_concurrent:
            return "concurrency"
        if len(self._tasks) >= self.max_pending:
            return "queue"
        minute, used = self._minute.get(plan.model, (0, 0))
        if minute == int(self._clock() // 60) and used >= plan.max_tokens_per_min:
            return "tokens"
        return None

    def _drop(self, plan: ShadowPlan, reason: str) -> None:
        self._count(plan, f"dropped|{reason}")
        self._metrics.shadow_dropped.labels(plan.model, reason).inc()

    def finished(self, execution: Execution, status: int) -> None:
        """The request tap: the primary has ended."""
        pair = self._pairs.pop(id(execution), None)
        if pair is None:
            return
        pair.primary = side_of(execution, status != 200)
        if status == 499:  # the client left: nothing to compare the copy with
            pair.primary = None
            self._count(pair.plan, "abandoned")
            return
        self._maybe_compare(pair)

    # -- the copy --------------------------------------------------------------

    async def _copy(self, request: GenerationRequest, routed: Plan | None, pair: _Pair) -> None:
        plan = pair.plan
        try:
            if routed is None:
                pair.candidate = Side(True)
            else:
                # The copy's attempts report to the health: stamped on its clock.
                copy = Execution(
                    request,
                    routed,
                    self._providers(),
                    self._policy,
                    self._health,
                    self._budgets,
                    clock=self._health.clock,
                )
                pair.candidate, used = await run_copy(copy)
                self._spend(plan, used)
        except Exception:  # a shadow must never take anything else down
            log.exception("shadow copy of %s failed", plan.model)
            pair.candidate = Side(True)
        finally:
            self._in_flight[plan.model] -= 1
        self._maybe_compare(pair)

    def _spend(self, plan: ShadowPlan, tokens: int) -> None:
        minute = int(self._clock() // 60)
        was, used = self._minute.get(plan.model, (minute, 0))
        self._minute[plan.model] = (minute, (used if was == minute else 0) + tokens)

    def _maybe_compare(self, pair: _Pair) -> None:
        if pair.primary is None or pair.candidate is None:
            return
        result = compare(pair.primary, pair.candidate)
        self._counts.window(pair.plan.window).update(fields(result))
        metrics = self._metrics
        metrics.shadow_compared.labels(pair.plan.model).inc()
        if result.disagrees:
            metrics.shadow_disagreeing.labels(pair.plan.model).inc()

    def _count(self, plan: ShadowPlan, name: str) -> None:
        self._counts.window(plan.window)[name] += 1

    # -- publishing ----------------------------------------------------------

    async def flush(self) -> None:
        await self._counts.flush()

    async def run(self) -> None:
        try:
            await self._counts.run()
        finally:
            await self._tasks.stop()
            with contextlib.suppress(StoreUnavailable):
                await self.flush()  # copies that ended while stopping still count
