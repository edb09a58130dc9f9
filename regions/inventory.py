"""The world as configured: regions, backends and their static properties.

These are plain immutable records. Routing reads them from a snapshot;
adapters are built from them by ``regions.registry``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


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
    """US dollars per one million tokens."""

    input_per_m: float = 0.0
    output_per_m: float = 0.0


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
