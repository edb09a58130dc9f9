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
from google.protobuf import json_format

from gateway.http import embeddings
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

Request = pb.ChatRequest | pb.CompletionRequest | pb.EmbedRequest


def _message(m: pb.Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role}
    if m.parts:
        parts: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
        for part in m.parts:
            if part.type == "image_url":
                parts.append({"type": "image_url", "image_url": {"url": part.image_url}})
            else:
                parts.append({"type": part.type, "text": part.text})
        out["content"] = parts
    else:
        out["content"] = None if (m.tool_calls and not m.content) else m.content
    if m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id,
                "type": c.type or "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in m.tool_calls
        ]
    if m.tool_call_id:
        out["tool_call_id"] = m.tool_call_id
    if m.name:
        out["name"] = m.name
    return out


def _schema(which: str | None, text: str, struct: Any, at: str) -> Any:
    """A JSON Schema sent as JSON text or as a google.protobuf.Struct."""
    if which is None:
        return None
    if which.endswith("_struct"):
        return json_format.MessageToDict(struct)
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise BadRequest(f"{at}: not valid JSON", at) from None


def _chat_fields(request: pb.ChatRequest, body: dict[str, Any]) -> None:
    """Tools, tool choice, response format, logprobs and the extra fields."""
    if request.tools:
        tools = []
        for i, tool in enumerate(request.tools):
            function: dict[str, Any] = {"name": tool.name}
            if tool.description:
                function["description"] = tool.description
            params = _schema(
                tool.WhichOneof("parameters"),
                tool.parameters_json,
                tool.parameters_struct,
                f"tools.{i}.parameters_json",
            )
            if params is not None:
                function["parameters"] = params
            if tool.strict:
                function["strict"] = True
            tools.append({"type": "function", "function": function})
        body["tools"] = tools
    if request.tool_choice:
        choice = request.tool_choice
        named = choice not in ("auto", "none", "required")
        body["tool_choice"] = (
            {"type": "function", "function": {"name": choice}} if named else choice
        )
    if request.HasField("response_format") and request.response_format.type:
        fmt = request.response_format
        out: dict[str, Any] = {"type": fmt.type}
        if fmt.type == "json_schema":
            schema = _schema(
                fmt.WhichOneof("schema"),
                fmt.schema_json,
                fmt.schema_struct,
                "response_format.schema_json",
            )
            spec: dict[str, Any] = {"name": fmt.name or "response", "schema": schema or {}}
            if fmt.strict:
                spec["strict"] = True
            out["json_schema"] = spec
        body["response_format"] = out
    if request.logprobs:
        body["logprobs"] = True
    if request.HasField("top_logprobs"):
        body["top_logprobs"] = request.top_logprobs
    if request.extra_json:
        try:
            extra = orjson.loads(request.extra_json)
        except orjson.JSONDecodeError:
            raise BadRequest("extra_json: not valid JSON", "extra_json") from None
        if not isinstance(extra, dict):
            raise BadRequest("extra_json: must be a JSON object", "extra_json")
        for name in extra:
            if name in body or name in _NOT_EXTRA:
                raise BadRequest(
                    f"extra_json.{name}: set by the request's own fields, or not carried by "
                    "the gRPC API",
                    f"extra_json.{name}",
                )
        body.update(extra)


_NOT_EXTRA = frozenset(
    {"model", "messages", "stream", "stream_options", "n", "tools", "tool_choice"}
    | {"response_format", "logprobs", "top_logprobs", "max_tokens", "max_completion_tokens"}
)
"""Fields extra_json may not set: the request's own, and ``n`` (a chunk names no choice)."""


def embed_request(
    request: pb.EmbedRequest,
    *,
    request_id: str,
    tenant: str,
    residency: Residency,
    key_digest: str,
) -> GenerationRequest:
    """The embedding request, validated by the HTTP API's own schema; raises BadRequest."""
    body: dict[str, Any] = {
        "model": request.model,
        "input": list(request.input),
        "encoding_format": "float",
    }
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.routing.user:
        body["user"] = request.routing.user
    gen, _ = embeddings.parse(
        orjson.dumps(body),
        request_id=request_id,
        tenant=tenant,
        residency=residency,
        affinity_key=request.routing.session or request.routing.user or key_digest,
    )
    return gen


def openai_body(request: pb.ChatRequest | pb.CompletionRequest, *, stream: bool) -> dict[str, Any]:
    """The OpenAI request body equivalent to ``request``; raises BadRequest on NaN/inf."""
    body: dict[str, Any] = {"model": request.model, "stream": stream}
    if isinstance(request, pb.ChatRequest):
        body["messages"] = [_message(m) for m in request.messages]
        _chat_fields(request, body)
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
    request: pb.ChatRequest | pb.CompletionRequest,
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

    __slots__ = ("_make", "_served", "include_usage", "rich")

    def __init__(
        self, make: type[Chunk], served: pb.Served, include_usage: bool, rich: bool = False
    ) -> None:
        self._make: type[Chunk] = make
        self._served: pb.Served | None = served
        self.include_usage = include_usage
        self.rich = rich  # tool calls or logprobs asked: read them from the upstream chunk

    def encode(self, event: Event) -> Chunk | None:
        """The chunk for ``event``, or None when it sends nothing."""
        if isinstance(event, TokenDelta):
            calls, logprobs = rich_delta(event.raw) if self.rich and event.raw else ((), ())
            if not event.text and not calls:
                return None
            chunk = self._make(text=event.text)
            if isinstance(chunk, pb.ChatChunk):
                chunk.tool_calls.extend(calls)
                chunk.logprobs.extend(logprobs)
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


def tool_call(call: dict[str, Any]) -> pb.ToolCall:
    function = call.get("function") if isinstance(call.get("function"), dict) else {}
    assert isinstance(function, dict)
    index = call.get("index", 0)
    return pb.ToolCall(
        index=index if isinstance(index, int) and 0 <= index < 2**32 else 0,
        id=call.get("id") or "",
        type=call.get("type") or "",
        name=function.get("name") or "",
        arguments=function.get("arguments") or "",
    )


def token_logprobs(logprobs: object) -> list[pb.TokenLogprob]:
    """Chat logprobs' ``content`` entries as messages (malformed entries skipped)."""
    entries = logprobs.get("content") if isinstance(logprobs, dict) else None
    out = []
    for entry in entries or ():
        if not isinstance(entry, dict) or not isinstance(entry.get("token"), str):
            continue
        top = [
            pb.TopLogprob(token=t["token"], logprob=float(t.get("logprob") or 0.0))
            for t in entry.get("top_logprobs") or ()
            if isinstance(t, dict) and isinstance(t.get("token"), str)
        ]
        logprob = entry.get("logprob")
        value = float(logprob) if isinstance(logprob, int | float) else 0.0
        out.append(pb.TokenLogprob(token=entry["token"], logprob=value, top_logprobs=top))
    return out


def rich_delta(raw: bytes) -> tuple[list[pb.ToolCall], list[pb.TokenLogprob]]:
    """The tool-call deltas and logprobs of one upstream chat chunk."""
    try:
        obj = orjson.loads(raw.removeprefix(b"data: "))
    except orjson.JSONDecodeError:
        return [], []
    calls: list[pb.ToolCall] = []
    logprobs: list[pb.TokenLogprob] = []
    for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
        if not isinstance(choice, dict):
            continue
        delta = choice.get("delta")
        if isinstance(delta, dict):
            calls += [tool_call(c) for c in delta.get("tool_calls") or () if isinstance(c, dict)]
        logprobs += token_logprobs(choice.get("logprobs"))
    return calls, logprobs
