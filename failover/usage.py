"""What a request cost across its attempts, resumptions included."""

from __future__ import annotations

from collections.abc import Iterable

from failover.attempt import Attempt
from regions.events import Event, Usage
from regions.request import GenerationRequest


def total_usage(request: GenerationRequest, attempts: list[Attempt]) -> Usage | None:
    """Tokens across every attempt that streamed text.

    An attempt cut mid-stream never got to report usage: its completion
    tokens are the ones it streamed, and its prompt is the original prompt
    (the first report minus the prefix that report's attempt was given)
    plus the prefix it was itself given.

    When no attempt reported usage (the stream was cut before its usage
    chunk), the completion is the tokens streamed and the prompt an
    estimate from its length: what is known, rather than nothing charged.
    """
    streamed = [a for a in attempts if a.first_token is not None]
    reported = [a for a in streamed if a.usage is not None]
    if not reported:
        if not streamed:
            return None
        return Usage(prompt_estimate(request), sum(a.tokens for a in streamed))
    if len(streamed) == 1:
        return reported[0].usage
    base = reported[0].usage.prompt_tokens - reported[0].prefix_tokens  # type: ignore[union-attr]
    prompt = completion = 0
    for a in streamed:
        if a.usage is not None:
            prompt += a.usage.prompt_tokens
            completion += a.usage.completion_tokens
        else:
            prompt += base + a.prefix_tokens
            completion += a.tokens
    return Usage(prompt, completion)


def any_reported(attempts: Iterable[Attempt]) -> bool:
    """Did a backend that streamed text report its own usage?"""
    return any(a.usage is not None for a in attempts if a.first_token is not None)


def take_usage(attempt: Attempt, events: list[Event]) -> None:
    """Keep the usage a backend reported among an attempt's first events."""
    for event in events:
        if isinstance(event, Usage):
            attempt.usage = event


def prompt_estimate(request: GenerationRequest) -> int:
    """About four characters per token: the usual rule of thumb for BPE vocabularies."""
    chars = len(request.prompt) + sum(len(m.content) + 4 for m in request.messages)
    return max(1, -(-chars // 4))
