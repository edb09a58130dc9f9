"""OpenAI embeddings to and from Hugging Face TEI (text-embeddings-inference) on SageMaker.

TEI's router (huggingface/text-embeddings-inference ``router/src/http/server.rs``)
serves an embedding model's ``/invocations`` with the same ``embed`` handler as
``/``, so InvokeEndpoint takes TEI's native ``EmbedRequest``
(``router/src/http/types.rs``), not its OpenAI route:

- ``inputs``: a string, a list of strings, token ids or lists of them (its
  ``Input``/``InputType``, untagged: OpenAI's four ``input`` shapes map one to
  one, so token ids are passed on);
- ``dimensions`` (Matryoshka truncation; the default is the model's size,
  ``core/src/infer.rs`` refuses 0 and more than it has), ``normalize`` (default
  true), ``truncate`` (default the server's ``--auto-truncate``, itself true),
  ``truncation_direction``, ``prompt_name``. The gateway sends ``truncate:
  false`` unless the client sets it, so a too-long input is refused as OpenAI
  refuses it (``"`inputs` must have less than N tokens. Given: M"``,
  ``core/src/tokenization.rs``), not embedded in part in silence; the client may
  send TEI's own fields, any other is a 400 naming it.

TEI refuses more than ``--max-client-batch-size`` inputs (32 by default) and a body
over ``--payload-limit`` (2 MB), so a client's batch goes as several invocations of
at most 32 inputs and 1 MB, concurrently, joined in order. The answer is
``EmbedResponse``, a bare list of vectors, one per input in order. Its token count
goes out only as the ``x-compute-tokens`` header (``ResponseMetadata`` in
``router/src/lib.rs``), which InvokeEndpoint does not return (botocore's
``InvokeEndpointOutput`` carries the body, Content-Type, the invoked variant, custom
attributes and session ids), so the usage is token ids counted, text estimated at
four characters a token.

Errors are ``ErrorResponse`` ``{"error", "error_type"}``: ``validation`` and
``tokenizer`` 422, ``empty`` 400, ``overloaded`` 429, ``unhealthy`` 503,
``backend`` 424 (``From<&ErrorType> for StatusCode``). SageMaker wraps them in
a ModelError 424 with ``OriginalStatusCode`` (classified by
``regions.sagemaker_errors``: 4xx CLIENT, 429 OVERLOADED, else SERVER) and
``OriginalMessage``, whose TEI ``error`` text becomes the message the client
sees.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from regions import embeddings
from regions.embeddings import Batch
from regions.errors import BackendError
from regions.sagemaker_errors import response_error

TEI_FIELDS = frozenset({"truncate", "truncation_direction", "prompt_name", "normalize"})
"""``EmbedRequest``'s own members a client may send as extra body fields."""


MAX_BATCH = 32
"""Inputs per InvokeEndpoint: TEI's ``--max-client-batch-size`` default
(``router/src/main.rs``), over which it refuses the request (422 ``validation``)."""
MAX_BATCH_BYTES = 1_000_000
"""Input bytes per InvokeEndpoint: half TEI's ``--payload-limit`` default (2,000,000
bytes, ``router/src/main.rs``; a larger body is its 413), so that 32 long documents
sent with ``truncate: true`` still go, in several calls. An input over it goes alone."""


def request_bodies(client_body: Mapping[str, Any], backend: str) -> list[Batch]:
    """TEI bodies for the client's inputs, in order, at most MAX_BATCH inputs each (a
    client's batch of up to 2048 is several invocations)."""
    body = dict(client_body)
    embeddings.refuse_unknown(body, TEI_FIELDS, backend)
    native: dict[str, Any] = {"truncate": False}
    # null is "the default": TEI's for truncate is its --auto-truncate (true), not ours
    native.update((k, v) for k, v in body.items() if k in TEI_FIELDS and v is not None)
    if body.get("dimensions") is not None:
        native["dimensions"] = body["dimensions"]
    value = body["input"]
    if not isinstance(value, list) or not value or isinstance(value[0], int):
        return [Batch(orjson.dumps({"inputs": value, **native}), 1)]  # one input
    # TEI bounds each input's tokens itself (max_input_length); a body's bytes it
    # bounds per request, so the runs are cut by count and by bytes
    runs = embeddings.batches(value, MAX_BATCH, lambda v: len(orjson.dumps(v)), MAX_BATCH_BYTES)
    return [Batch(orjson.dumps({"inputs": run, **native}), len(run)) for run in runs]


def answer(parts: list[tuple[bytes, int]], client_body: Mapping[str, Any]) -> tuple[bytes, int]:
    """The OpenAI body for TEI's ``EmbedResponse`` bodies (each with its input count),
    in order, and the prompt tokens."""
    found: list[list[float]] = []
    for raw, inputs in parts:
        try:
            parsed: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise embeddings.malformed("not JSON") from None
        if not isinstance(parsed, list) or len(parsed) != inputs:
            raise embeddings.malformed(f"not a list of {inputs} vectors")
        vectors = [embeddings.floats(v) for v in parsed]
        if any(v is None for v in vectors):
            raise embeddings.malformed("a vector is not a list of float32 numbers")
        found.extend(v for v in vectors if v is not None)
    embeddings.same_size(found, client_body.get("dimensions"))
    tokens = embeddings.prompt_estimate(client_body.get("input"))
    fmt = client_body.get("encoding_format")
    return embeddings.openai_body(found, fmt, tokens), tokens


def error(status: int, headers: Mapping[str, str], payload: bytes) -> BackendError:
    """SageMaker's error, its message TEI's own words when the container answered."""
    exc = response_error(status, headers, payload)
    try:
        parsed: Any = orjson.loads(payload)
        tei: Any = orjson.loads(parsed["OriginalMessage"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return exc
    if not isinstance(tei, dict) or not isinstance(tei.get("error"), str):
        return exc
    original = parsed.get("OriginalStatusCode")
    message = f"TEI {tei.get('error_type')} error (container status {original}): {tei['error']}"
    return BackendError(exc.failure, message[:400], status=exc.status, retry_after=exc.retry_after)
