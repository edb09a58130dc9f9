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
    EMBEDDING = "embedding"  # one answer, no stream: see regions.embeddings


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


class Residency:
    """The jurisdictions a request may be served in.

    A conjunction of clauses, each a set of jurisdiction tags (``EU``, ``US``,
    ``DE``...): a region is admissible when it carries at least one tag of
    *every* clause. No clause means unrestricted. A tenant's policy is one
    clause; each narrowing (``x-meridian-residency``) adds one, so narrowing
    selects the regions the policy admits that also carry an asked tag: ``EU``
    narrowed by ``DE`` admits a region tagged ``[EU, DE]`` and nothing else.
    Adding a clause can only shrink the admissible regions; there is no
    operation that widens a constraint.

    ``known``, when given, holds the tag sets of the configured regions: it
    lets :attr:`allowed` tell that a narrowing leaves no region at all (``EU``
    narrowed by ``US``) before routing. It is context, not constraint: it is
    not part of equality and never changes what :meth:`admits` answers.
    """

    __slots__ = ("clauses", "known")

    clauses: tuple[frozenset[str], ...]
    known: frozenset[frozenset[str]] | None

    def __init__(
        self,
        allowed: frozenset[str] | None = None,
        *,
        clauses: tuple[frozenset[str], ...] = (),
        known: frozenset[frozenset[str]] | None = None,
    ) -> None:
        """``allowed``: one clause (a tenant's policy; None: unrestricted); ``clauses``: more."""
        kept: tuple[frozenset[str], ...] = ()
        for clause in ((allowed,) if allowed is not None else ()) + clauses:
            kept = _conjoin(kept, frozenset(clause))
        object.__setattr__(self, "clauses", kept)
        object.__setattr__(self, "known", known)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Residency is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Residency) and set(self.clauses) == set(other.clauses)

    def __hash__(self) -> int:
        return hash(frozenset(self.clauses))

    def __repr__(self) -> str:
        return f"Residency({self.describe()})"

    @property
    def allowed(self) -> frozenset[str] | None:
        """Tags one of which every admissible region carries (None: unrestricted).

        With a single clause these are exactly the admissible tags. After a
        narrowing they are the narrowest clause's: necessary, not sufficient
        (``EU`` narrowed by ``DE`` gives ``DE``, yet a region tagged only
        ``DE`` is not admitted), so decide with :meth:`admits`. Empty when
        nothing can be admitted (so ``not allowed`` keeps meaning that): a
        clause without tags, or, with ``known``, no known region admitted.
        """
        if not self.clauses:
            return None
        if self.empty:
            return frozenset()
        if self.known is not None and not any(self.admits(tags) for tags in self.known):
            return frozenset()
        return self.clauses[-1]

    @property
    def empty(self) -> bool:
        """Whether no region can be admissible (some clause has no tag)."""
        return any(not clause for clause in self.clauses)

    def admits(self, region_tags: frozenset[str]) -> bool:
        return all(not clause.isdisjoint(region_tags) for clause in self.clauses)

    def narrow(self, tags: frozenset[str]) -> Residency:
        """The regions admitted here that also carry one of ``tags``."""
        return Residency(clauses=(*self.clauses, frozenset(tags)), known=self.known)

    def describe(self) -> str:
        """``any``; ``EU,US`` (either); ``EU & DE`` (both); ``none`` when nothing is admitted."""
        if not self.clauses:
            return "any"
        if self.empty:
            return "none"
        parts = [",".join(sorted(c)) for c in self.clauses]
        if len(parts) == 1:
            return parts[0]
        return " & ".join(p if "," not in p else f"({p})" for p in parts)


def _conjoin(
    clauses: tuple[frozenset[str], ...], clause: frozenset[str]
) -> tuple[frozenset[str], ...]:
    """``clauses`` and ``clause``, without clauses another one implies.

    A clause that is a superset of another is implied by it (any region meeting
    the smaller one meets the larger), so it adds nothing and is dropped.
    """
    if any(kept <= clause for kept in clauses):
        return clauses
    return (*(kept for kept in clauses if not clause <= kept), clause)


UNRESTRICTED = Residency()


@dataclass(frozen=True, slots=True)
class GenerationRequest:
    """One client request, after authentication and validation.

    ``prompt`` is set for completions, ``messages`` for chat. ``assistant_prefix``
    is text the model has already produced (set only when a stream resumes on
    another backend): adapters send it so the model continues it rather than
    starting over.

    ``body`` is the client's own JSON object: an adapter whose backend speaks
    the client's OpenAI API sends it on with only what the gateway owns
    rewritten (``model``, ``stream``, ``stream_options``, resumption), so no
    field the gateway does not model is lost. ``needs`` maps each capability
    the body asks of a backend (``tools``, ``structured_output``, ``vision``,
    ``logprobs``, ``multiple_choices``, ``openai_body``) to the field that
    asks it, for routing (:mod:`routing.capabilities`). ``unresumable`` says
    why a broken stream of this request cannot be continued exactly (tool
    calls, several choices, logprobs), or is empty. ``choices`` is how many
    choices the stream carries (``n`` times the prompts of a batch).
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
    body: Mapping[str, Any] | None = None
    needs: Mapping[str, str] = field(default_factory=dict)
    unresumable: str = ""
    choices: int = 1

    def resumed(self, produced_text: str) -> GenerationRequest:
        """The same request continued after ``produced_text`` was already streamed."""
        return replace(self, assistant_prefix=self.assistant_prefix + produced_text)
