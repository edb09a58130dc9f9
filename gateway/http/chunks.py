"""OpenAI wire chunks the gateway writes itself.

Used when the upstream's own bytes cannot be forwarded: a different upstream
format, a usage total across attempts, the terminal error event, and the
non-streaming response assembled from a stream. One :class:`ChunkWriter` per
response keeps ``id``, ``created`` and ``model`` constant for the whole stream.
"""

from __future__ import annotations

import time

import orjson

from regions.events import Usage
from regions.request import Kind

DONE = b"data: [DONE]\n\n"


class ChunkWriter:
    __slots__ = ("_object", "created", "id", "kind", "model")

    def __init__(self, kind: Kind, request_id: str, model: str) -> None:
        self.kind = kind
        self.id = ("chatcmpl-" if kind is Kind.CHAT else "cmpl-") + request_id
        self.model = model
        self.created = int(time.time())
        self._object = "chat.completion.chunk" if kind is Kind.CHAT else "text_completion"

    def _event(self, payload: dict[str, object]) -> bytes:
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    def _choice(
        self, text: str | None, finish: str | None, role: bool = False
    ) -> dict[str, object]:
        if self.kind is Kind.CHAT:
            delta: dict[str, str] = {}
            if role:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish}

    def chunk(self, text: str | None, finish: str | None = None, role: bool = False) -> bytes:
        return self._event(
            {
                "id": self.id,
                "object": self._object,
                "created": self.created,
                "model": self.model,
                "choices": [self._choice(text, finish, role)],
            }
        )

    def usage(self, usage: Usage) -> bytes:
        return self._event(
            {
                "id": self.id,
                "object": self._object,
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage_dict(usage),
            }
        )

    def complete(self, text: str, finish: str, usage: Usage | None) -> bytes:
        """The non-streaming response object."""
        if self.kind is Kind.CHAT:
            choice: dict[str, object] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
            obj = "text_completion"
        body: dict[str, object] = {
            "id": self.id,
            "object": obj,
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        }
        if usage is not None:
            body["usage"] = usage_dict(usage)
        return orjson.dumps(body)


def usage_dict(usage: Usage) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def error_event(message: str, code: str, status: int = 502) -> bytes:
    """The terminal event of a failed stream; the stock ``openai`` client raises on it."""
    err = {"message": message, "type": "api_error", "param": None, "code": code}
    return b"data: " + orjson.dumps({"error": err, "status": status}) + b"\n\n"
