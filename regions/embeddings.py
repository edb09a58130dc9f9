"""``/v1/embeddings`` on an OpenAI-compatible server (vLLM's embed task, Hugging Face TEI).

The request's body is the client's, with only ``model`` rewritten to the served
name; ``input`` (a string, strings, token ids), ``encoding_format`` (float or
base64) and ``dimensions`` reach the server as sent. The answer is vLLM's
``EmbeddingResponse`` (vllm/entrypoints/openai/protocol.py in
vllm-project/vllm): ``{"id", "object": "list", "created", "model", "data":
[{"index", "object": "embedding", "embedding": [floats] | "base64"}],
"usage": {"prompt_tokens", "total_tokens"}}``.

An embedding is one answer, not a stream, so it is yielded as the events every
front end already knows: one :class:`TokenDelta` with no text whose ``raw`` is
the whole body (its shape checked), :class:`Usage`, then :class:`Finish`.
Failover, breakers, limits and metrics then work on it as on a generation
(the finish is the "first token": nothing reached the client before it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, TokenDelta, Usage

MAX_EMBEDDINGS_BYTES = 64 << 20
"""An embeddings body is read whole: a batch of 2048 inputs of 1024 floats written
as JSON is about 40 MiB; a peer cannot make the gateway buffer more."""


def body(client_body: dict[str, Any], served_model: str) -> bytes:
    return orjson.dumps({**client_body, "model": served_model})


def check(obj: object, inputs: int) -> tuple[int, int]:
    """The body's (prompt_tokens, total_tokens), or STREAM_BROKEN for a wrong shape."""
    if not isinstance(obj, dict):
        raise _broken("not a JSON object")
    data = obj.get("data")
    if not isinstance(data, list) or len(data) != inputs:
        raise _broken(f"data is not a list of {inputs} embeddings")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or item.get("index", i) != i:
            raise _broken("an embedding out of order")
        vector = item.get("embedding")
        if not isinstance(vector, list | str):
            raise _broken("an embedding is neither floats nor base64")
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    prompt, total = usage.get("prompt_tokens", 0), usage.get("total_tokens", 0)
    for value in (prompt, total):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _broken("usage is not token counts")
    return int(prompt), int(total)


def _broken(why: str) -> BackendError:
    return BackendError(FailureClass.STREAM_BROKEN, f"malformed embeddings body: {why}")


def inputs_of(client_body: dict[str, Any]) -> int:
    value = client_body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


async def events(resp: aiohttp.ClientResponse, inputs: int) -> AsyncIterator[Event]:
    raw = await resp.content.read(MAX_EMBEDDINGS_BYTES + 1)
    while len(raw) <= MAX_EMBEDDINGS_BYTES:
        more = await resp.content.read(MAX_EMBEDDINGS_BYTES + 1 - len(raw))
        if not more:
            break
        raw += more
    if len(raw) > MAX_EMBEDDINGS_BYTES:
        raise _broken(f"over {MAX_EMBEDDINGS_BYTES} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _broken("not JSON") from None
    prompt, _ = check(obj, inputs)
    yield TokenDelta("", raw)
    yield Usage(prompt, 0, None)
    yield Finish("stop", b"")
