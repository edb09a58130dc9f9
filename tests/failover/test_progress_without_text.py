"""A stream that carries the answer without text (tool-call arguments, reasoning,
logprobs) is not idle; one of empty chunks is. On virtual time (looptime)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from failover.executor import Budgets, Execution
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.events import Event, Finish, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind, Region
from regions.openai_chunks import parse_chunk
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Sink

pytestmark = pytest.mark.looptime

EU = Region("aws:eu-west-1", frozenset({"EU"}))


class Silent:
    """Text once, then ``gaps`` chunks without text 0.15 s apart (idle is 0.2 s)."""

    def __init__(self, progress: bool, gaps: int = 5) -> None:
        self.progress, self.gaps = progress, gaps

    def passthrough(self, kind: Kind) -> bool:
        return False

    async def close(self) -> None:
        pass

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        yield TokenDelta("call")
        for _ in range(self.gaps):
            await asyncio.sleep(0.15)
            yield TokenDelta("", progress=self.progress)
        yield Finish("tool_calls")
        yield Usage(3, 1)


def run(provider: Silent) -> Execution:
    spec = BackendSpec("a", "m", "v1", EU, ProviderKind.VLLM, "http://x", "s")
    policy = FailoverPolicy(
        TimeoutPolicy(first_token=1.0, idle=0.2), resume=False, hedge=False, rounds=1
    )
    plan = Plan("m", "v1", (Candidate(spec, "test"),))
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    clock = asyncio.get_running_loop().time  # virtual time: the loop's clock
    return Execution(request, plan, {"a": provider}, policy, Sink(), Budgets(), clock=clock)  # type: ignore[dict-item]


async def test_tool_call_arguments_for_longer_than_the_idle_timeout_are_not_idle() -> None:
    ex = run(Silent(progress=True))
    events = [*await ex.start(), *[e async for e in ex.events()]]
    assert [e.reason for e in events if isinstance(e, Finish)] == ["tool_calls"]


async def test_empty_chunks_for_longer_than_the_idle_timeout_are_idle() -> None:
    ex = run(Silent(progress=False))
    await ex.start()
    events = [e async for e in ex.events()]
    assert not any(isinstance(e, Finish) for e in events)


@pytest.mark.parametrize(
    ("delta", "progress"),
    [
        ({"tool_calls": [{"index": 0, "function": {"arguments": "{x"}}]}, True),
        ({"reasoning_content": "thinking"}, True),
        ({"role": "assistant"}, False),
        ({"content": ""}, False),
        ({"tool_calls": []}, False),
    ],
)
def test_which_chunks_without_text_are_progress(delta: dict[str, object], progress: bool) -> None:
    chunk = parse_chunk({"choices": [{"index": 0, "delta": delta}]}, chat=True)
    assert chunk.text == "" and chunk.progress is progress


def test_logprobs_are_progress() -> None:
    chunk = parse_chunk({"choices": [{"index": 0, "text": "", "logprobs": {"x": 1}}]}, chat=False)
    assert chunk.progress
