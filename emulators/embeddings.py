"""The vLLM emulator's ``/v1/embeddings``, answering as vLLM's embed task does.

vLLM's ``EmbeddingResponse`` (vllm/entrypoints/openai/protocol.py in
vllm-project/vllm): ``id`` (``embd-<hex>``), ``object: "list"``, ``created``,
``model``, ``data`` of ``{"index", "object": "embedding", "embedding"}`` and
``usage`` ``{"prompt_tokens", "total_tokens", "completion_tokens": 0}``. With
``encoding_format: "base64"`` each embedding is the float32 little-endian
bytes in base64 (serving_embedding.py's ``_get_embedding``); ``dimensions``
truncates a Matryoshka embedding and renormalises it. ``input`` is a string,
strings, token ids or lists of token ids.

:func:`tei_answer` answers as Hugging Face TEI's native ``/invocations`` does
(the SageMaker emulator's ``tei`` container), :func:`vertex_answer` as
``:predict`` on a Google text-embedding model (the Vertex emulator's
``publishers/google/models/{model}:predict``).

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

import orjson

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


TEI_MAX_INPUT_TOKENS = 512  # bge-small's max_position_embeddings, TEI's default limit
TEI_MAX_BATCH = 32  # TEI's --max-client-batch-size default
TEI_PAYLOAD_LIMIT = 2_000_000  # TEI's --payload-limit default (router/src/main.rs)


def tei_error(status: int, error: str, error_type: str) -> RequestError:
    """TEI's ``ErrorResponse`` body (router/src/lib.rs in
    huggingface/text-embeddings-inference), carried as the message."""
    body = orjson.dumps({"error": error, "error_type": error_type}).decode()
    return RequestError(status, body)


def tei_answer(payload: Any, auto_truncate: bool = True) -> list[list[float]]:
    """TEI's ``embed`` handler (router/src/http/server.rs): ``EmbedRequest`` in, a
    bare list of vectors out; ``dimensions`` truncates and ``normalize`` (default
    true) renormalises; ``truncate`` unset or null is the server's ``--auto-truncate``,
    true by default (router/src/main.rs); validation errors are 422
    (``From<&ErrorType>``), an empty batch 400. Unknown members are ignored, as serde
    does by default."""
    if not isinstance(payload, dict) or "inputs" not in payload:
        # axum's Json rejection: plain text, 422
        raise RequestError(422, "Failed to deserialize the JSON body: missing field `inputs`")
    value = payload["inputs"]
    ids = isinstance(value, list) and bool(value) and all(isinstance(t, int) for t in value)
    if isinstance(value, str) or ids:
        items: list[str | list[int]] = [value]
    elif isinstance(value, list) and all(isinstance(v, str | list) for v in value):
        items = list(value)
        if not items:
            raise tei_error(400, "`inputs` cannot be empty", "empty")
        if len(items) > TEI_MAX_BATCH:
            message = f"batch size {len(items)} > maximum allowed batch size {TEI_MAX_BATCH}"
            raise tei_error(422, message, "validation")
    else:
        raise RequestError(422, "Failed to deserialize the JSON body: data did not match Input")
    truncate = payload.get("truncate")
    truncate = auto_truncate if truncate is None else bool(truncate)
    dimensions = payload.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or dimensions < 0):
        raise RequestError(422, "Failed to deserialize the JSON body: invalid `dimensions`")
    if dimensions == 0:
        raise tei_error(422, "`dimensions` should be positive", "validation")
    if dimensions is not None and dimensions > DEFAULT_DIMENSIONS:
        message = "`dimensions` should be smaller than the maximum embedding dimension."
        raise tei_error(422, message, "validation")
    vectors = []
    for item in items:
        tokens = text.count_tokens(item) if isinstance(item, str) else len(item)
        if tokens > TEI_MAX_INPUT_TOKENS and not truncate:
            message = (
                f"Input validation error: `inputs` must have less than "
                f"{TEI_MAX_INPUT_TOKENS} tokens. Given: {tokens}"
            )
            raise tei_error(422, message, "validation")
        if tokens > TEI_MAX_INPUT_TOKENS and isinstance(item, str):
            item = " ".join(item.split()[:TEI_MAX_INPUT_TOKENS])
        elif tokens > TEI_MAX_INPUT_TOKENS:
            item = item[:TEI_MAX_INPUT_TOKENS]
        floats = vector(item, dimensions or DEFAULT_DIMENSIONS)
        if payload.get("normalize") is False:
            floats = [v * 2.0 for v in floats]  # any unnormalised scale: not unit length
        vectors.append(floats)
    return vectors


VERTEX_MAX_TOKENS = 2048  # text-embedding-005's input limit (Google's model page)


def vertex_answer(payload: Any, max_instances: int = 250) -> dict[str, Any]:
    """``:predict`` on a Google text-embedding model: ``instances`` of ``{"content",
    "task_type"?, "title"?}``, ``parameters.outputDimensionality`` and
    ``autoTruncate`` (default true: a long input is cut and marked ``truncated``;
    false: INVALID_ARGUMENT), one ``embeddings`` prediction per instance with
    ``statistics.token_count``. The refusals' texts are the emulator's own; their
    code (400 INVALID_ARGUMENT) is what ``TextEmbeddingPredictionParams`` documents."""
    instances = payload.get("instances") if isinstance(payload, dict) else None
    if not isinstance(instances, list) or not instances:
        raise RequestError(400, "instances: at least one instance is required")
    if len(instances) > max_instances:
        message = f"instances: at most {max_instances} instances per request, got {len(instances)}"
        raise RequestError(400, message)
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise RequestError(400, "parameters: must be an object")
    dimensions = parameters.get("outputDimensionality")
    if dimensions is not None and (
        not isinstance(dimensions, int) or not 1 <= dimensions <= DEFAULT_DIMENSIONS
    ):
        message = f"outputDimensionality {dimensions} is not supported by this model"
        raise RequestError(400, message)
    truncate = parameters.get("autoTruncate", True)
    predictions = []
    for instance in instances:
        content = instance.get("content") if isinstance(instance, dict) else None
        if not isinstance(content, str):
            raise RequestError(400, "instances: each instance needs its text as content")
        tokens = text.count_tokens(content)
        truncated = tokens > VERTEX_MAX_TOKENS
        if truncated and truncate is False:
            message = f"Input of {tokens} tokens is longer than the maximum of {VERTEX_MAX_TOKENS}"
            raise RequestError(400, message)
        if truncated:
            content, tokens = " ".join(content.split()[:VERTEX_MAX_TOKENS]), VERTEX_MAX_TOKENS
        values = vector(content, dimensions or DEFAULT_DIMENSIONS)
        statistics = {"truncated": truncated, "token_count": tokens}
        predictions.append({"embeddings": {"values": values, "statistics": statistics}})
    characters = sum(len(i["content"]) for i in instances)
    return {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}
