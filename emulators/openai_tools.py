"""The vLLM emulator's answers to requests that ask for more than plain text.

Tools, structured output, logprobs, ``n`` choices, batched prompts and
non-text content parts, answered the way vLLM's OpenAI server writes them
(vllm/entrypoints/openai/serving_chat.py and protocol.py in vllm-project/vllm):

- a tool call streams as ``DeltaToolCall`` objects: the first delta of a call
  carries ``index``, ``id`` (``chatcmpl-tool-<hex>``, chat_utils'
  ``random_tool_call_id``), ``type: "function"`` and ``function.name`` with
  empty ``arguments``; the following deltas carry only ``index`` and
  ``function.arguments`` pieces; the choice ends with ``finish_reason:
  "tool_calls"``. The non-streamed message has ``content: null`` and
  ``tool_calls: [ToolCall]``;
- ``response_format`` ``json_object``/``json_schema`` (vLLM's guided decoding)
  yields JSON text: for a schema, an instance built from it;
- chat ``logprobs`` are ``ChatCompletionLogProbs``: ``content`` is a list of
  ``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}``;
  completion logprobs are ``CompletionLogProbs`` (``text_offset``,
  ``token_logprobs``, ``tokens``, ``top_logprobs`` as token → logprob maps);
- ``n`` choices (and one per prompt of a batch, index ``prompt * n + j``) each
  stream with their own ``index``, a role chunk first for every choice;
- image and other content parts are taken (a VLM reads them), rendered into
  the context as ``[image_url]``.

The rule deciding a tool call is deterministic, so tests can predict it:
tools offered, ``tool_choice`` not ``"none"``, and the last message not a
tool result → a call to the named tool, or the first one, with arguments
built from its ``parameters`` schema. Otherwise text from
:mod:`emulators.text`.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from emulators import text
from emulators.openai_wire import SSE_DONE, chunk_envelope, usage

_ARG_PIECE = 8  # characters of JSON per streamed argument / JSON-content delta


def rich(payload: object) -> bool:
    """Whether the request asks for anything :mod:`openai_wire`'s plain path does not do."""
    if not isinstance(payload, dict):
        return False
    if payload.get("tools") and payload.get("tool_choice") != "none":
        return True
    fmt = payload.get("response_format")
    if isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema"):
        return True
    if payload.get("logprobs") or payload.get("top_logprobs"):
        return True
    if isinstance(payload.get("n"), int) and payload["n"] > 1:
        return True
    prompt = payload.get("prompt")
    if isinstance(prompt, list) and (len(prompt) > 1 or (prompt and isinstance(prompt[0], int))):
        return True
    for message in payload.get("messages") or ():
        if not isinstance(message, dict):
            continue
        if message.get("role") == "tool" or message.get("tool_calls"):
            return True
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") != "text" for p in content
        ):
            return True
    return False


