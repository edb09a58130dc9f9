"""Validation of OpenAI request bodies into the internal request.

Types are strict (a string where a number belongs is a 400, not a guess) and
the first problem is reported with its JSON path, as OpenAI does. Integers are
bounded (JSON has none, Python's are unbounded, and every backend and the
JSON encoder stop at 64 bits), so ``max_tokens: 1e30`` written out in digits is
a 400 naming the field, not a fault further down. Unknown
fields are ignored, not forwarded: only what is modelled here ever reaches a
backend, so no client-supplied URL or internal knob can leak through.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from regions.request import GenerationRequest, Kind, Message, Residency, Sampling


class BadRequest(ValueError):
    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class _Body(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class TextPart(_Body):
    type: Literal["text"]
    text: str


class ChatMessage(_Body):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class StreamOptions(_Body):
    include_usage: bool = False


Probability = Annotated[float, Field(ge=0.0, le=1.0)]

# Token counts fit a 32-bit count on every backend; a seed is OpenAI's int64.
MAX_TOKENS_LIMIT = 2**31 - 1
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
    n: int | None = Field(None, ge=1, le=1)

    @model_validator(mode="after")
    def _stops(self) -> _Common:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 sequences")
        return self

    def sampling(self) -> Sampling:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        return Sampling(
            max_tokens=self.max_completion_tokens or self.max_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
            presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty,
        )


class ChatBody(_Common):
    messages: list[ChatMessage] = Field(min_length=1)


class CompletionBody(_Common):
    prompt: str | list[str]

    def prompt_text(self) -> str:
        if isinstance(self.prompt, str):
            return self.prompt
        if len(self.prompt) != 1:
            raise BadRequest("prompt: batched prompts are not supported; send one", "prompt")
        return self.prompt[0]


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
    if isinstance(parsed, ChatBody):
        messages = tuple(Message(m.role, m.text()) for m in parsed.messages)
    else:
        prompt = parsed.prompt_text()
    return GenerationRequest(
        kind=kind,
        model=parsed.model,
        request_id=request_id,
        messages=messages,
        prompt=prompt,
        sampling=parsed.sampling(),
        stream=parsed.stream,
        include_usage=bool(parsed.stream_options and parsed.stream_options.include_usage),
        tenant=tenant,
        residency=residency,
        affinity_key=session or parsed.user or key_digest,
    )
