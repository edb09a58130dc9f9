"""Protobuf messages to the OpenAI body a backend is sent, and token events to protobuf chunks.

The checks come first (``gateway/grpc/validate.py``); what is built here is
the body an OpenAI-compatible backend gets for a valid message (and that the
other adapters translate), the same body an HTTP client would have sent for
it. A tool's parameters and a response format's schema may come as JSON text
or as a ``google.protobuf.Struct``; JSON text that does not parse is refused
here, naming its field.

Chunks: one per event, empty text deltas (a role-only upstream chunk)
dropped; the first chunk carries ``Served``; the usage chunk is sent only when
the client asked for it.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

import orjson
from google.protobuf import json_format

from gateway.grpc.status import invalid
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.events import Event, Finish, TokenDelta, Usage

_SAMPLING_FIELDS = (
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
)

Request = pb.ChatRequest | pb.CompletionRequest | pb.EmbedRequest


def content_text(m: pb.Message) -> str:
    """A message's text as routing and text-only backends read it: ``content``, then
    its text parts (the HTTP schema's ``ChatMessage.text``)."""
    if not m.parts:
        return m.content
    return m.content + "".join(p.text for p in m.parts if p.type == "text")


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
        raise invalid(at, "not valid JSON") from None


def _chat_fields(request: pb.ChatRequest, body: dict[str, Any]) -> None:
    """Tools, tool choice, response format and logprobs."""
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


def chat_body(request: pb.ChatRequest, extra: dict[str, Any], *, stream: bool) -> dict[str, Any]:
    """The OpenAI body of a valid chat request; ``extra``: its parsed ``extra_json``."""
    body: dict[str, Any] = {"model": request.model, "stream": stream}
    body["messages"] = [_message(m) for m in request.messages]
    _chat_fields(request, body)
    body.update(extra)
    _common(request, body, stream)
    return body


def completion_body(request: pb.CompletionRequest, *, stream: bool) -> dict[str, Any]:
    """The OpenAI body of a valid completion request."""
    body: dict[str, Any] = {"model": request.model, "stream": stream, "prompt": request.prompt}
    _common(request, body, stream)
    return body


def _common(
    request: pb.ChatRequest | pb.CompletionRequest, body: dict[str, Any], stream: bool
) -> None:
    if stream and request.include_usage:
        body["stream_options"] = {"include_usage": True}
    sampling = request.sampling
    for name in _SAMPLING_FIELDS:
        if sampling.HasField(name):  # type: ignore[arg-type]  # the names are its fields
            body[name] = getattr(sampling, name)
    if sampling.stop:
        body["stop"] = list(sampling.stop)
    if request.routing.user:
        body["user"] = request.routing.user


def embed_body(request: pb.EmbedRequest) -> dict[str, Any]:
    """The OpenAI body of a valid embedding request (floats: the answer is protobuf)."""
    body: dict[str, Any] = {
        "model": request.model,
        "input": list(request.input),
        "encoding_format": "float",
    }
    if request.HasField("dimensions"):
        body["dimensions"] = request.dimensions
    if request.routing.user:
        body["user"] = request.routing.user
    return body


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
