"""Validation of OpenAI request bodies into the internal request.

Types are strict (a string where a number belongs is a 400, not a guess) and
the first problem is reported with its JSON path, as OpenAI does. Integers are
bounded (JSON has none, Python's are unbounded, and every backend and the
JSON encoder stop at 64 bits), so ``max_tokens: 1e30`` written out in digits is
a 400 naming the field, not a fault further down.

Only what the gateway must understand is validated (model, stream, token
limits, sampling bounds, message shape); every other field (tools,
``response_format``, ``logprobs``, ``top_k`` and vLLM's extras, content
parts) is kept in the client's body, which an OpenAI-compatible backend gets
with only the gateway's own fields rewritten. :func:`needs` says which
capability each such field asks of a backend, so routing sends the request
only where it is honoured and refuses it with a 400 naming the field when it
is honoured nowhere, never a 200 without it.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from regions.request import GenerationRequest, Kind, Message, Residency, Sampling
from routing.affinity import opening_of, split_key
from routing.capabilities import HARMLESS_FIELDS, STRUCTURED_FIELDS, unresumable


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class ContentPart(_Body):
    """One content part: ``text``, or any other type (``image_url``, ``input_audio``...)
    whose members the backend reads; only a text part's text is checked here."""

    model_config = ConfigDict(strict=True, extra="allow", frozen=True)
    type: str = Field(min_length=1, max_length=64)
    text: str | None = None

    @model_validator(mode="after")
    def _text(self) -> ContentPart:
        if self.type == "text" and self.text is None:
            raise ValueError("a text part needs its text")
        return self


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(_Body):
    include_usage: bool = False


Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# Token counts fit a 32-bit count on every backend; a seed is OpenAI's int64.
MAX_TOKENS_LIMIT = 2**31 - 1
MAX_CHOICES = 16  # n: each choice is a whole generation on one backend
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


class _Common(_Body):
    model: str = Field(min_length=1, max_length=256)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: Probability | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=SEED_MIN, le=SEED_MAX)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    user: str | None = Field(None, max_length=256)
    n: int | None = Field(None, ge=1, le=MAX_CHOICES)

    @model_validator(mode="after")
    def _stops(self) -> _Common:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 sequences")
        return self

    def sampling(self) -> Sampling:
        stop = self.stop
        return Sampling(  # positional, in Sampling's field order: cheaper than keywords
            self.max_completion_tokens or self.max_tokens,
            self.temperature,
            self.top_p,
            () if stop is None else (stop,) if isinstance(stop, str) else tuple(stop),
            self.seed,
            self.presence_penalty,
            self.frequency_penalty,
        )


class ChatBody(_Common):
    messages: list[ChatMessage] = Field(min_length=1)


MAX_PROMPTS = 64  # a batched prompt: one generation per entry (times n)


class CompletionBody(_Common):
    prompt: str | list[str] | list[int] | list[list[int]]

    @model_validator(mode="after")
    def _batch(self) -> CompletionBody:
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt: send at least one prompt")
        if self.prompts() > MAX_PROMPTS:
            raise ValueError(f"prompt: at most {MAX_PROMPTS} prompts in a batch")
        return self

    def prompts(self) -> int:
        """How many prompts the batch holds (a token array is one prompt)."""
        if isinstance(self.prompt, str) or not self.prompt:
            return 1
        return 1 if isinstance(self.prompt[0], int) else len(self.prompt)

    def prompt_text(self) -> str:
        """The text of the prompt for routing and for backends that take text only:
        the batch's strings joined (token arrays have no text here)."""
        if isinstance(self.prompt, str):
            return self.prompt
        return "".join(p for p in self.prompt if isinstance(p, str))


def _is_union_member(part: str | int) -> bool:
    """A location step that names a union member (``str``, ``list[TextPart]``), not a
    field: pydantic puts one in the path of each alternative it tried. Field names
    here are all lowercase identifiers."""
    return isinstance(part, str) and (
        part in ("str", "int", "float", "bool") or "[" in part or part[:1].isupper()
    )


def _path(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(p) for p in loc if not _is_union_member(p))


def _first_error(exc: ValidationError) -> BadRequest:
    errors = exc.errors(include_url=False)
    err = errors[0]
    path = _path(err["loc"])
    if err["type"] == "json_invalid":
        return BadRequest(f"the body is not valid JSON: {err['msg']}")
    if not err["loc"] and err["type"] in ("model_type", "model_attributes_type"):
        return BadRequest("the body must be a JSON object")
    if err["type"] == "missing":
        return BadRequest(f"missing required parameter: '{path}'", path)
    msg = err["msg"].removeprefix("Value error, ")
    if any(_is_union_member(p) for p in err["loc"]):
        # One value failed every alternative of a union: the alternative that got
        # deepest matched its shape and says what is wrong inside it; when none
        # got past the value itself, the message lists what it may be.
        same = [e for e in errors if _path(e["loc"]).startswith(path)]
        deepest = max(same, key=lambda e: len(_path(e["loc"])))
        if _path(deepest["loc"]) != path:
            path, msg = _path(deepest["loc"]), deepest["msg"]
        else:
            wanted = [e["msg"].removeprefix("Input should be ") for e in same]
            msg = "Input should be " + " or ".join(dict.fromkeys(wanted))
    return BadRequest(f"{path}: {msg}" if path else msg, path or None)


