"""The W3C trace context an adapter sends with each backend request.

The front end sets it for the request's task (gateway.observe.tracing): a client's
``traceparent`` and ``tracestate`` as they came when tracing is off, the
gateway's own request span as parent when it is on. Hedges and resumptions run
in tasks that copy the context, so every attempt carries it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from contextvars import ContextVar
from types import MappingProxyType

_NONE: Mapping[str, str] = MappingProxyType({})

TRACE_HEADERS: ContextVar[Mapping[str, str]] = ContextVar("meridian_trace_headers", default=_NONE)


trace_headers: Callable[[], Mapping[str, str]] = TRACE_HEADERS.get
"""``traceparent`` (and ``tracestate``) for the current request, or nothing (empty,
so falsy). The ContextVar's own ``get``: no Python call per backend request."""