def instance(schema: object, depth: int = 0) -> Any:
    """A value that satisfies the common JSON Schema subset clients send."""
    if not isinstance(schema, dict) or depth > 8:
        return "text"
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for union in ("anyOf", "oneOf"):
        if schema.get(union):
            return instance(schema[union][0], depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: instance(sub, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [instance(schema.get("items"), depth + 1)]
    return {"integer": 1, "number": 1.5, "boolean": True, "null": None}.get(str(kind), "text")


def _content_text(content: object) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return ""
    parts = []
    for part in content:
        if isinstance(part, dict):
            kind = part.get("type")
            parts.append(str(part.get("text", "")) if kind == "text" else f"[{kind}]")
    return "\n".join(parts)


class _Choice:
    __slots__ = ("call", "index", "pieces", "reason")

    def __init__(self, index: int, pieces: list[str], call: dict[str, Any] | None, reason: str):
        self.index, self.pieces, self.call, self.reason = index, pieces, call, reason


def _plan(payload: dict[str, Any], chat: bool, default_max: int) -> tuple[list[_Choice], int]:
    limit = payload.get("max_completion_tokens") or payload.get("max_tokens")
    max_tokens = limit if isinstance(limit, int) and limit > 0 else default_max
    asked_n = payload.get("n")
    n: int = asked_n if isinstance(asked_n, int) and asked_n > 0 else 1
    if chat:
        messages = payload.get("messages") or []
        pairs = [(str(m.get("role")), _content_text(m.get("content"))) for m in messages]
        contexts = [text.render_chat(pairs, False)]
    else:
        prompt = payload.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], list | int):
            batch = [prompt] if isinstance(prompt[0], int) else prompt
            contexts = [" ".join(str(t) for t in p) for p in batch]
        else:
            contexts = [str(p) for p in (prompt if isinstance(prompt, list) else [prompt])]
    prompt_tokens = sum(text.count_tokens(c) for c in contexts)
    call = _tool_call(payload) if chat else None
    choices = []
    for p, context in enumerate(contexts):
        for j in range(n):
            index = p * n + j
            if call is not None:
                choices.append(_Choice(index, [], {**call, "id": _call_id()}, "tool_calls"))
                continue
            fmt = payload.get("response_format")
            fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
            if fmt_type in ("json_object", "json_schema"):
                schema = (fmt.get("json_schema") or {}).get("schema") if fmt else None
                value = instance(schema) if fmt_type == "json_schema" else {"text": "ok"}
                doc = orjson.dumps(value).decode()
                pieces = [doc[i : i + _ARG_PIECE] for i in range(0, len(doc), _ARG_PIECE)]
                choices.append(_Choice(index, pieces, None, "stop"))
                continue
            tokens = text.generate(context, max_tokens)
            choices.append(_Choice(index, tokens, None, "length" if limit else "stop"))
    return choices, prompt_tokens


def _tool_call(payload: dict[str, Any]) -> dict[str, Any] | None:
    tools = payload.get("tools")
    choice = payload.get("tool_choice", "auto")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    messages = payload.get("messages") or []
    if messages and isinstance(messages[-1], dict) and messages[-1].get("role") == "tool":
        return None  # the tool answered: now the model speaks
    functions = [t.get("function") or {} for t in tools if isinstance(t, dict)]
    wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    function = next((f for f in functions if f.get("name") == wanted), functions[0])
    arguments = orjson.dumps(instance(function.get("parameters") or {"type": "object"})).decode()
    return {"type": "function", "function": {"name": function.get("name"), "arguments": arguments}}


def _call_id() -> str:
    return "chatcmpl-tool-" + uuid.uuid4().hex


def _top(token: str, k: int, at: int) -> list[dict[str, Any]]:
    return [
        {"token": token if i == 0 else f"{token}~{i}", "logprob": -0.1 * (at + 1) - i}
        | {"bytes": list((token if i == 0 else f"{token}~{i}").encode())}
        for i in range(k)
    ]


def _chat_logprobs(tokens: list[str], start: int, k: int) -> dict[str, Any]:
    return {
        "content": [
            {
                "token": t,
                "logprob": -0.1 * (start + i + 1),
                "bytes": list(t.encode()),
                "top_logprobs": _top(t, k, start + i),
            }
            for i, t in enumerate(tokens)
        ]
    }


def _completion_logprobs(tokens: list[str], start: int, offset: int, k: int) -> dict[str, Any]:
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {
        "text_offset": offsets,
        "token_logprobs": [-0.1 * (start + i + 1) for i in range(len(tokens))],
        "tokens": tokens,
        "top_logprobs": [
            {e["token"]: e["logprob"] for e in _top(t, max(k, 1), start + i)}
            for i, t in enumerate(tokens)
        ],
    }


def _k(payload: dict[str, Any], chat: bool) -> int | None:
    """How many top logprobs per token, or None when logprobs were not asked."""
    if chat:
        if not payload.get("logprobs"):
            return None
        top = payload.get("top_logprobs")
        return top if isinstance(top, int) else 0
    value = payload.get("logprobs")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


