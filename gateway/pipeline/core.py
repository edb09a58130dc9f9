"""The request path below the edge, shared by every front end (HTTP, gRPC), as one value.

:class:`Pipeline` is the stages of one request composed, each from its own
module and each given only what it reads (``gateway/app/build.py`` builds the
one instance a process serves with):

* ``authenticate`` and ``residency``: the edge checks both front ends share
  (``gateway/pipeline/edge.py``);
* ``plan``: route the request (``gateway/pipeline/plan.py`` → ``routing/router.py``);
* ``execution``: the ``Execution`` with its tenant's admission
  (``gateway/pipeline/admit.py``; the executor, ``failover/executor.py``, admits
  and runs the attempts);
* ``passthrough``: whether the serving backend's bytes go out unchanged
  (``gateway/pipeline/encode.py``);
* ``serving``, ``first_token`` and ``refused``: metrics, access log, traces and
  the request taps (``gateway/pipeline/report.py``).

A front end authenticates, builds its ``GenerationRequest``, plans, and serves
the execution inside ``serving``; it only translates wire formats. The stages
are bound once, here, so a call costs what a method call costs.
"""

from __future__ import annotations

from gateway.app.lifecycle import Lifecycle
from gateway.pipeline.admit import Admitter
from gateway.pipeline.edge import RESIDENCY_HEADER, Authenticator, Caller, residency
from gateway.pipeline.encode import passthrough
from gateway.pipeline.plan import Planner, log_refusal
from gateway.pipeline.report import Outcome, Reporter

__all__ = ["RESIDENCY_HEADER", "Caller", "Outcome", "Pipeline", "log_refusal"]


class Pipeline:
    __slots__ = (
        "authenticate",
        "execution",
        "first_token",
        "lifecycle",
        "model_label",
        "passthrough",
        "plan",
        "refused",
        "residency",
        "serving",
    )

    def __init__(
        self,
        authenticator: Authenticator,
        planner: Planner,
        admitter: Admitter,
        reporter: Reporter,
        lifecycle: Lifecycle,
    ) -> None:
        self.lifecycle = lifecycle  # draining: the front ends refuse new requests (503)
        self.authenticate = authenticator.authenticate
        self.residency = residency
        self.plan = planner.plan
        self.execution = admitter.execution
        self.passthrough = passthrough
        self.serving = reporter.serving
        self.first_token = reporter.first_token
        self.refused = reporter.refused
        self.model_label = reporter.model_label
