"""What a backend can do, and whether it can serve what a request asks.

A request's body asks capabilities of its backend (``GenerationRequest.needs``:
``tools``, ``structured_output``, ``vision``, ``logprobs``,
``multiple_choices``, ``openai_body``, each with the field that asks it). A
backend inherits what it can do from what it speaks:

- a server that takes the client's OpenAI body (vLLM, TGI's Messages API, an
  OpenAI-compatible API, SageMaker's and Vertex's vLLM containers) gets the
  body itself, so it can honour every field. TGI's Messages API takes no
  ``n`` above 1 (its ``ChatRequest`` has no ``n``), so it is not given
  several choices; nor is Vertex's chat route, whose container may be TGI;
- ``embeddings``: ``/v1/embeddings`` on vLLM, TEI (``provider: tgi``) and
  OpenAI-compatible servers (``regions.embeddings``); the OpenAI body at
  SageMaker's InvokeEndpoint to a vLLM container and at Vertex's
  ``:rawPredict`` (route ``stream_raw_predict``), which vLLM's
  ``/invocations`` routes by its shape (``regions.sagemaker``,
  ``regions.vertex``); and only embeddings on SageMaker's TEI container
  (``regions.sagemaker_tei``) and Vertex's Google embedding models (route
  ``predict_embeddings``, ``regions.vertex_embeddings``), whose native
  formats the gateway translates;
- SageMaker's TGI and LMI containers get the gateway's own native payloads
  (``regions.sagemaker_payloads``): text messages and the sampling the
  gateway models, nothing more (TGI's generate ``best_of`` returns one
  sequence and refuses to stream, router/src/validation.rs in
  huggingface/text-generation-inference, so ``n`` stays refused).

Routing drops the backends that lack a capability the request asks; when
that leaves no backend inside the residency, the request is refused with
:class:`MissingCapability` (400), naming the field and what it needs.
"""

from __future__ import annotations

from collections.abc import Mapping

from regions.inventory import BackendSpec, ProviderKind
from regions.request import GenerationRequest
from routing.plan import RoutingError

ALL = frozenset(
    {
        "tools",
        "structured_output",
        "vision",
        "logprobs",
        "multiple_choices",
        "openai_body",
        "embeddings",
    }
)

EMBEDDINGS_ONLY = frozenset({"embeddings"})

DESCRIPTION = {
    "tools": "tool calling",
    "structured_output": "structured output",
    "vision": "image and other non-text content parts",
    "logprobs": "log probabilities",
    "multiple_choices": "several choices in one request",
    "openai_body": "the OpenAI request body as sent",
    "embeddings": "an embeddings endpoint",
    "context_length": "a context window that holds the prompt and max_tokens",
}


# What a request's fields ask, shared by both front ends' ``needs`` (the HTTP
# schema's over a JSON body, the gRPC validator's over ``extra_json``).

STRUCTURED_FIELDS = (
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "structured_outputs",
)
"""vLLM's fields that ask ``structured_output`` (besides ``response_format``)."""

HARMLESS_FIELDS = frozenset({"user", "metadata", "store", "service_tier", "prompt_cache_key"})
"""Fields that ask nothing of the model: a backend that cannot take them loses nothing."""


def unresumable(asked: Mapping[str, str]) -> str:
    """Why a broken stream of a request asking ``asked`` is not continued (empty: it may be).

    Continuing re-sends the text streamed so far as an assistant prefix: exact
    for one choice of plain text. A tool call half-streamed cannot be handed
    to another backend as a prefix, several choices would each need their own
    continuation, and the logprobs of text given as a prefix are not computed
    again; so these streams end with an error event instead."""
    for capability, what in (
        ("tools", "tool calls"),
        ("multiple_choices", "several choices"),
        ("logprobs", "logprobs"),
    ):
        if capability in asked:
            return f"a stream with {what} ({asked[capability]}) cannot be continued exactly"
    return ""


def provided(backend: BackendSpec) -> frozenset[str]:
    """What ``backend`` can do: what it declares (``capabilities`` in its config),
    within what its provider's format can carry; else all that format carries."""
    carried = _carried(backend)
    return carried if backend.capabilities is None else carried & backend.capabilities


def _carried(backend: BackendSpec) -> frozenset[str]:
    """The capabilities ``backend`` inherits from its provider and container."""
    if backend.kind is ProviderKind.SAGEMAKER:
        container = backend.sagemaker.container if backend.sagemaker else "vllm"
        if container == "tei":
            return EMBEDDINGS_ONLY
        return ALL if container == "vllm" else frozenset()
    if backend.kind is ProviderKind.VERTEX:
        if backend.vertex is not None and backend.vertex.route == "predict_embeddings":
            return EMBEDDINGS_ONLY
        raw = backend.vertex is not None and backend.vertex.route == "stream_raw_predict"
        return ALL if raw else ALL - {"multiple_choices", "embeddings"}
    if backend.kind is ProviderKind.TGI:
        return ALL - {"multiple_choices"}
    return ALL


def missing(backend: BackendSpec, needs: Mapping[str, str]) -> str | None:
    """The first capability ``needs`` asks that ``backend`` lacks, or None."""
    if not needs:
        return None
    have = provided(backend)
    return next((c for c in needs if c not in have), None)


CHARS_PER_TOKEN_BOUND = 8
"""Characters a token covers at most, for a lower bound on a prompt's tokens: BPE
vocabularies average about four for text, so a prompt judged too long here is."""


def too_long(backend: BackendSpec, request: GenerationRequest) -> str | None:
    """``context_length`` when the request cannot fit the backend's declared window:
    its ``max_tokens`` plus a lower bound on its prompt's tokens exceed it."""
    window = backend.context_length
    limit = request.sampling.max_tokens
    if window is None or limit is None:
        return None
    chars = len(request.prompt) + sum(len(m.content) for m in request.messages)
    prompt = max(1, chars // CHARS_PER_TOKEN_BOUND)
    return "context_length" if limit + prompt > window else None


def field_of(capability: str, needs: Mapping[str, str]) -> str:
    """The field that asks ``capability`` (a context window is asked by max_tokens)."""
    return needs.get(capability, "max_tokens")


def explain(capability: str, needs: Mapping[str, str]) -> str:
    return f"'{field_of(capability, needs)}' needs {DESCRIPTION.get(capability, capability)}"


class MissingCapability(RoutingError):
    """Every backend inside the residency lacks a capability the request asks."""

    status = 400
    code = "unsupported_parameter"
    reason = "no backend of this model can honour a parameter of this request"
    disclose = True  # names only the client's field and the model

    def __init__(self, model: str, capability: str, field: str) -> None:
        what = DESCRIPTION.get(capability, capability)
        super().__init__(
            f"'{field}' needs {what} ({capability}), which no backend serving model "
            f"`{model}` within this request's residency supports; remove '{field}' "
            "or use a model whose backends support it"
        )
        self.capability = capability
        self.field = field
