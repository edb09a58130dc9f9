"""gRPC requests checked as protobuf: the HTTP API's rules, named by the messages' own fields.

Each check reads the message itself (no restating as JSON, no second
schema): a failure is a :class:`~gateway.grpc.status.Refusal` (400,
``INVALID_ARGUMENT``) whose message starts with the protobuf field path and
whose ``param`` is that path (``sampling.temperature``, ``messages.0.role``,
``messages.1.parts.0.type``). The rules are those of the HTTP API
(``gateway/http/schema.py``, ``gateway/http/embeddings.py``), worded alike:

- ``model``: 1 to 256 characters;
- chat ``messages``: at least one, each with a known role; a content part has a
  type of 1 to 64 characters;
- ``sampling``: ``max_tokens >= 1`` (an int32 holds no more than the HTTP bound),
  ``temperature`` 0..2, ``top_p`` 0..1, penalties -2..2, each finite (a NaN
  passes every comparison); at most 4 ``stop`` sequences; ``seed`` is an int64;
- ``routing.user``: at most 256 characters;
- ``extra_json``: a JSON object that restates no field the messages carry
  (``sampling.*``, ``routing.user``...) and sets no ``n`` (a chunk names no choice);
- embeddings: 1 to 2048 ``input`` strings, ``dimensions`` 1..65536.

The size of a message is bounded before any of this, by the server's
``grpc.max_receive_message_length`` (``limits.max_body_bytes``,
``gateway/grpc/server.py``): RESOURCE_EXHAUSTED, as the HTTP API's 413.

A valid message becomes the ``GenerationRequest``, with the OpenAI body a
backend is sent (``gateway.grpc.convert``: ``chat_body``, ``completion_body``,
``embed_body``) and the capabilities it asks (``needs``, for routing), each
named by its protobuf field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

from gateway.grpc.convert import chat_body, completion_body, content_text, embed_body
from gateway.grpc.status import invalid
from meridian_proto.meridian.v1 import inference_pb2 as pb
from regions.request import GenerationRequest, Kind, Message, Residency, Sampling
from routing.affinity import opening_of, split_key
from routing.capabilities import HARMLESS_FIELDS, STRUCTURED_FIELDS, unresumable

MAX_MODEL_CHARS = 256
MAX_USER_CHARS = 256
MAX_PART_TYPE_CHARS = 64
MAX_STOP = 4
MAX_INPUTS = 2048  # OpenAI's limit on inputs per request
MAX_DIMENSIONS = 65536
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLES = frozenset(ROLES)
_ROLE_LIST = ", ".join(f"'{r}'" for r in ROLES[:-1]) + f" or '{ROLES[-1]}'"

# (field, low, high) for the doubles of Sampling; max_tokens and stop apart.
_BOUNDED = (
    ("temperature", 0.0, 2.0),
    ("top_p", 0.0, 1.0),
    ("presence_penalty", -2.0, 2.0),
    ("frequency_penalty", -2.0, 2.0),
)

NOT_EXTRA = frozenset(
    {"model", "messages", "prompt", "stream", "stream_options", "n", "user"}
    | {"tools", "tool_choice", "response_format", "logprobs", "top_logprobs"}
    | {"max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed"}
    | {"presence_penalty", "frequency_penalty"}
)
"""What ``extra_json`` may not set: what the messages carry, and ``n``."""


def generation_request(
    request: pb.ChatRequest | pb.CompletionRequest,
    *,
    stream: bool,
    request_id: str,
    tenant: str,
    residency: Residency,
    key_digest: str,
) -> GenerationRequest:
    """A valid chat or completion request as the internal request; raises Refusal (400)."""
    _model(request.model)
    _sampling(request.sampling)
    _user(request.routing)
    if isinstance(request, pb.ChatRequest):
        if not request.messages:
            raise invalid("messages", "send at least one message")
        for i, m in enumerate(request.messages):
            _message(i, m)
        extra = _extra(request.extra_json)
        kind, prompt = Kind.CHAT, ""
        messages = tuple(Message(m.role, content_text(m)) for m in request.messages)
        asked = chat_needs(request, extra)
        body = chat_body(request, extra, stream=stream)
    else:  # a text prompt and the modelled fields ask nothing of a backend
        kind, prompt, messages, asked = Kind.COMPLETION, request.prompt, (), {}
        body = completion_body(request, stream=stream)
    routing = request.routing
    return GenerationRequest(
        kind=kind,
        model=request.model,
        request_id=request_id,
        messages=messages,
        prompt=prompt,
        sampling=sampling(request.sampling),
        stream=stream,
        include_usage=stream and request.include_usage,
        tenant=tenant,
        residency=residency,
        affinity_key=split_key(
            session=routing.session or None,
            user=routing.user or None,
            key_digest=key_digest,
            opening=opening_of([(m.role, m.content) for m in messages], prompt),
            request_id=request_id,
        ),
        body=body,
        needs=asked,
        unresumable=unresumable(asked),
        choices=1,  # no n: extra_json may not set it
    )


def embed_request(
    request: pb.EmbedRequest,
    *,
    request_id: str,
    tenant: str,
    residency: Residency,
    key_digest: str,
) -> GenerationRequest:
    """A valid ``EmbedRequest`` as the internal request; raises Refusal (400)."""
    _model(request.model)
    if not request.input:
        raise invalid("input", "send at least one input")
    if len(request.input) > MAX_INPUTS:
        raise invalid("input", f"at most {MAX_INPUTS} inputs")
    if request.HasField("dimensions"):
        _between("dimensions", request.dimensions, 1, MAX_DIMENSIONS)
    _user(request.routing)
    return GenerationRequest(
        kind=Kind.EMBEDDING,
        model=request.model,
        request_id=request_id,
        prompt="".join(request.input),
        tenant=tenant,
        residency=residency,
        affinity_key=request.routing.session or request.routing.user or key_digest,
        body=embed_body(request),
        needs={"embeddings": "input"},
        unresumable="an embedding is one answer",
        choices=len(request.input),
    )


def sampling(s: pb.Sampling) -> Sampling:
    return Sampling(
        max_tokens=s.max_tokens if s.HasField("max_tokens") else None,
        temperature=s.temperature if s.HasField("temperature") else None,
        top_p=s.top_p if s.HasField("top_p") else None,
        stop=tuple(s.stop),
        seed=s.seed if s.HasField("seed") else None,
        presence_penalty=s.presence_penalty if s.HasField("presence_penalty") else None,
        frequency_penalty=s.frequency_penalty if s.HasField("frequency_penalty") else None,
    )


def _model(model: str) -> None:
    if not model:
        raise invalid("model", "String should have at least 1 character")
    if len(model) > MAX_MODEL_CHARS:
        raise invalid("model", f"String should have at most {MAX_MODEL_CHARS} characters")


def _user(routing: pb.Routing) -> None:
    if len(routing.user) > MAX_USER_CHARS:
        raise invalid("routing.user", f"String should have at most {MAX_USER_CHARS} characters")


def _between(path: str, value: float, low: float, high: float) -> None:
    if value < low:
        raise invalid(path, f"Input should be greater than or equal to {_number(low)}")
    if value > high:
        raise invalid(path, f"Input should be less than or equal to {_number(high)}")


def _number(bound: float) -> str:
    return str(int(bound)) if bound == int(bound) else str(bound)


def _sampling(s: pb.Sampling) -> None:
    if s.HasField("max_tokens") and s.max_tokens < 1:
        raise invalid("sampling.max_tokens", "Input should be greater than or equal to 1")
    for name, low, high in _BOUNDED:
        if not s.HasField(name):  # type: ignore[arg-type]  # the names are its fields
            continue
        value = getattr(s, name)
        path = f"sampling.{name}"
        if not math.isfinite(value):
            raise invalid(path, "must be a finite number")
        _between(path, value, low, high)
    if len(s.stop) > MAX_STOP:
        raise invalid("sampling.stop", f"at most {MAX_STOP} sequences")


def _message(i: int, m: pb.Message) -> None:
    if m.role not in _ROLES:
        raise invalid(f"messages.{i}.role", f"Input should be {_ROLE_LIST}")
    for j, part in enumerate(m.parts):
        if not part.type or len(part.type) > MAX_PART_TYPE_CHARS:
            raise invalid(
                f"messages.{i}.parts.{j}.type",
                f"a part's type is 1 to {MAX_PART_TYPE_CHARS} characters",
            )


def _extra(text: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        extra = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise invalid("extra_json", "not valid JSON") from None
    if not isinstance(extra, dict):
        raise invalid("extra_json", "must be a JSON object")
    for name in extra:
        if name in NOT_EXTRA:
            raise invalid(
                f"extra_json.{name}",
                "set by the request's own fields, or not carried by the gRPC API",
            )
    return extra


def chat_needs(request: pb.ChatRequest, extra: Mapping[str, Any]) -> dict[str, str]:
    """Capability -> the first field that asks it (``GenerationRequest.needs``), in
    the order the HTTP schema's ``needs`` asks them, so routing refuses the same
    request for the same reason; fields are named by their protobuf paths."""
    out: dict[str, str] = {}

    def need(capability: str, field: str) -> None:
        out.setdefault(capability, field)

    if request.tools:
        need("tools", "tools")
    if extra.get("functions"):
        need("tools", "extra_json.functions")
    if request.tool_choice not in ("", "none"):
        need("tools", "tool_choice")
    elif not request.tool_choice and extra.get("function_call") not in (None, "none"):
        need("tools", "extra_json.function_call")
    if request.HasField("response_format") and request.response_format.type not in ("", "text"):
        need("structured_output", "response_format")
    for name in STRUCTURED_FIELDS:
        if extra.get(name) is not None:
            need("structured_output", f"extra_json.{name}")
    if request.logprobs:
        need("logprobs", "logprobs")
    elif request.HasField("top_logprobs"):
        need("logprobs", "top_logprobs")
    for i, m in enumerate(request.messages):
        if m.tool_calls:
            need("tools", f"messages.{i}.tool_calls")
        elif m.role in ("tool", "function"):
            need("tools", f"messages.{i}.role")
        if m.name or m.tool_call_id:
            need("openai_body", f"messages.{i}." + ("name" if m.name else "tool_call_id"))
        for j, part in enumerate(m.parts):
            if part.type != "text":
                need("vision", f"messages.{i}.parts.{j}")
    # Only an OpenAI-compatible server reads these as sent (the HTTP schema's openai_body).
    for name in _unmodelled(request):
        need("openai_body", name)
    for name in extra:
        if name not in HARMLESS_FIELDS:  # "user" is refused by _extra (routing.user)
            need("openai_body", f"extra_json.{name}")
    return out


def _unmodelled(request: pb.ChatRequest) -> Iterable[str]:
    if request.tools:
        yield "tools"
    if request.tool_choice:
        yield "tool_choice"
    if request.HasField("response_format") and request.response_format.type:
        yield "response_format"
    if request.logprobs:
        yield "logprobs"
    if request.HasField("top_logprobs"):
        yield "top_logprobs"
