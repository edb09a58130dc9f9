"""The request path below the edge, shared by every front end (HTTP, gRPC).

A front end authenticates with :meth:`Pipeline.authenticate`, builds its
:class:`GenerationRequest`, and calls :meth:`Pipeline.prepare` for an
:class:`Execution` of the routed plan. :meth:`Pipeline.serving` wraps the
rest: it tracks the stream for graceful shutdown and records the request's
metrics once, at the end. Front ends only translate wire formats.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

from failover.executor import Execution
from gateway.auth import Tenant
from gateway.http.schema import BadRequest
from gateway.limits import LimitedExecution
from gateway.runtime import Runtime
from regions.request import GenerationRequest, Residency
from routing.plan import Plan, ResidencyViolation, RoutingError

RESIDENCY_HEADER = "x-meridian-residency"
_MAX_TAGS = 16
_MAX_TAG_CHARS = 64


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: Tenant
    key_digest: str


@dataclass(slots=True)
class Outcome:
    """What a front end tells the pipeline about how the request ended."""

    status: int = 200


def log_refusal(logger: logging.Logger, request_id: str, tenant: str, exc: RoutingError) -> None:
    """Routing's full account of a refusal, for the operator the tenant quotes the id to."""
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    what = "request %s of tenant %s refused (%s): %s"
    logger.log(level, what, request_id, tenant, exc.code, exc.message)


class Pipeline:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def authenticate(self, authorization: str | None) -> Caller | None:
        found = self.rt.keyring.authenticate(authorization)
        return None if found is None else Caller(*found)

    @staticmethod
    def residency(caller: Caller, narrowing: str | None) -> Residency:
        """The tenant's policy, narrowed by the request's header; never widened.

        Raises BadRequest for a header that names no tag (``,``) or too many, and
        ResidencyViolation when the tags fall outside the policy; its message
        names only the header's tags and the key's own policy, so the tenant
        may read it."""
        policy = caller.tenant.residency
        if not narrowing:
            return policy
        asked = frozenset(t.strip() for t in narrowing.split(",") if t.strip())
        if not asked:
            raise BadRequest(
                f"{RESIDENCY_HEADER} names no jurisdiction tag; send e.g. 'EU' or 'EU,DE', "
                "or leave the header out",
                RESIDENCY_HEADER,
            )
        if len(asked) > _MAX_TAGS or max(len(t) for t in asked) > _MAX_TAG_CHARS:
            raise BadRequest(
                f"{RESIDENCY_HEADER}: at most {_MAX_TAGS} tags of at most "
                f"{_MAX_TAG_CHARS} characters",
                RESIDENCY_HEADER,
            )
        narrowed = policy.narrow(asked)
        if not narrowed.allowed:
            message = (
                f"{RESIDENCY_HEADER} [{','.join(sorted(asked))}] is outside this key's "
                f"residency policy [{policy.describe()}]; it can only narrow it"
            )
            raise ResidencyViolation(message, public=message)
        return narrowed

    def plan(self, request: GenerationRequest, caller: Caller) -> Plan:
        """Route one request; raises routing.plan.RoutingError subclasses."""
        rt = self.rt
        return rt.router.plan(
            rt.snapshot,
            request,
            caller.tenant.models,
            signals=rt.health,
            now=time.monotonic(),
            cost_weight=caller.tenant.cost_weight,
        )

    def execution(self, request: GenerationRequest, plan: Plan) -> Execution:
        """Its ``start`` first admits the request under the tenant's limits (429)."""
        rt = self.rt
        return LimitedExecution(
            request, plan, rt.providers, rt.policy, rt.health, rt.budgets, limiter=rt.limiter
        )

    @asynccontextmanager
    async def serving(self, execution: Execution) -> AsyncIterator[Outcome]:
        """Track the request for shutdown and record its metrics when it ends; then
        end its serving attempt if the front end never streamed it to the end (the
        client left, or a write failed, between the first token and the stream)."""
        rt = self.rt
        model = execution.request.model
        started = time.monotonic()
        outcome = Outcome()
        in_flight = rt.metrics.in_flight.labels(model)
        in_flight.inc()
        try:
            with rt.lifecycle.tracking():
                yield outcome
        except (asyncio.CancelledError, ConnectionResetError):
            if outcome.status == 200:
                outcome.status = 499  # the client went away
            raise
        except BaseException:
            if outcome.status == 200:
                outcome.status = 500  # a fault: the edge answers 500 (or INTERNAL)
            raise
        finally:
            in_flight.dec()
            self._record(execution, outcome.status, time.monotonic() - started)
            for tap in rt.taps:
                tap(execution, outcome.status)
            await execution.aclose()

    def first_token(self, execution: Execution, elapsed: float) -> None:
        serving = execution.serving
        if serving is None:
            return
        if self.rt.shadow is not None:
            self.rt.shadow.offer(execution)  # admitted: a copy may go (never awaited)
        backend = serving.backend
        self.rt.metrics.ttft.labels(
            execution.request.model, backend.name, backend.region.name
        ).observe(elapsed)

    def _record(self, execution: Execution, status: int, elapsed: float) -> None:
        metrics = self.rt.metrics
        model = execution.request.model
        # The attempt that served (after a hedge, not necessarily the last one
        # started); for a request nobody served, the last attempt tried.
        serving = execution.serving or (execution.attempts[-1] if execution.attempts else None)
        name = serving.backend.name if serving else ""
        region = serving.backend.region.name if serving else ""
        metrics.requests.labels(model, execution.plan.version, name, region, str(status)).inc()
        if serving is None:
            return
        metrics.duration.labels(model, name, region).observe(elapsed)
        if execution.usage is not None:
            metrics.tokens.labels(model, name, "prompt").inc(execution.usage.prompt_tokens)
            metrics.tokens.labels(model, name, "completion").inc(execution.usage.completion_tokens)
