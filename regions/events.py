"""The stream of token events every adapter yields and every front end consumes.

An adapter's stream is a sequence of :class:`TokenDelta` followed by at most one
:class:`Finish` and at most one :class:`Usage`. Failures are raised as
:class:`BackendError` (see ``regions.errors``); a front end receives an
:class:`StreamError` event only from the executor, as the terminal event of a
stream that could not be completed.

``raw`` carries the upstream's own SSE event bytes when the upstream speaks the
same OpenAI format the client asked for, so a front end can forward them
without re-serialising (docs/design.md §8).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class TokenDelta:
    """``more`` is a hint: further events from the same upstream read follow at
    once, so a front end may coalesce them into one write to its client.
    ``progress``: a chunk without text that still carries the answer (tool-call
    arguments, reasoning, logprobs), so the stream is not idle."""

    text: str
    raw: bytes | None = None
    more: bool = False
    progress: bool = False


@dataclass(slots=True)
class Finish:
    reason: str
    raw: bytes | None = None


@dataclass(slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    raw: bytes | None = None

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(slots=True)
class StreamError:
    """Terminal: the stream could not be completed after tokens were sent."""

    message: str
    code: str = "upstream_error"


Event = TokenDelta | Finish | Usage | StreamError


def starts_answer(event: Event) -> bool:
    """Whether an event is the answer's start for pacing (``regions.pacing``): anything but
    a content-free delta. vLLM and SGLang write the role chunk (``content: ""``) apart from
    the first token; that token is still the first thing the client waits for."""
    return type(event) is not TokenDelta or event.text != "" or event.progress