async def respond(
    request: web.Request,
    payload: dict[str, Any],
    chat: bool,
    model: str,
    default_max_tokens: int,
    reset_after: int | None,
    *,
    headers: Mapping[str, str] | None = None,
    frame: Callable[[bytes], bytes] | None = None,
) -> tuple[web.StreamResponse, int]:
    """Serve one rich request; the response and the completion tokens it produced.
    ``reset_after``: abort the connection after that many content chunks.
    ``headers`` and ``frame`` let a provider's front door carry the stream in its
    own envelope (SageMaker's event-stream frames around the SSE bytes)."""
    choices, prompt_tokens = _plan(payload, chat, default_max_tokens)
    k = _k(payload, chat)
    completion = sum(len(c.pieces) or 1 for c in choices)
    envelope = chunk_envelope(chat, model)
    if not payload.get("stream"):
        body = {**envelope, "object": "chat.completion" if chat else "text_completion"}
        body["choices"] = [_whole(c, chat, k) for c in choices]
        body["usage"] = usage(prompt_tokens, completion)
        return web.Response(body=orjson.dumps(body), content_type="application/json"), completion
    sse = {"Content-Type": "text/event-stream; charset=utf-8"}
    response = web.StreamResponse(headers=headers or sse)
    await response.prepare(request)

    async def write(data: bytes) -> None:
        await response.write(frame(data) if frame is not None else data)

    async def send(choice: dict[str, Any]) -> None:
        await write(b"data: " + orjson.dumps({**envelope, "choices": [choice]}) + b"\n\n")

    if chat:
        for c in choices:
            role = {"role": "assistant", "content": ""}
            await send({"index": c.index, "delta": role, "logprobs": None, "finish_reason": None})
    sent = 0
    for c in choices:
        for i, piece in enumerate(_stream_pieces(c)):
            if sent == reset_after and request.transport is not None:
                request.transport.abort()
                return response, completion
            sent += 1
            await send(_delta(c, piece, i, chat, k))
        end: dict[str, Any] = {"index": c.index, "logprobs": None, "finish_reason": c.reason}
        if chat:
            end["delta"] = {}
        else:
            end["text"] = ""
        await send(end | {"stop_reason": None})
    options = payload.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage"):
        tail = {**envelope, "choices": [], "usage": usage(prompt_tokens, completion)}
        await write(b"data: " + orjson.dumps(tail) + b"\n\n")
    await write(SSE_DONE)
    return response, completion


def _stream_pieces(choice: _Choice) -> list[Any]:
    if choice.call is None:
        return list(choice.pieces)
    args = choice.call["function"]["arguments"]
    return [None] + [args[i : i + _ARG_PIECE] for i in range(0, len(args), _ARG_PIECE)]


def _delta(c: _Choice, piece: Any, i: int, chat: bool, k: int | None) -> dict[str, Any]:
    if c.call is not None:
        if piece is None:  # the call's first delta: id, type, name
            function = {"name": c.call["function"]["name"], "arguments": ""}
            call = {"index": 0, "id": c.call["id"], "type": "function", "function": function}
        else:
            call = {"index": 0, "function": {"arguments": piece}}
        delta = {"tool_calls": [call]}
        return {"index": c.index, "delta": delta, "logprobs": None, "finish_reason": None}
    if chat:
        logprobs = _chat_logprobs([piece], i, k) if k is not None else None
        delta = {"content": piece}
        return {"index": c.index, "delta": delta, "logprobs": logprobs, "finish_reason": None}
    offset = sum(len(p) for p in c.pieces[:i])
    logprobs = _completion_logprobs([piece], i, offset, k) if k is not None else None
    return {"index": c.index, "text": piece, "logprobs": logprobs, "finish_reason": None}


def _whole(c: _Choice, chat: bool, k: int | None) -> dict[str, Any]:
    out: dict[str, Any] = {"index": c.index}
    if chat:
        if c.call is not None:
            out["message"] = {"role": "assistant", "content": None, "tool_calls": [c.call]}
        else:
            out["message"] = {"role": "assistant", "content": "".join(c.pieces), "tool_calls": []}
        asked = k is not None and c.call is None
        out["logprobs"] = _chat_logprobs(c.pieces, 0, k or 0) if asked else None
    else:
        out["text"] = "".join(c.pieces)
        out["logprobs"] = _completion_logprobs(c.pieces, 0, 0, k) if k is not None else None
    out.update(finish_reason=c.reason, stop_reason=None)
    return out
