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

Backends with a native format (SageMaker's TEI container,
``regions.sagemaker_tei``; Vertex's Google models, ``regions.vertex_embeddings``)
are given the fields their format carries, a 400 naming any other
(:func:`refuse_unknown`), and their vectors come back in this same body
(:func:`openai_body`), ``encoding_format: base64`` encoded here from the floats.
"""

from __future__ import annotations

import asyncio
import base64
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from typing import Any, NamedTuple

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
        raise malformed("not a JSON object")
    data = obj.get("data")
    if not isinstance(data, list) or len(data) != inputs:
        raise malformed(f"data is not a list of {inputs} embeddings")
    for i, item in enumerate(data):
        if not isinstance(item, dict) or item.get("index", i) != i:
            raise malformed("an embedding out of order")
        vector = item.get("embedding")
        if not isinstance(vector, list | str):
            raise malformed("an embedding is neither floats nor base64")
    usage = obj.get("usage")
    if not isinstance(usage, dict):
        return 0, 0
    prompt, total = usage.get("prompt_tokens", 0), usage.get("total_tokens", 0)
    for value in (prompt, total):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise malformed("usage is not token counts")
    return int(prompt), int(total)


def malformed(why: str) -> BackendError:
    return BackendError(FailureClass.STREAM_BROKEN, f"malformed embeddings body: {why}")


def inputs_of(client_body: dict[str, Any]) -> int:
    value = client_body.get("input")
    if isinstance(value, list) and value and not isinstance(value[0], int):
        return len(value)
    return 1


class ReadBudget:
    """Bytes the answers to one embedding request may still bring: the native
    requests of a translated batch share :data:`MAX_EMBEDDINGS_BYTES`, so a batch of
    64 calls cannot make the gateway buffer 64 times the cap."""

    def __init__(self) -> None:
        self.left = MAX_EMBEDDINGS_BYTES

    def take(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise malformed(f"over {MAX_EMBEDDINGS_BYTES} bytes")


async def read_whole(resp: aiohttp.ClientResponse, budget: ReadBudget | None = None) -> bytes:
    """The whole body, within ``budget`` (by default a cap of its own; else STREAM_BROKEN)."""
    budget = budget or ReadBudget()
    pieces: list[bytes] = []
    # each piece is taken from the budget as it arrives: concurrent reads overshoot
    # it by at most one socket read each
    async for piece in resp.content.iter_any():
        budget.take(len(piece))
        pieces.append(piece)
    return b"".join(pieces)


async def events(resp: aiohttp.ClientResponse, inputs: int) -> AsyncIterator[Event]:
    raw = await read_whole(resp)
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise malformed("not JSON") from None
    prompt, _ = check(obj, inputs)
    for event in answered(raw, prompt):
        yield event


def answered(raw: bytes, prompt_tokens: int) -> Iterator[Event]:
    """The events of one whole answer (module docstring)."""
    yield TokenDelta("", raw)
    yield Usage(prompt_tokens, 0, None)
    yield Finish("stop", b"")


OPENAI_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})
"""What an OpenAI embeddings body may carry (``user`` names the caller's end user for
OpenAI's abuse monitoring; it asks nothing of the model, so a native format need not
carry it)."""


def refuse_unknown(body: dict[str, Any], native: Collection[str], backend: str) -> None:
    """A CLIENT error naming the first member neither OpenAI's nor the backend's format
    carries: a translated request must not lose a field in silence."""
    for name in body:
        if name not in OPENAI_FIELDS and name not in native:
            raise refused(backend, name, "is not a field of this backend's embeddings API")


def refused(backend: str, name: str, why: str) -> BackendError:
    # failover.failure.client_error shows the client what follows the first ": "
    return BackendError(FailureClass.CLIENT, f"backend {backend}: '{name}' {why}", status=400)


def texts(value: object) -> list[str] | None:
    """``input`` as a list of strings, or None when it is token ids."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def prompt_estimate(value: object) -> int:
    """Tokens in ``input`` for a backend that reports none: token ids are counted,
    text is taken at about four characters a token (failover.usage's rule)."""
    if isinstance(value, str):
        return max(1, -(-len(value) // 4))
    if isinstance(value, list):
        if value and all(isinstance(v, int) for v in value):
            return len(value)
        return sum(prompt_estimate(v) for v in value)
    return 0


def openai_body(vectors: list[list[float]], encoding_format: object, prompt_tokens: int) -> bytes:
    """OpenAI's ``CreateEmbeddingResponse`` for ``vectors`` (``model`` is set by the
    front end); base64 is the float32 little-endian bytes, as OpenAI's and vLLM's."""
    b64 = encoding_format == "base64"
    data = [
        {
            "index": i,
            "object": "embedding",
            "embedding": base64.b64encode(struct.pack(f"<{len(v)}f", *v)).decode() if b64 else v,
        }
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return orjson.dumps({"object": "list", "model": "", "data": data, "usage": usage})


FLOAT32_MAX = 3.4028234663852886e38


def floats(value: object) -> list[float] | None:
    """``value`` as one vector of float32 numbers, or None (an embedding is float32:
    a larger number is no embedding and cannot be base64 encoded)."""
    if not isinstance(value, list) or not value:
        return None
    if not all(isinstance(v, float | int) and not isinstance(v, bool) for v in value):
        return None
    found = [float(v) for v in value]
    if not all(-FLOAT32_MAX <= v <= FLOAT32_MAX for v in found):
        return None
    return found


def same_size(vectors: Sequence[Sequence[float]], dimensions: object) -> None:
    """STREAM_BROKEN unless every vector has one size, ``dimensions`` when asked: the
    calls of one batch may reach different models (two variants of an endpoint)."""
    sizes = {len(v) for v in vectors}
    if len(sizes) > 1:
        raise malformed(f"vectors of {len(sizes)} different sizes")
    if isinstance(dimensions, int) and sizes and sizes != {dimensions}:
        raise malformed(f"vectors of {sizes.pop()} dimensions, {dimensions} asked")


class Batch(NamedTuple):
    """One native request body and how many of the client's inputs it carries."""

    body: bytes
    inputs: int


def batches(
    items: Sequence[Any], most: int, size: Callable[[Any], int], budget: int
) -> list[list[Any]]:
    """``items`` in order, in runs of at most ``most`` whose ``size`` sums to at most
    ``budget`` (an item over it alone)."""
    runs: list[list[Any]] = [[]]
    used = 0
    for item in items:
        if runs[-1] and (len(runs[-1]) == most or used + size(item) > budget):
            runs.append([])
            used = 0
        runs[-1].append(item)
        used += size(item)
    return runs


SEND_CONCURRENCY = 8
"""Native requests one embedding request may have in flight."""


async def send_all(
    bodies: Sequence[bytes], send: Callable[[bytes], Awaitable[bytes]]
) -> list[bytes]:
    """Each body's answer, in order, at most SEND_CONCURRENCY in flight; the first
    failure cancels the rest and is the whole attempt's (no half-made answer)."""
    if len(bodies) == 1:
        return [await send(bodies[0])]
    slots = asyncio.Semaphore(SEND_CONCURRENCY)

    async def one(body: bytes) -> bytes:
        async with slots:
            return await send(body)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(body)) for body in bodies]
    except* Exception as failed:
        # the first failure as a single call raises it: the executor knows no groups
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]


async def translated(
    batches: Sequence[Batch],
    send: Callable[[bytes, ReadBudget], Awaitable[bytes]],
    answer: Callable[[list[tuple[bytes, int]]], tuple[bytes, int]],
) -> AsyncIterator[Event]:
    """A client's batch in a native format: its ``batches`` sent by :func:`send_all`
    under one read budget (the answers together, not each), joined by ``answer``
    (each native answer with its input count) into the OpenAI body and its tokens."""
    budget = ReadBudget()
    raws = await send_all([b.body for b in batches], lambda body: send(body, budget))
    body, tokens = answer([(raw, b.inputs) for raw, b in zip(raws, batches, strict=True)])
    for event in answered(body, tokens):
        yield event
