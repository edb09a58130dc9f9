"""The composition root: what a gateway process is made of, and one request's path through it.

:func:`build` turns one validated config into the :class:`Runtime` (everything
a request reads: snapshot, keys, providers, breakers, budgets, metrics) and
the one :class:`Pipeline` every front end calls. ``Gateway.start``
(``gateway/app/server.py``) then attaches the control plane to that runtime
(``gateway/control/plane.py``: store, tenant limiter, canary and shadow taps),
starts discovery (``gateway/control/discovery.py``) and binds the listeners.

The stages of one request, in order, and the module that owns each:

==============  =====================================================================
stage           owner
==============  =====================================================================
edge checks     ``gateway/http/api.py`` (``admit``: draining, one API key), body
                limits ``gateway/http/body.py``, validation ``gateway/http/schema.py``;
                for gRPC all of it in ``gateway/grpc/service.py``. A refusal is
                answered and recorded by ``gateway/http/refusal.py``.
plan            ``Pipeline.plan`` (``gateway/pipeline/core.py``) → ``routing/router.py``
                (pure: snapshot + signals + request → ``Plan``)
admission       ``failover.executor.Admission``, the tenant limits' implementation
                ``gateway/control/limits.py`` (``TenantAdmission``): before the
                first attempt (429), released when the execution closes
execute         ``failover/executor.py`` (attempts, hedges, rounds, resumption),
                deadlines ``failover/watchdog.py``, breakers ``failover/health.py``
encode          HTTP ``gateway/http/streaming.py`` (SSE or one JSON body) with
                ``gateway/http/chunks.py``; embeddings and responses in their own
                route modules; gRPC ``gateway/grpc/service.py``
report          ``Pipeline.serving`` / ``Pipeline.refused`` (``gateway/pipeline/core.py``):
                metrics, access log, traces, then the request taps (canary, shadow)
==============  =====================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gateway.app.runtime import Runtime, build_runtime
from gateway.config.model import Config
from gateway.pipeline.core import Pipeline


@dataclass(frozen=True, slots=True)
class Built:
    runtime: Runtime
    pipeline: Pipeline


async def build(config: Config, environ: Mapping[str, str] | None = None) -> Built:
    """Inside the event loop that will serve (the upstream sessions bind to it)."""
    runtime = await build_runtime(config, environ)
    return Built(runtime, Pipeline(runtime))
