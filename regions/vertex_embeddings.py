"""OpenAI embeddings to and from Google's embedding models on Vertex AI (``predict_embeddings``).

Google's models (``text-embedding-005``, ``gemini-embedding-001``...) are served
by ``:predict`` on the publisher model,
``POST /v1/projects/{p}/locations/{l}/publishers/google/models/{model}:predict``
(or on an endpoint a model of that format is deployed to,
``.../endpoints/{e}:predict``), with the body of Google's "Text embeddings API"
reference (cloud.google.com/vertex-ai/generative-ai/docs/model-reference/text-embeddings-api):

- ``instances``: one ``{"content": text}`` per input, with the client's
  ``task_type`` (``RETRIEVAL_QUERY``, ``SEMANTIC_SIMILARITY``...) on each when
  it sends one; text only, so token-id ``input`` is a 400 naming ``input``;
- ``parameters`` (``TextEmbeddingPredictionParams``): ``outputDimensionality``
  from ``dimensions`` (a value the model does not support is Google's own 400
  INVALID_ARGUMENT), and ``autoTruncate: false``: Google truncates a too-long
  input in silence by default; without it the input is refused
  (INVALID_ARGUMENT) as OpenAI refuses it.

The answer is ``{"predictions": [{"embeddings": {"values": [floats],
"statistics": {"token_count", "truncated"}}}]}``, one per instance in order;
the token counts summed are the usage. Google caps a request at 250 texts
(``gemini-embedding-*``: one) and 20,000 tokens, so a client's batch is sent as
several requests within them (:func:`request_bodies`), concurrently, and the
answers joined in order. ``:predict`` answers whole, so the
shared regional host serves it (gateway/config/model.py refuses that host
only for the streaming routes). Errors are google.rpc.Status, classified by
``regions.vertex``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson

from regions import embeddings
from regions.embeddings import Batch
from regions.inventory import VertexOptions

VERTEX_FIELDS = frozenset({"task_type"})
"""The instance member a client may send as an extra body field, for every input."""


def predict_url(base: str, options: VertexOptions, served_model: str) -> str:
    location = (
        f"projects/{quote(options.project, safe='')}/locations/{quote(options.location, safe='')}"
    )
    if options.endpoint_id:
        return f"{base}/v1/{location}/endpoints/{quote(options.endpoint_id, safe='')}:predict"
    return f"{base}/v1/{location}/publishers/google/models/{quote(served_model, safe='')}:predict"


MAX_INSTANCES = 250
"""Input texts per request (Google's "Get text embeddings", API limits)."""
SINGLE_INSTANCE_MODELS = ("gemini-embedding-",)
"""Models that take one instance per request (the same page: gemini-embedding-001)."""
MAX_BATCH_CHARS = 40_000
"""Characters per request: about 10,000 tokens at four characters a token, half the
20,000 input tokens Google allows per request (more is a 400), so that text denser
than the estimate still fits. An input longer than this goes alone."""


def request_bodies(client_body: Mapping[str, Any], backend: str, model: str) -> list[Batch]:
    """The ``:predict`` bodies for the client's inputs, in order, each within Google's
    per-request limits (a client's batch of 2048 is several requests)."""
    body = dict(client_body)
    embeddings.refuse_unknown(body, VERTEX_FIELDS, backend)
    texts = embeddings.texts(body.get("input"))
    if texts is None:
        raise embeddings.refused(
            backend, "input", "as token ids: Google's text embedding models take text only"
        )
    extra = {"task_type": body["task_type"]} if body.get("task_type") is not None else {}
    parameters: dict[str, Any] = {"autoTruncate": False}
    if body.get("dimensions") is not None:
        parameters["outputDimensionality"] = body["dimensions"]
    most = 1 if model.startswith(SINGLE_INSTANCE_MODELS) else MAX_INSTANCES
    runs = embeddings.batches(texts, most, len, MAX_BATCH_CHARS)
    return [
        Batch(
            orjson.dumps(
                {"instances": [{"content": t, **extra} for t in run], "parameters": parameters}
            ),
            len(run),
        )
        for run in runs
    ]


def vectors(raw: bytes, inputs: int) -> tuple[list[list[float]], list[int | None]]:
    """The vectors of one ``:predict`` answer for ``inputs`` instances, and each one's
    token count (None where the answer has no statistics)."""
    try:
        parsed: Any = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise embeddings.malformed("not JSON") from None
    predictions = parsed.get("predictions") if isinstance(parsed, dict) else None
    if not isinstance(predictions, list) or len(predictions) != inputs:
        raise embeddings.malformed(f"predictions is not a list of {inputs}")
    found: list[list[float]] = []
    tokens: list[int | None] = []
    for prediction in predictions:
        got = prediction.get("embeddings") if isinstance(prediction, dict) else None
        values = embeddings.floats(got.get("values")) if isinstance(got, dict) else None
        if values is None or not isinstance(got, dict):
            raise embeddings.malformed("a prediction without embeddings.values")
        found.append(values)
        stats = got.get("statistics")
        if isinstance(stats, dict) and stats.get("truncated") is True:
            # sent with autoTruncate false: a cut input is not the embedding asked for
            raise embeddings.malformed("an input truncated though autoTruncate was false")
        count = stats.get("token_count") if isinstance(stats, dict) else None
        # a google.protobuf.Value number: a double on the wire
        if isinstance(count, int | float) and not isinstance(count, bool) and count >= 0:
            tokens.append(int(count))
        else:
            tokens.append(None)
    return found, tokens


def answer(parts: list[tuple[bytes, int]], client_body: Mapping[str, Any]) -> tuple[bytes, int]:
    """The OpenAI body for the answers to :func:`request_bodies`' requests (each with
    its instance count), in order, and the prompt tokens: Google's counts, an input
    the answer counts no tokens for estimated (a model deployed to an endpoint may
    send no statistics; usage must not fall to zero)."""
    texts = embeddings.texts(client_body.get("input")) or []
    found: list[list[float]] = []
    tokens = 0
    for raw, inputs in parts:
        got, counts = vectors(raw, inputs)
        for i, count in enumerate(counts, start=len(found)):
            text = texts[i] if i < len(texts) else ""
            tokens += count if count is not None else embeddings.prompt_estimate(text)
        found.extend(got)
    embeddings.same_size(found, client_body.get("dimensions"))
    fmt = client_body.get("encoding_format")
    return embeddings.openai_body(found, fmt, tokens), tokens
