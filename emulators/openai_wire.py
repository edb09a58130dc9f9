"""vLLM's OpenAI-compatible wire format, as the emulators speak it.

The bytes the gateway and the stock ``openai`` client see from real vLLM
(reference/protocols.md §5), without any server around them:

- request validation the way vLLM does it (:func:`parse_job`, raising
  :class:`RequestError`): the model, ``stream``/``stream_options``, ``n``,
  ``max_tokens``/``max_completion_tokens``, text-only chat content,
  ``continue_final_message``, the context-length check;
- vLLM's error body (:func:`error_response`);
- the SSE chunks (:class:`StreamFrames`): the role chunk first,
  ``finish_reason`` on the last content chunk, the ``choices: []`` usage
  chunk, then :data:`SSE_DONE`; and the non-streaming body
  (:func:`completion_body`).

It is apart from :mod:`emulators.vllm` (the server: routes, timing,
faults, stats, metrics) because the format is not that server's alone: the
SageMaker and Vertex emulators' vLLM container (:mod:`emulators.containers`)
writes the same chunk envelope, usage and ``[DONE]``, and can reuse the rest.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from emulators import text

SSE_DONE = b"data: [DONE]\n\n"


class RequestError(Exception):
    """A request vLLM would refuse: ``status`` with vLLM's message and ``param``."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param


@dataclass(slots=True)
class CompletionJob:
    """One validated ``/v1/chat/completions`` (``chat``) or ``/v1/completions`` request."""

    chat: bool
    model: str
    context: str
    max_tokens: int
    finish_reason: str
    stream: bool
    include_usage: bool
    prompt_tokens: int


def error_response(
    status: int,
    message: str,
    *,
    err_type: str | None = None,
    param: str | None = None,
    retry_after: float | None = None,
) -> web.Response:
    """vLLM's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    if err_type is None:
        err_type = _error_type(status)
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    headers = {}
    if retry_after is not None:
        # Whole seconds as RFC 9110 wants; fractions kept for fast tests (the
        # gateway and the openai client both parse a float).
        headers["Retry-After"] = (
            str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        )
    return web.Response(
        status=status, body=orjson.dumps(body), content_type="application/json", headers=headers
    )


def _error_type(status: int) -> str:
    """vLLM-style error type from the status: 429 -> ``TooManyRequestsError``."""
    try:
        phrase = "".join(c for c in HTTPStatus(status).phrase if c.isalnum())
    except ValueError:
        return "HTTPError"
    return phrase if phrase.endswith("Error") else phrase + "Error"


# -- requests ------------------------------------------------------------------------


def _opt(payload: dict[str, Any], key: str, kind: type, default: Any) -> Any:
    value = payload.get(key)
    if value is None:
        return default
    # bool is an int: reject it where a number is expected, as pydantic does.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise RequestError(400, f"'{key}' must be of type {kind.__name__}", key)
    return value


def _content(value: Any, index: int) -> str:
    if value is None or isinstance(value, str):
        return value or ""
    if isinstance(value, list):
        parts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise RequestError(400, "only text content parts are supported", "messages")
            if not isinstance(part.get("text"), str):
                raise RequestError(400, f"messages[{index}]: text part without text", "messages")
            parts.append(part["text"])
        return "\n".join(parts)
    raise RequestError(400, f"messages[{index}].content must be a string or a list", "messages")


def _chat_context(payload: dict[str, Any]) -> str:
    messages = payload.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestError(400, "'messages' must be a non-empty list", "messages")
    pairs: list[tuple[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(400, f"messages[{i}] must be an object with a role", "messages")
        pairs.append((message["role"], _content(message.get("content"), i)))
    continue_final = _opt(payload, "continue_final_message", bool, False)
    if continue_final and _opt(payload, "add_generation_prompt", bool, True):
        raise RequestError(
            400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True."
        )
    if continue_final and pairs[-1][0] != "assistant":
        raise RequestError(400, "continue_final_message needs a final assistant message")
    return text.render_chat(pairs, continue_final)


def _prompt(payload: dict[str, Any]) -> str:
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1:
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise RequestError(400, "'prompt' must be a non-empty string", "prompt")
    return prompt


def parse_job(
    payload: Any,
    chat: bool,
    *,
    served_models: tuple[str, ...],
    default_max_tokens: int,
    max_model_len: int,
) -> CompletionJob:
    """Validate a request body the way vLLM does; raise :class:`RequestError` otherwise.

    No ``model`` means the first of ``served_models``. Without a client limit
    the job stops at ``default_max_tokens`` (as if the model emitted EOS,
    ``finish_reason="stop"``); with one it ends with ``"length"``.
    """
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object")
    model = payload.get("model")
    if model is None:
        model = served_models[0]
    elif not isinstance(model, str):
        raise RequestError(400, "'model' must be a string", "model")
    elif model not in served_models:
        raise RequestError(404, f"The model `{model}` does not exist.", "model")
    stream = _opt(payload, "stream", bool, False)
    options = _opt(payload, "stream_options", dict, None)
    if options is not None and not stream:
        raise RequestError(400, "Stream options can only be defined when `stream=True`.")
    include_usage = _opt(options or {}, "include_usage", bool, False)
    if _opt(payload, "n", int, 1) != 1:
        raise RequestError(400, "the emulator supports only n=1", "n")
    limit = _opt(payload, "max_completion_tokens", int, None) if chat else None
    if limit is None:
        limit = _opt(payload, "max_tokens", int, None)
    if limit is not None and limit < 1:
        raise RequestError(400, f"max_tokens must be at least 1, got {limit}.", "max_tokens")
    context = _chat_context(payload) if chat else _prompt(payload)
    prompt_tokens = text.count_tokens(context)
    room = max_model_len - prompt_tokens
    if room <= 0 or (limit is not None and limit > room):
        asked = prompt_tokens + (limit or 0)
        raise RequestError(
            400,
            f"This model's maximum context length is {max_model_len} tokens. "
            f"However, you requested {asked} tokens ({prompt_tokens} in the input, "
            f"{limit or 0} in the output). Please reduce the length of the input.",
        )
    # No client limit: stop at default_max_tokens as if the model emitted EOS.
    if limit is not None:
        max_tokens, reason = limit, "length"
    else:
        max_tokens, reason = min(default_max_tokens, room), "stop"
    return CompletionJob(
        chat, model, context, max_tokens, reason, stream, include_usage, prompt_tokens
    )


# -- responses -----------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """The ``usage`` object, in vLLM's field order."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
    }


