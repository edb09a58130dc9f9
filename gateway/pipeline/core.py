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
from gateway.app.runtime import Runtime
from gateway.http.schema import BadRequest
from gateway.observe import tracing
from gateway.observe.access_log import KEY_NAME
from gateway.observe.metrics import OTHER
from gateway.security.keys import Tenant
from gateway.security.tls import identified
from regions.request import GenerationRequest, Residency
from routing.plan import Plan, ResidencyViolation, RoutingError

RESIDENCY_HEADER = "x-meridian-residency"
_MAX_TAGS = 16
_MAX_TAG_CHARS = 64
_STATUS_REASON = {499: "client_closed", 500: "internal_error", 503: "shutting_down"}


@dataclass(frozen=True, slots=True)
class Caller:
    tenant: Tenant
    key_digest: str


@dataclass(slots=True)
class Outcome:
    """What a front end tells the pipeline about how the request ended."""

    status: int = 200
    reason: str = ""  # the error code the client got, when it is not a 200


def log_refusal(logger: logging.Logger, request_id: str, tenant: str, exc: RoutingError) -> None:
    """Routing's full account of a refusal, for the operator the tenant quotes the id to."""
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    what = "request %s of tenant %s refused (%s): %s"
    logger.log(level, what, request_id, tenant, exc.code, exc.message)


class Pipeline:
    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime

    def authenticate(
        self, authorization: str | None, identities: tuple[str, ...] = ()
    ) -> Caller | None:
        """By API key when one is sent, else by the verified client certificate's SANs.

        Raises KeyExpired for a known key past its expiry (its message is for the client)."""
        if authorization or not identities:
            found = self.rt.keyring.check(authorization)
        else:
            found = identified(self.rt.keyring, identities)  # logs the SANs it refuses
        KEY_NAME.set("" if found is None else found[0].key)  # for the access log
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
        now = time.monotonic()
        plan = rt.router.plan(
            rt.snapshot,
            request,
            caller.tenant.models,
            signals=rt.health,
            now=now,
            cost_weight=caller.tenant.cost_weight,
        )
        if tracing.active():
            tracing.routed(now, time.monotonic())
        return plan

    def execution(self, request: GenerationRequest, plan: Plan) -> Execution:
        """Its ``start`` first admits the request under the tenant's limits (429)."""
        rt = self.rt
        admission = None if rt.limiter is None else rt.limiter.admission(request.tenant)
        return Execution(
            request, plan, rt.providers, rt.policy, rt.health, rt.budgets, admission=admission
        )

    def model_label(self, model: str) -> str:
        """A model name as a metric label: configured names only (bounded)."""
        return model if model in self.rt.snapshot.models else OTHER

    def refused(
        self,
        request_id: str,
        status: int,
        reason: str,
        *,
        tenant: str = "",
        model: str = "",
        client: str = "",
        arrived: float | None = None,
    ) -> None:
        """A request answered before execution (400, 401, 403, 404, 413, 503...):
        counted and logged like every other."""
        model = self.model_label(model) if model else ""
        self.rt.metrics.refused(model=model, status=status, reason=reason, tenant=tenant)
        access = self.rt.access_log
        logged = access is not None and access.wants(tenant, status)
        if not (logged or tracing.active()):
            return
        duration = 0.0 if arrived is None else time.monotonic() - arrived
        record: dict[str, object] = {
            "request_id": request_id,
            "tenant": tenant,
            "key": KEY_NAME.get() if tenant else "",
            "model": model,
            "status": status,
            "reason": reason,
            "duration_ms": round(duration * 1000, 3),
            "client": client,
        }
        tracing.finish(record, None)
        if logged and access is not None:
            access.write(record)

    @asynccontextmanager
    async def serving(
        self, execution: Execution, *, client: str = "", arrived: float | None = None
    ) -> AsyncIterator[Outcome]:
        """Track the request for shutdown and record its metrics and access-log line
        when it ends; then end its serving attempt if the front end never streamed
        it to the end (the client left, or a write failed, between the first token
        and the stream). ``arrived``: when the request came in (default: now)."""
        rt = self.rt
        model = execution.request.model
        started = time.monotonic() if arrived is None else arrived
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
            self._record(execution, outcome, started, client)
            for tap in rt.taps:
                tap(execution, outcome.status)
            await execution.aclose()

    def first_token(self, execution: Execution, elapsed: float) -> None:
        serving = execution.serving
        if serving is None:
            return
        if self.rt.shadow is not None:
            self.rt.shadow.offer(execution)  # admitted: a copy may go (never awaited)
        # Overhead: the part of the TTFT not spent waiting for the serving backend.
        backend_wait = (serving.first_token or serving.started) - serving.started
        self.rt.metrics.first_token(execution, serving, elapsed, elapsed - backend_wait)

    def _record(self, execution: Execution, outcome: Outcome, started: float, client: str) -> None:
        now = time.monotonic()
        elapsed = now - started
        status = outcome.status
        request = execution.request
        serving = execution.serving or (execution.attempts[-1] if execution.attempts else None)
        failure = next(
            (a.failure.failure.value for a in reversed(execution.attempts) if a.failure), ""
        )
        reason = (
            "ok" if status == 200 else outcome.reason or failure or _STATUS_REASON.get(status, "")
        )
        usage = execution.usage
        price = serving.backend.price if serving is not None else None
        cost = 0.0
        if usage is not None and price is not None:
            cost = price.cost(usage.prompt_tokens, usage.completion_tokens)
        self.rt.metrics.finished(
            execution,
            status=status,
            reason=reason,
            tenant=request.tenant,
            elapsed=elapsed,
            cost=cost,
        )
        ttft: float | None = None
        if serving is not None and serving.first_token is not None and execution.serving:
            ttft = serving.first_token - started
            completion = usage.completion_tokens if usage is not None else 0
            if status == 200 and completion > 1:
                pace = (now - serving.first_token) / (completion - 1)
                self.rt.metrics.output_pace(request.model, serving.backend, pace)
        access = self.rt.access_log
        logged = access is not None and access.wants(request.tenant, status)
        if not (logged or tracing.active()):
            return
        kinds = [a.kind for a in execution.attempts]
        record: dict[str, object] = {
            "request_id": request.request_id,
            "tenant": request.tenant,
            "key": KEY_NAME.get(),
            "model": request.model,
            "version": execution.plan.version,
            "backend": serving.backend.name if serving else "",
            "region": serving.backend.region.name if serving else "",
            "status": status,
            "reason": reason,
            "failure": failure,
            "attempts": len(kinds),
            "hedged": "hedge" in kinds,
            "resumed": execution.resumptions,
            "stream": request.stream,
            "ttft_ms": None if ttft is None else round(ttft * 1000, 3),
            "duration_ms": round(elapsed * 1000, 3),
            "prompt_tokens": usage.prompt_tokens if usage else 0,
            "completion_tokens": usage.completion_tokens if usage else 0,
            "cost_usd": round(cost, 9),
            "residency": request.residency.describe(),
            "client": client,
        }
        tracing.finish(record, execution, request.kind.value)
        if logged and access is not None:
            access.write(record)
