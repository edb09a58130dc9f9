"""The world as configured: regions, backends and their static properties.

These are plain immutable records. Routing reads them from a snapshot;
adapters are built from them by ``regions.registry``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Literal

from regions.throughput import Throughput
from regions.tls import BackendTLS


class ProviderKind(enum.Enum):
    VLLM = "vllm"
    TGI = "tgi"
    OPENAI = "openai"
    SAGEMAKER = "sagemaker"
    VERTEX = "vertex"


@dataclass(frozen=True, slots=True)
class Region:
    """``cloud:name`` (``aws:us-east-1``) with jurisdiction tags (``EU``, ``DE``)."""

    name: str
    tags: frozenset[str]

    @property
    def cloud(self) -> str:
        return self.name.split(":", 1)[0]


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per one million tokens, or per hour for a self-hosted backend.

    A backend priced by the hour (GPU hours) costs per output token
    ``per_hour / (3600 × capacity)``, its capacity measured by ``meter``
    (:mod:`regions.throughput`); an input token costs ``input_ratio`` output
    tokens (0: prefill is taken as free, which it nearly is beside decoding).
    Build it with :meth:`hourly`. The meter is live state, not part of the
    value: two prices with the same figures are equal.
    """

    input_per_m: float = 0.0
    output_per_m: float = 0.0
    per_hour: float = 0.0
    input_ratio: float = 0.0
    meter: Throughput | None = field(default=None, compare=False, repr=False)

    @classmethod
    def hourly(
        cls, per_hour: float, tokens_per_s: float | None = None, input_ratio: float = 0.0
    ) -> Price:
        return cls(per_hour=per_hour, input_ratio=input_ratio, meter=Throughput(tokens_per_s))

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for one request's tokens: routing's estimate, the metrics, the
        access log and usage all use this. A per-hour price whose capacity is not
        known yet (no seed, nothing measured) costs 0."""
        meter = self.meter
        if meter is None:
            return (prompt_tokens * self.input_per_m + completion_tokens * self.output_per_m) / 1e6
        capacity = meter.capacity
        if not capacity:
            return 0.0
        return (
            (completion_tokens + prompt_tokens * self.input_ratio)
            * self.per_hour
            / (3600.0 * capacity)
        )


Container = Literal["vllm", "tgi", "lmi", "tei"]
"""The serving container behind a SageMaker endpoint: it decides the payload format
(``tei``: Hugging Face text-embeddings-inference, embeddings only)."""

VertexRoute = Literal["chat_completions", "stream_raw_predict", "predict_embeddings"]
"""Vertex's OpenAI-compatible chat route, ``:streamRawPredict`` (custom containers), or
``:predict`` on Google's text-embedding models (``regions.vertex_embeddings``)."""


@dataclass(frozen=True, slots=True)
class SageMakerOptions:
    """How to address one SageMaker endpoint (see ``regions.sagemaker``).

    ``emulator_credentials`` signs with fixed fake keys instead of the boto3
    chain: for emulators only (the config allows it on ``http://`` URLs only).
    """

    endpoint_name: str
    region: str
    container: Container = "vllm"
    target_variant: str | None = None
    inference_component: str | None = None
    custom_attributes: str | None = None
    profile: str | None = None
    emulator_credentials: bool = False


@dataclass(frozen=True, slots=True)
class VertexOptions:
    """How to address one Vertex AI endpoint (see ``regions.vertex``).

    ``emulator_credentials`` sends a fixed static bearer token instead of
    application-default credentials: for emulators only (``http://`` URLs).
    """

    project: str
    location: str
    endpoint_id: str  # "": a publisher model (route predict_embeddings)
    route: VertexRoute = "chat_completions"
    emulator_credentials: bool = False
    dedicated_dns: str | None = None  # the Host of a dedicated endpoint (url may connect elsewhere)
    discover_dns: bool = False  # read dedicatedEndpointDns from the endpoint resource at first use


@dataclass(frozen=True, slots=True)
class BackendSpec:
    """One deployment of one model version in one region on one provider."""

    name: str
    model: str
    version: str
    region: Region
    kind: ProviderKind
    url: str
    served_model: str
    price: Price = field(default_factory=Price)
    max_concurrency: int = 256
    weight: float = 1.0
    sagemaker: SageMakerOptions | None = None
    vertex: VertexOptions | None = None
    tls: BackendTLS | None = None  # CA bundle, SNI override, client certificate
    # Declared capabilities (routing.capabilities); None: inherited from the provider.
    capabilities: frozenset[str] | None = None
    context_length: int | None = None  # tokens; None: unknown (the backend decides)