def chunk_envelope(chat: bool, model: str) -> dict[str, Any]:
    """A new response's ``id``, chunk ``object``, ``created`` and ``model``, in that order."""
    return {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
        "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
    }


class StreamFrames:
    """One request's SSE chunks as byte fragments around the token's JSON string.

    A content chunk is ``head + orjson.dumps(token) + (last or tail)``, with
    ``first`` (the role chunk, chat only) before the first one. Field order
    and nulls follow vLLM: chat chunks are dumped with ``exclude_unset``
    (``"usage": null`` only with include_usage, ``stop_reason`` only on the
    finishing chunk); completion chunks with ``exclude_unset=False`` (every
    field present).
    """

    __slots__ = ("envelope", "first", "head", "last", "tail")

    def __init__(self, job: CompletionJob, envelope: dict[str, Any]) -> None:
        self.envelope = b"data: " + orjson.dumps(envelope)[:-1]
        reason = orjson.dumps(job.finish_reason)
        end = (b',"usage":null' if job.include_usage or not job.chat else b"") + b"}\n\n"
        if job.chat:
            self.first = (
                self.envelope
                + b',"choices":[{"index":0,"delta":{"role":"assistant","content":""},'
                + b'"logprobs":null,"finish_reason":null}]'
                + end
            )
            self.head = self.envelope + b',"choices":[{"index":0,"delta":{"content":'
            self.tail = b'},"logprobs":null,"finish_reason":null}]' + end
            self.last = (
                b'},"logprobs":null,"finish_reason":' + reason + b',"stop_reason":null}]' + end
            )
        else:
            self.first = b""
            self.head = self.envelope + b',"choices":[{"index":0,"text":'
            self.tail = b',"logprobs":null,"finish_reason":null,"stop_reason":null}]' + end
            self.last = (
                b',"logprobs":null,"finish_reason":' + reason + b',"stop_reason":null}]' + end
            )

    def usage(self, job: CompletionJob, completion: int) -> bytes:
        return (
            self.envelope
            + b',"choices":[],"usage":'
            + orjson.dumps(usage(job.prompt_tokens, completion))
            + b"}\n\n"
        )


def completion_body(job: CompletionJob, tokens: list[str]) -> bytes:
    """The non-streaming answer: a ``chat.completion`` or ``text_completion`` object."""
    content = "".join(tokens)
    obj = "chat.completion" if job.chat else "text_completion"
    body: dict[str, Any] = {**chunk_envelope(job.chat, job.model), "object": obj}
    choice: dict[str, Any] = {"index": 0}
    if job.chat:
        choice["message"] = {"role": "assistant", "content": content, "tool_calls": []}
    else:
        choice["text"] = content
    choice.update(logprobs=None, finish_reason=job.finish_reason, stop_reason=None)
    body["choices"] = [choice]
    body["usage"] = {**usage(job.prompt_tokens, len(tokens)), "prompt_tokens_details": None}
    return orjson.dumps(body)
