"""A non-streamed answer assembled from the stream's chunks, every choice and member kept.

The gateway always streams from its backend; a client that asked for one JSON
body gets the chunks merged the way OpenAI's own SDKs accumulate a stream:
per choice ``index``, content and refusal text concatenated, each tool call
(by its ``index``) given its ``id``, ``type`` and name and its ``arguments``
concatenated, ``logprobs`` entries appended, the last ``finish_reason`` kept.
So tool calls, logprobs and all ``n`` choices reach a non-streaming client as
they reach a streaming one.

Chunks the gateway wrote itself (after a resumption, or from a backend with
another format) carry no upstream bytes: their text is appended to choice 0,
which is the only choice a resumable stream has.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.http.chunks import ChunkWriter, usage_dict
from regions.events import Event, Finish, TokenDelta, Usage
from regions.request import Kind

_MAX_CHOICES = 1024  # indexes are checked by the adapter; this only bounds a bad one


class Assembler:
    __slots__ = ("_choices", "_kind", "system_fingerprint")

    def __init__(self, kind: Kind) -> None:
        self._kind = kind
        self._choices: dict[int, dict[str, Any]] = {}
        self.system_fingerprint: str | None = None

    def _choice(self, index: int) -> dict[str, Any]:
        found = self._choices.get(index)
        if found is None:
            found = self._choices[index] = {"index": index, "finish_reason": None}
            if self._kind is Kind.CHAT:
                found["message"] = {"role": "assistant", "content": None}
            else:
                found["text"] = ""
            found["logprobs"] = None
        return found

    def take(self, event: Event) -> None:
        raw = event.raw if isinstance(event, TokenDelta | Finish) else None
        if raw:
            try:
                obj = orjson.loads(raw.removeprefix(b"data: "))
            except orjson.JSONDecodeError:
                obj = None
            if isinstance(obj, dict):
                self._merge(obj)
                return
        if isinstance(event, TokenDelta) and event.text:
            self._text(self._choice(0), event.text)
        elif isinstance(event, Finish):
            choice = self._choice(0)
            choice["finish_reason"] = choice["finish_reason"] or event.reason

    def _text(self, choice: dict[str, Any], text: str) -> None:
        if self._kind is Kind.CHAT:
            message = choice["message"]
            message["content"] = (message["content"] or "") + text
        else:
            choice["text"] += text

    def _merge(self, obj: dict[str, Any]) -> None:
        fingerprint = obj.get("system_fingerprint")
        if isinstance(fingerprint, str):
            self.system_fingerprint = fingerprint
        for part in obj.get("choices") or ():
            if not isinstance(part, dict):
                continue
            index = part.get("index", 0)
            if not isinstance(index, int) or not 0 <= index < _MAX_CHOICES:
                continue
            choice = self._choice(index)
            if self._kind is Kind.CHAT:
                delta = part.get("delta")
                if isinstance(delta, dict):
                    _merge_delta(choice["message"], delta)
            elif isinstance(part.get("text"), str):
                choice["text"] += part["text"]
            _merge_logprobs(choice, part.get("logprobs"))
            reason = part.get("finish_reason")
            if isinstance(reason, str) and reason:
                choice["finish_reason"] = reason
            stop_reason = part.get("stop_reason")
            if stop_reason is not None:
                choice["stop_reason"] = stop_reason

    def first(self) -> dict[str, Any] | None:
        """Choice 0's message so far (chat), or None before any chunk."""
        choice = self._choices.get(0)
        return None if choice is None else choice.get("message")

    def first_logprobs(self) -> object:
        choice = self._choices.get(0)
        return None if choice is None else choice.get("logprobs")

    def body(self, writer: ChunkWriter, usage: Usage | None) -> bytes:
        choices = [self._choice(i) for i in sorted(self._choices)] or [self._choice(0)]
        for choice in choices:
            choice["finish_reason"] = choice["finish_reason"] or "stop"
            message = choice.get("message")
            if message is not None and message["content"] is None and not message.get("tool_calls"):
                message["content"] = ""
        body: dict[str, Any] = {
            "id": writer.id,
            "object": "chat.completion" if self._kind is Kind.CHAT else "text_completion",
            "created": writer.created,
            "model": writer.model,
            "choices": choices,
        }
        if self.system_fingerprint is not None:
            body["system_fingerprint"] = self.system_fingerprint
        if usage is not None:
            body["usage"] = usage_dict(usage)
        return orjson.dumps(body)


def _merge_delta(message: dict[str, Any], delta: dict[str, Any]) -> None:
    for name in ("content", "refusal", "reasoning_content"):
        piece = delta.get(name)
        if isinstance(piece, str):
            message[name] = (message.get(name) or "") + piece
    calls = delta.get("tool_calls")
    if isinstance(calls, list):
        merged: list[dict[str, Any]] = message.setdefault("tool_calls", [])
        for call in calls:
            if not isinstance(call, dict):
                continue
            at = call.get("index", len(merged))
            if not isinstance(at, int) or not 0 <= at < _MAX_CHOICES:
                continue
            while len(merged) <= at:
                merged.append({"id": None, "type": "function", "function": {"name": None}})
            into = merged[at]
            for key in ("id", "type"):
                if isinstance(call.get(key), str):
                    into[key] = call[key]
            function = call.get("function")
            if isinstance(function, dict):
                target = into["function"]
                if isinstance(function.get("name"), str):
                    target["name"] = function["name"]
                if isinstance(function.get("arguments"), str):
                    target["arguments"] = target.get("arguments", "") + function["arguments"]
        for call in merged:
            call["function"].setdefault("arguments", "")


def _merge_logprobs(choice: dict[str, Any], logprobs: object) -> None:
    """Chat logprobs (``content``/``refusal`` lists) or completion logprobs
    (``tokens``, ``token_logprobs``, ``top_logprobs``, ``text_offset`` lists), appended."""
    if not isinstance(logprobs, dict):
        return
    into = choice["logprobs"]
    if into is None:
        into = choice["logprobs"] = {}
    for key, value in logprobs.items():
        if isinstance(value, list):
            into.setdefault(key, []).extend(value)
        elif key not in into:
            into[key] = value
