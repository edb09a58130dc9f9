"""``POST /v1/responses``, stateless, by translation to chat completions.

The gateway stores nothing, so it serves the stateless form: ``store`` absent
or false; ``previous_response_id``, ``conversation``, ``background`` and
``store: true`` are a 400 naming the field. The request becomes a chat
completions body (:func:`to_chat`): ``instructions`` a system message,
``input`` messages (``input_text`` and ``input_image`` parts), earlier
``function_call`` items assistant tool calls and ``function_call_output``
items tool results; function ``tools`` and ``tool_choice``; ``text.format``
``response_format``; ``max_output_tokens`` ``max_tokens``. Anything else
asked is refused, never dropped. That body then goes through the chat path
(validation, capability routing, limits, failover), and the chat chunks come
back as the Responses event stream (:class:`Translator`): ``response.created``,
``response.in_progress``, ``response.output_item.added``,
``response.content_part.added``, ``response.output_text.delta``, the
``.done`` events, function-call items with
``response.function_call_arguments.delta``/``.done``, and
``response.completed`` (``response.incomplete`` when cut by the token limit),
each with its ``sequence_number``. A stream that fails after its first event
ends with an ``error`` event in the gateway's words.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from failover.executor import ExecutionFailed
from gateway.http.body import BodyRejected, read_body
from gateway.http.errors import error_response
from gateway.http.refusal import refuse
from gateway.http.schema import BadRequest, parse_request
from gateway.pipeline.core import RESIDENCY_HEADER
from regions.events import Event, StreamError, TokenDelta, Usage
from regions.request import Kind
from routing.plan import RoutingError

log = logging.getLogger("meridian.http")

_STATEFUL = ("previous_response_id", "conversation", "background", "prompt")
_PASSED = {"temperature": "temperature", "top_p": "top_p", "user": "user", "seed": "seed"}
_KNOWN = frozenset(
    {
        "model",
        "input",
        "instructions",
        "stream",
        "store",
        "tools",
        "tool_choice",
        "text",
        "max_output_tokens",
        "parallel_tool_calls",
        "metadata",
        "stream_options",
        *_PASSED,
    }
)


def _fail(message: str, param: str) -> BadRequest:
    return BadRequest(message, param)


def to_chat(body: Any) -> dict[str, Any]:
    """The chat completions body a Responses body asks for; BadRequest for what cannot be."""
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    for name in _STATEFUL:
        if body.get(name) is not None:
            raise _fail(
                f"{name}: this gateway is stateless and keeps no responses or conversations; "
                "send the whole input instead",
                name,
            )
    if body.get("store") is True:
        raise _fail("store: responses are not stored here; send store: false", "store")
    for name in body:
        if name not in _KNOWN:
            raise _fail(f"{name}: not supported by this gateway's Responses API", name)
    chat: dict[str, Any] = {"model": body.get("model")}
    messages: list[dict[str, Any]] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise _fail("instructions: Input should be a valid string", "instructions")
        messages.append({"role": "system", "content": instructions})
    items = body.get("input")
    if isinstance(items, str):
        messages.append({"role": "user", "content": items})
    elif isinstance(items, list):
        for i, item in enumerate(items):
            messages.append(_message(item, f"input.{i}", messages))
    else:
        raise _fail("input: Input should be a valid string or a valid array", "input")
    chat["messages"] = [m for m in messages if m]
    for name, to in _PASSED.items():
        if name in body:
            chat[to] = body[name]
    if body.get("max_output_tokens") is not None:
        chat["max_tokens"] = body["max_output_tokens"]
    if body.get("tools"):
        chat["tools"] = [_tool(t, f"tools.{i}") for i, t in enumerate(body["tools"])]
    if "tool_choice" in body:
        choice = body["tool_choice"]
        if isinstance(choice, dict) and choice.get("type") == "function":
            choice = {"type": "function", "function": {"name": choice.get("name")}}
        chat["tool_choice"] = choice
    if "parallel_tool_calls" in body:
        chat["parallel_tool_calls"] = body["parallel_tool_calls"]
    fmt = (body.get("text") or {}).get("format") if isinstance(body.get("text"), dict) else None
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif isinstance(fmt, dict) and fmt.get("type") == "json_object":
        chat["response_format"] = {"type": "json_object"}
    chat["stream"] = True
    return chat


def _message(item: Any, at: str, messages: list[dict[str, Any]]) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise _fail(f"{at}: an input item is an object", at)
    kind = item.get("type", "message")
    if kind == "function_call":
        call = {
            "id": item.get("call_id"),
            "type": "function",
            "function": {"name": item.get("name"), "arguments": item.get("arguments", "")},
        }
        last = messages[-1] if messages else None
        if last and last.get("role") == "assistant" and last.get("tool_calls"):
            last["tool_calls"].append(call)  # parallel calls: one assistant turn
            return {}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if kind == "function_call_output":
        output = item.get("output")
        result = output if isinstance(output, str) else orjson.dumps(output).decode()
        return {"role": "tool", "tool_call_id": item.get("call_id"), "content": result}
    if kind != "message":
        raise _fail(f"{at}.type: input items of type {kind!r} are not supported", f"{at}.type")
    content = item.get("content")
    if isinstance(content, list):
        content = [_part(p, f"{at}.content.{j}") for j, p in enumerate(content)]
    return {"role": item.get("role"), "content": content}


def _part(part: Any, at: str) -> dict[str, Any]:
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in ("input_text", "output_text"):
        return {"type": "text", "text": part.get("text")}
    if kind == "input_image" and isinstance(part, dict):
        url = part.get("image_url")
        image: dict[str, Any] = {"url": url}
        if part.get("detail") is not None:
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    raise _fail(f"{at}.type: content parts of type {kind!r} are not supported", f"{at}.type")


def _tool(tool: Any, at: str) -> dict[str, Any]:
    if not isinstance(tool, dict) or tool.get("type") != "function":
        kind = tool.get("type") if isinstance(tool, dict) else None
        raise _fail(f"{at}.type: only function tools are supported here, not {kind!r}", at)
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


class Translator:
    """Chat chunk events in, Responses SSE events out; also the final response object."""

    def __init__(self, response_id: str, model: str, body: dict[str, Any]) -> None:
        self.id = response_id
        self.model = model
        self.created = int(time.time())
        self.seq = 0
        self.message_id = "msg_" + uuid.uuid4().hex
        self.text_open = False
        self.text = ""
        self.calls: dict[int, dict[str, Any]] = {}  # tool call index -> item
        self.order: list[tuple[str, int]] = []  # ("message", 0) / ("call", index)
        self.echo = {k: body.get(k) for k in ("instructions", "temperature", "top_p")}
        self.echo["tools"] = body.get("tools") or []
        self.echo["tool_choice"] = body.get("tool_choice", "auto")
        self.echo["metadata"] = body.get("metadata") or {}
        self.usage: Usage | None = None
        self.finish: str | None = None

    def event(self, kind: str, **fields: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"

    def response(self, status: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self.created,
            "status": status,
            "model": self.model,
            "output": self.output() if status != "in_progress" else [],
            "parallel_tool_calls": True,
            "store": False,
            "text": {"format": {"type": "text"}},
            "error": None,
            "incomplete_details": None,
            **self.echo,
        }
        if status == "incomplete":
            out["incomplete_details"] = {"reason": "max_output_tokens"}
        if self.usage is not None and status != "in_progress":
            out["usage"] = {
                "input_tokens": self.usage.prompt_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.usage.total_tokens,
            }
        return out

    def _message_item(self, status: str) -> dict[str, Any]:
        content = []
        if status == "completed" or self.text:
            content = [{"type": "output_text", "text": self.text, "annotations": []}]
        return {
            "id": self.message_id,
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def output(self) -> list[dict[str, Any]]:
        out = []
        for kind, index in self.order:
            out.append(self._message_item("completed") if kind == "message" else self.calls[index])
        return out

    def start(self) -> bytes:
        created = self.response("in_progress")
        return self.event("response.created", response=created) + self.event(
            "response.in_progress", response=created
        )

    def take(self, event: Event) -> bytes:
        """The Responses events one chat event makes (possibly none)."""
        if isinstance(event, Usage):
            self.usage = event
            return b""
        if isinstance(event, StreamError):
            return b""
        out: list[bytes] = []
        deltas: list[dict[str, Any]] = []
        raw = event.raw
        if raw:
            with contextlib.suppress(orjson.JSONDecodeError):
                obj = orjson.loads(raw.removeprefix(b"data: "))
                for choice in obj.get("choices") or () if isinstance(obj, dict) else ():
                    if isinstance(choice, dict):
                        deltas.append(choice.get("delta") or {})
                        self.finish = choice.get("finish_reason") or self.finish
        elif isinstance(event, TokenDelta) and event.text:
            deltas.append({"content": event.text})
        if not isinstance(event, TokenDelta):
            self.finish = getattr(event, "reason", None) or self.finish
        for delta in deltas:
            text = delta.get("content")
            if isinstance(text, str) and text:
                out.append(self._text(text))
            for call in delta.get("tool_calls") or ():
                if isinstance(call, dict):
                    out.append(self._call(call))
        return b"".join(out)

    def _text(self, text: str) -> bytes:
        out = b""
        if not self.text_open:
            self.text_open = True
            self.order.append(("message", 0))
            out += self.event(
                "response.output_item.added",
                output_index=len(self.order) - 1,
                item=self._message_item("in_progress"),
            )
            out += self.event(
                "response.content_part.added",
                item_id=self.message_id,
                output_index=len(self.order) - 1,
                content_index=0,
                part={"type": "output_text", "text": "", "annotations": []},
            )
        self.text += text
        return out + self.event(
            "response.output_text.delta",
            item_id=self.message_id,
            output_index=self._index("message", 0),
            content_index=0,
            delta=text,
            logprobs=[],
        )

    def _index(self, kind: str, index: int) -> int:
        return self.order.index((kind, index))

    def _call(self, call: dict[str, Any]) -> bytes:
        at = call.get("index", 0) if isinstance(call.get("index"), int) else 0
        found = call.get("function")
        function: dict[str, Any] = found if isinstance(found, dict) else {}
        out = b""
        item = self.calls.get(at)
        if item is None:
            item = self.calls[at] = {
                "id": "fc_" + uuid.uuid4().hex,
                "type": "function_call",
                "status": "in_progress",
                "call_id": call.get("id") or "call_" + uuid.uuid4().hex,
                "name": function.get("name") or "",
                "arguments": "",
            }
            self.order.append(("call", at))
            out += self.event(
                "response.output_item.added", output_index=len(self.order) - 1, item=dict(item)
            )
        piece = function.get("arguments")
        if isinstance(piece, str) and piece:
            item["arguments"] += piece
            out += self.event(
                "response.function_call_arguments.delta",
                item_id=item["id"],
                output_index=self._index("call", at),
                delta=piece,
            )
        return out

    def end(self) -> bytes:
        out = b""
        for position, (kind, index) in enumerate(self.order):
            if kind == "message":
                part = {"type": "output_text", "text": self.text, "annotations": []}
                out += self.event(
                    "response.output_text.done",
                    item_id=self.message_id,
                    output_index=position,
                    content_index=0,
                    text=self.text,
                    logprobs=[],
                )
                out += self.event(
                    "response.content_part.done",
                    item_id=self.message_id,
                    output_index=position,
                    content_index=0,
                    part=part,
                )
                item = self._message_item("completed")
            else:
                item = self.calls[index]
                item["status"] = "completed"
                out += self.event(
                    "response.function_call_arguments.done",
                    item_id=item["id"],
                    output_index=position,
                    arguments=item["arguments"],
                )
            out += self.event("response.output_item.done", output_index=position, item=item)
        if self.finish == "length":
            return out + self.event("response.incomplete", response=self.response("incomplete"))
        return out + self.event("response.completed", response=self.response("completed"))


async def responses(request: web.Request) -> web.StreamResponse:
    # api.py registers this handler: its edge helpers are imported when it runs.
    from gateway.http.api import (
        PIPELINE,
        RUNTIME,
        SESSION_HEADER,
        admitted,
        cut_by_drain,
        sent_bytes,
        shutting_down,
        text_header,
    )

    rt = request.app[RUNTIME]
    arrived = time.monotonic()
    pipeline = request.app[PIPELINE]
    request_id = uuid.uuid4().hex
    headers = {"x-request-id": request_id}
    client = request.remote or ""
    caller = admitted(request, pipeline, headers, request_id, client=client, arrived=arrived)
    if isinstance(caller, web.Response):
        return caller
    model = ""
    try:
        body = await read_body(request, rt.config.limits)
        try:
            asked = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"the body is not valid JSON: {exc}") from None
        chat = to_chat(asked)
        gen = parse_request(
            Kind.CHAT,
            orjson.dumps(chat),
            request_id=request_id,
            tenant=caller.tenant.name,
            residency=pipeline.residency(caller, text_header(request, RESIDENCY_HEADER)),
            session=text_header(request, SESSION_HEADER),
            key_digest=caller.key_digest,
        )
        model = gen.model
        plan = pipeline.plan(gen, caller)
    except (BodyRejected, BadRequest, RoutingError) as exc:
        tenant = caller.tenant.name
        return refuse(
            pipeline, exc, request_id, tenant, headers, model=model, client=client, arrived=arrived
        )
    translator = Translator("resp_" + request_id, gen.model, asked)
    execution = pipeline.execution(gen, plan)
    async with pipeline.serving(execution, client=client) as outcome:
        outcome.request_bytes = len(body)  # cross-region transfer (config cost)
        try:
            head = await execution.start()
        except ExecutionFailed as exc:
            outcome.status = exc.status
            outcome.reason = exc.code
            return error_response(
                exc.status, exc.message, exc.code, retry_after=exc.retry_after, headers=headers
            )
        except asyncio.CancelledError:
            if not cut_by_drain(rt.lifecycle):
                raise
            outcome.status = 503
            return shutting_down(headers)
        serving = execution.serving
        if serving is not None:
            headers["x-meridian-backend"] = serving.backend.name
            headers["x-meridian-region"] = serving.backend.region.name
        if not asked.get("stream"):
            failure: StreamError | None = None
            for event in head:
                translator.take(event)
            async for event in execution.events():
                if isinstance(event, StreamError):
                    failure = event
                translator.take(event)
            if failure is not None:
                outcome.status = 502
                return error_response(502, failure.message, failure.code, headers=headers)
            translator.usage = translator.usage or execution.usage
            translator.end()
            final = "incomplete" if translator.finish == "length" else "completed"
            outcome.status = 200
            sent = orjson.dumps(translator.response(final))
            outcome.response_bytes = len(sent)
            return web.Response(body=sent, content_type="application/json", headers=headers)
        response = web.StreamResponse(
            status=200,
            headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"},
        )
        await response.prepare(request)
        status = 200
        try:
            await response.write(translator.start() + b"".join(translator.take(e) for e in head))
            async for event in execution.events():
                if isinstance(event, StreamError):
                    status = 502
                    await response.write(
                        translator.event(
                            "error", code=event.code, message=event.message, param=None
                        )
                    )
                    break
                data = translator.take(event)
                if data:
                    await response.write(data)
            if status == 200:
                translator.usage = translator.usage or execution.usage
                await response.write(translator.end())
            await response.write_eof()
        except ConnectionResetError:
            status = 499
        outcome.status = status
        outcome.response_bytes = sent_bytes(response)
        return response
