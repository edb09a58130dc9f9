"""The encode stage's one shared decision: may the upstream's bytes go out unchanged?

The wire encodings themselves belong to the front ends (SSE or one JSON body
in ``gateway/http/streaming.py``, protobuf chunks in ``gateway/grpc/convert.py``).
Whether a stream is passed through is asked of the adapter that serves it, from
the providers the execution started with: a reload may have swapped (or removed)
that backend's entry in the current registry since.
"""

from __future__ import annotations

from failover.executor import Execution


def passthrough(execution: Execution) -> bool:
    """Whether the serving backend speaks the client's format (its SSE bytes are sent as-is)."""
    serving = execution.serving
    if serving is None:
        return False
    return execution.providers[serving.backend.name].passthrough(execution.request.kind)
