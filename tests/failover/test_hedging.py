"""Hedging on virtual time (looptime): the hedge starts exactly at the backend's
hedge delay, the first token wins, and the loser is cancelled and closed."""

from __future__ import annotations

import asyncio

import pytest

from failover.executor import Budgets, Execution
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.events import TokenDelta
from regions.inventory import BackendSpec
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Scripted, Sink, drain, spec

pytestmark = pytest.mark.looptime


class Hedging(Sink):
    """Hedges every attempt after 100 ms."""

    def hedge_delay(self, backend: BackendSpec) -> float | None:
        return 0.1


async def test_a_slow_first_attempt_is_raced_and_the_first_token_wins() -> None:
    loop = asyncio.get_running_loop()
    slow, fast = Scripted(5.0, "late", "<finish>"), Scripted(0.02, "quick", "<finish>")
    sink = Hedging()
    policy = FailoverPolicy(TimeoutPolicy(first_token=10.0), resume=False, rounds=1)
    plan = Plan("m", "v1", (Candidate(spec("slow"), "test"), Candidate(spec("fast"), "test")))
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    ex = Execution(
        request,
        plan,
        {"slow": slow, "fast": fast},  # type: ignore[dict-item]
        policy,
        sink,
        Budgets(),
        clock=loop.time,
    )
    started = loop.time()
    head = await ex.start()
    assert loop.time() - started == pytest.approx(0.12)  # hedge at 100 ms + its 20 ms TTFT
    text = [e.text for e in head + await drain(ex) if isinstance(e, TokenDelta)]
    assert text == ["quick"]
    assert [(a.backend.name, a.kind, a.outcome) for a in ex.attempts] == [
        ("slow", "primary", "cancelled"),
        ("fast", "hedge", "ok"),
    ]
    assert sink.counts == ["hedged"] and slow.closed == 1
    await ex.aclose()
