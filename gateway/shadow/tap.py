"""Reading an :class:`Execution` into one side of a shadow pair, for either side.

Both sides are measured the same way, from the execution's own attempts, so
the comparison is like for like: TTFT is the serving attempt's first token
minus the start of the first attempt (retries and hedges included, as a
client would feel them); inter-token latency is the serving attempt's
stream time after its first token over the tokens after the first. A side
errs when it ended with anything but a complete stream.

:func:`run_copy` drives the candidate's execution to the end, reading and
dropping its events: a shadow answer is never shown to anyone.
"""

from __future__ import annotations

from failover.executor import Execution, ExecutionFailed
from gateway.shadow.compare import Side
from regions.events import StreamError


def side_of(execution: Execution, error: bool) -> Side:
    """A finished execution as one side of a pair (primary: ``error`` = status != 200)."""
    serving = execution.serving
    text = execution.text
    if serving is None or serving.first_token is None or not execution.attempts:
        return Side(True, text)
    ttft = serving.first_token - execution.attempts[0].started
    tokens = len(text.split())
    itl = None
    if serving.ended is not None and tokens > 1:
        itl = max(0.0, serving.ended - serving.first_token) / (tokens - 1)
    failed = error or (serving.failure is not None and execution.resumptions == 0)
    return Side(failed, text, ttft, itl, tokens)


async def run_copy(execution: Execution) -> tuple[Side, int]:
    """Run the candidate's copy to its end; returns its side and the tokens it used."""
    try:
        await execution.start()
    except ExecutionFailed:
        return Side(True), 0
    error = False
    async for event in execution.events():
        if isinstance(event, StreamError):
            error = True
    usage = execution.usage
    used = execution.deltas if usage is None else usage.prompt_tokens + usage.completion_tokens
    return side_of(execution, error), used
