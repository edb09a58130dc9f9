"""The internal generation request shared by every front end and every adapter.

HTTP and gRPC front ends build a :class:`GenerationRequest`; routing reads its
model, residency and affinity key; adapters turn it into their provider's wire
format. Nothing here knows about HTTP.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any


class Kind(enum.Enum):
    """Which OpenAI-style API the client called."""

    CHAT = "chat"
    COMPLETION = "completion"


@dataclass(frozen=True, slots=True)
class Message:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampling parameters forwarded to the backend; None means the backend's default."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def as_openai(self) -> dict[str, Any]:
        """The set parameters under their OpenAI names."""
        out: dict[str, Any] = {}
        for name in (
            "max_tokens",
            "temperature",
            "top_p",
            "seed",
            "presence_penalty",
            "frequency_penalty",
        ):
            value = getattr(self, name)
            if value is not None:
                out[name] = value
        if self.stop:
            out["stop"] = list(self.stop)
        return out


@dataclass(frozen=True, slots=True)
class Residency:
    """The jurisdictions a request may be served in.

    ``allowed`` is a set of jurisdiction tags (``EU``, ``US``, ``DE``...). A
    region is admissible when it carries at least one allowed tag. ``None``
    means unrestricted. Narrowing only ever intersects: there is no operation
    that widens a constraint.
    """

    allowed: frozenset[str] | None = None

    def admits(self, region_tags: frozenset[str]) -> bool:
        return self.allowed is None or not self.allowed.isdisjoint(region_tags)

    def narrow(self, tags: frozenset[str]) -> Residency:
        if self.allowed is None:
            return Residency(frozenset(tags))
        return Residency(self.allowed & tags)

    def describe(self) -> str:
        return "any" if self.allowed is None else ",".join(sorted(self.allowed)) or "none"


UNRESTRICTED = Residency()


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One client request, after authentication and validation.

    ``prompt`` is set for completions, ``messages`` for chat. ``assistant_prefix``
    is text the model has already produced (set only when a stream resumes on
    another backend): adapters send it so the model continues it rather than
    starting over.
    """

    kind: Kind
    model: str
    request_id: str
    messages: tuple[Message, ...] = ()
    prompt: str = ""
    sampling: Sampling = field(default_factory=Sampling)
    stream: bool = False
    include_usage: bool = False
    tenant: str = ""
    residency: Residency = UNRESTRICTED
    affinity_key: str = ""
    assistant_prefix: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)

    def resumed(self, produced_text: str) -> GenerationRequest:
        """The same request continued after ``produced_text`` was already streamed."""
        return replace(self, assistant_prefix=self.assistant_prefix + produced_text)