def parse_request(
    kind: Kind,
    body: bytes,
    *,
    request_id: str,
    tenant: str,
    residency: Residency,
    session: str | None,
    key_digest: str,
) -> GenerationRequest:
    """Validate ``body`` (raw bytes, UTF-8 JSON) into a GenerationRequest or raise BadRequest."""
    try:
        parsed: ChatBody | CompletionBody
        if kind is Kind.CHAT:
            parsed = ChatBody.model_validate_json(body)
        else:
            parsed = CompletionBody.model_validate_json(body)
    except ValidationError as exc:
        raise _first_error(exc) from None
    messages: tuple[Message, ...] = ()
    prompt = ""
    choices = parsed.n or 1
    if isinstance(parsed, ChatBody):
        messages = tuple(
            [
                Message(m.role, c if isinstance(c := m.content, str) else m.text())
                for m in parsed.messages
            ]
        )
    else:
        prompt = parsed.prompt_text()
        choices *= parsed.prompts()
    raw = load_object(body)
    asked = needs(raw, kind)
    stream_options = parsed.stream_options
    return GenerationRequest(
        kind=kind,
        model=parsed.model,
        request_id=request_id,
        messages=messages,
        prompt=prompt,
        sampling=parsed.sampling(),
        stream=parsed.stream,
        include_usage=stream_options is not None and stream_options.include_usage,
        tenant=tenant,
        residency=residency,
        affinity_key=split_key(
            session=session,
            user=parsed.user,
            key_digest=key_digest,
            opening=opening_of([(m.role, m.content) for m in messages], prompt),
            request_id=request_id,
        ),
        body=raw,
        needs=asked,
        unresumable=unresumable(asked) if asked else "",
        choices=choices,
    )


def load_object(body: bytes) -> dict[str, Any]:
    """The body as the backend will get it. Validation above read it as JSON already,
    but orjson is stricter on numbers (a float beyond double range, in a field the
    gateway does not model): such a body is the client's 400 too."""
    try:
        raw = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"the body is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise BadRequest("the body must be a JSON object")
    return raw


MODELLED = frozenset(
    {
        "model",
        "messages",
        "prompt",
        "stream",
        "stream_options",
        "max_tokens",
        "max_completion_tokens",
        "temperature",
        "top_p",
        "stop",
        "seed",
        "presence_penalty",
        "frequency_penalty",
        "n",
    }
)
"""Fields every adapter translates (into a native payload where it must)."""


_PLAIN = MODELLED | HARMLESS_FIELDS
"""A body of only these fields asks nothing through its top-level fields (the
common request): :func:`needs` then skips every check of the others."""


def needs(body: dict[str, Any], kind: Kind) -> dict[str, str]:
    """Capability -> the first field that asks it (see GenerationRequest.needs)."""
    out: dict[str, str] = {}
    need = out.setdefault  # need(capability, field): the first field that asks it stays
    plain = body.keys() <= _PLAIN
    if not plain:
        for name in ("tools", "functions"):
            if body.get(name):
                need("tools", name)
        choice = body.get("tool_choice", body.get("function_call"))
        if choice not in (None, "none"):
            need("tools", "tool_choice" if "tool_choice" in body else "function_call")
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") not in (None, "text"):
            need("structured_output", "response_format")
        for name in STRUCTURED_FIELDS:
            if body.get(name) is not None:
                need("structured_output", name)
        if body.get("logprobs") not in (None, False) or body.get("top_logprobs") is not None:
            need("logprobs", "logprobs" if body.get("logprobs") is not None else "top_logprobs")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        need("multiple_choices", "n")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not isinstance(prompt[0], str):
        need("openai_body", "prompt")  # token ids: only an OpenAI-compatible server reads them
    if isinstance(prompt, list) and len(prompt) > 1 and not isinstance(prompt[0], int):
        need("multiple_choices", "prompt")
    messages = body.get("messages")  # validated for chat only: any JSON on other routes
    for i, message in enumerate(messages if isinstance(messages, list) else ()):
        if not isinstance(message, dict):
            continue
        get = message.get
        tool_calls = get("tool_calls")
        if tool_calls or get("role") in ("tool", "function"):
            need("tools", f"messages.{i}." + ("tool_calls" if tool_calls else "role"))
        if get("name") is not None or get("tool_call_id") is not None:
            need(
                "openai_body", f"messages.{i}." + ("name" if "name" in message else "tool_call_id")
            )
        content = get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if isinstance(part, dict) and part.get("type") != "text":
                    need("vision", f"messages.{i}.content.{j}")
    if not plain:
        for name in body:
            if name not in MODELLED and name not in HARMLESS_FIELDS:
                need("openai_body", name)
    return out
