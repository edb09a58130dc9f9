"""The vLLM emulator's ``/v1/embeddings``, answering as vLLM's embed task does.

vLLM's ``EmbeddingResponse`` (vllm/entrypoints/openai/protocol.py in
vllm-project/vllm): ``id`` (``embd-<hex>``), ``object: "list"``, ``created``,
``model``, ``data`` of ``{"index", "object": "embedding", "embedding"}`` and
``usage`` ``{"prompt_tokens", "total_tokens", "completion_tokens": 0}``. With
``encoding_format: "base64"`` each embedding is the float32 little-endian
bytes in base64 (serving_embedding.py's ``_get_embedding``); ``dimensions``
truncates a Matryoshka embedding and renormalises it. ``input`` is a string,
strings, token ids or lists of token ids.

The vector is a pure function of the input (its SHA-256 stretched to the
dimension and normalised), so a test can compute what it must receive.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
import time
import uuid
from typing import Any

from emulators import text
from emulators.openai_wire import RequestError

DEFAULT_DIMENSIONS = 16


def vector(item: str | list[int], dimensions: int = DEFAULT_DIMENSIONS) -> list[float]:
    seed = item if isinstance(item, str) else ",".join(str(t) for t in item)
    raw: list[float] = []
    counter = 0
    while len(raw) < dimensions:
        digest = hashlib.sha256(f"{counter}:{seed}".encode()).digest()
        raw.extend((b - 127.5) / 127.5 for b in digest)
        counter += 1
    raw = raw[:dimensions]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


def encode_base64(values: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


def answer(payload: Any, model: str) -> dict[str, Any]:
    if not isinstance(payload, dict):
        raise RequestError(400, "request body must be a JSON object")
    value = payload.get("input")
    items: list[str | list[int]]
    ids = isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)
    if isinstance(value, str) or ids:
        items = [value]  # type: ignore[list-item]
    elif isinstance(value, list) and value and all(isinstance(v, str | list) for v in value):
        items = list(value)
    else:
        raise RequestError(400, "'input' must be a string, strings or token ids", "input")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 1):
        raise RequestError(400, "'dimensions' must be a positive integer", "dimensions")
    fmt = payload.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise RequestError(400, f"encoding_format {fmt!r} is not supported", "encoding_format")
    data = []
    tokens = 0
    for index, item in enumerate(items):
        floats = vector(item, dimensions or DEFAULT_DIMENSIONS)
        tokens += text.count_tokens(item) if isinstance(item, str) else len(item)
        embedding: list[float] | str = encode_base64(floats) if fmt == "base64" else floats
        data.append({"index": index, "object": "embedding", "embedding": embedding})
    return {
        "id": "embd-" + uuid.uuid4().hex,
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }
