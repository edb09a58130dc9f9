"""Protobuf messages to the internal request, and token events to protobuf chunks.

Requests are validated by the HTTP API's own schema (``gateway.http.schema``):
a gRPC request is restated as the OpenAI body it stands for and parsed by
``parse_request``, so both front ends accept exactly the same values (model
name length, roles, ``max_tokens >= 1``, temperature 0..2, top_p 0..1, at most
4 stop sequences, penalties -2..2) with the same messages and build the same
``GenerationRequest``. The round trip through JSON costs a few microseconds
per request, never per token. The only checks added here are those JSON
cannot express: a NaN or infinite double, which JSON would turn into ``null``.
Parameter names in errors are the protobuf paths (``sampling.temperature``).

Chunks: one per event, empty text deltas (a role-only upstream chunk)
dropped; the first chunk carries ``Served``; the usage chunk is sent only when
the client asked for it.
"""

from __future__ import annotations

import math
from typing import Any, Generic, TypeVar

import orjson

from gateway.http.schema import BadRequest, parse_request
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.events import Event, Finish, TokenDelta, Usage
from regions.request import GenerationRequest, Kind, Residency

_SAMPLING_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)
_FLOAT_FIELDS = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_PROTO_PATHS = {name: f"sampling.{name}" for name in (*_SAMPLING_FIELDS, "stop")}
_PROTO_PATHS["user"] = "routing.user"

Request = pb.ChatRequest | pb.CompletionRequest


def openai_body(request: Request, *, stream: bool) -> dict[str, Any]:
    """The OpenAI request body equivalent to ``request``; raises BadRequest on NaN/inf."""
    body: dict[str, Any] = {"model": request.model, "stream": stream}
    if isinstance(request, pb.ChatRequest):
        body["messages"] = [{"role": m.role, "content": m.content} for m in request.messages]
    else:
        body["prompt"] = request.prompt
    if stream and request.include_usage:
        body["stream_options"] = {"include_usage": True}
    sampling = request.sampling
    for name in _SAMPLING_FIELDS:
        if sampling.HasField(name):  # type: ignore[arg-type]  # the names are its fields
            body[name] = getattr(sampling, name)
    for name in _FLOAT_FIELDS:
        if name in body and not math.isfinite(body[name]):
            raise BadRequest(f"sampling.{name}: must be a finite number", f"sampling.{name}")
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if request.routing.user:
        body["user"] = request.routing.user
    return body


def generation_request(
    kind: Kind,
    request: Request,
    *,
    stream: bool,
    request_id: str,
    tenant: str,
    residency: Residency,
    key_digest: str,
) -> GenerationRequest:
    """Validate ``request`` exactly as the HTTP API validates its body; raises BadRequest."""
    body = orjson.dumps(openai_body(request, stream=stream))
    try:
        return parse_request(
            kind,
            body,
            request_id=request_id,
            tenant=tenant,
            residency=residency,
            session=request.routing.session or None,
            key_digest=key_digest,
        )
    except BadRequest as exc:
        raise _in_proto_terms(exc) from None


def _in_proto_terms(exc: BadRequest) -> BadRequest:
    """``exc`` with the OpenAI parameter name replaced by the protobuf field path."""
    param = exc.param or exc.message.partition(":")[0]
    head, _, rest = param.partition(".")
    path = _PROTO_PATHS.get(head)
    if path is None:
        return exc
    renamed = path + ("." + rest if rest else "")
    if exc.message.startswith(param):
        message = renamed + exc.message[len(param) :]
    else:
        message = exc.message.replace(f"'{param}'", f"'{renamed}'")
    return BadRequest(message, renamed)


def residency_narrowing(request: Request) -> str | None:
    """The residency tags in the HTTP header's form (comma-separated), or None."""
    tags = [t for t in request.routing.residency if t.strip()]
    return ",".join(tags) or None


def served(
    request_id: str, model: str, version: str, backend: str, region: str, attempts: int
) -> pb.Served:
    return pb.Served(
        request_id=request_id,
        model=model,
        version=version,
        backend=backend,
        region=region,
        attempts=attempts,
    )


def served_metadata(s: pb.Served) -> tuple[tuple[str, str], ...]:
    """The HTTP API's response headers, as initial metadata."""
    return (
        ("x-request-id", s.request_id),
        ("x-meridian-backend", s.backend),
        ("x-meridian-region", s.region),
        ("x-meridian-version", s.version),
        ("x-meridian-attempts", str(s.attempts)),
    )


def usage_message(usage: Usage) -> pb.Usage:
    return pb.Usage(
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        total_tokens=usage.total_tokens,
    )


Chunk = TypeVar("Chunk", pb.ChatChunk, pb.CompletionChunk)


class ChunkEncoder(Generic[Chunk]):
    """Events to the chunks of one stream; see the module docstring for the rules."""

    __slots__ = ("_make", "_served", "include_usage")

    def __init__(self, make: type[Chunk], served: pb.Served, include_usage: bool) -> None:
        self._make: type[Chunk] = make
        self._served: pb.Served | None = served
        self.include_usage = include_usage

    def encode(self, event: Event) -> Chunk | None:
        """The chunk for ``event``, or None when it sends nothing."""
        if isinstance(event, TokenDelta):
            if not event.text:
                return None
            chunk = self._make(text=event.text)
        elif isinstance(event, Finish):
            chunk = self._make(finish_reason=event.reason)
        elif isinstance(event, Usage) and self.include_usage:
            chunk = self._make(usage=usage_message(event))
        else:
            return None
        if self._served is not None:
            chunk.served.CopyFrom(self._served)
            self._served = None
        return chunk
