"""The splice's watchdog is paused while the client is written to, without a call
per event: a slow client is not an idle backend, and a total deadline passed
meanwhile still cuts the stream as soon as the client is back. On virtual time."""

from __future__ import annotations

import asyncio

import pytest

from failover.executor import Budgets, Execution
from failover.policy import FailoverPolicy, TimeoutPolicy
from failover.watchdog import Watchdog
from regions.events import Event, StreamError, TokenDelta
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.failover.test_executor import Scripted, Sink, spec

pytestmark = pytest.mark.looptime


def execution(backend: Scripted, total: float = 60.0) -> Execution:
    policy = FailoverPolicy(
        TimeoutPolicy(first_token=1.0, idle=0.5, total=total), resume=False, hedge=False, rounds=1
    )
    plan = Plan("m", "v1", (Candidate(spec("a"), "test"),))
    request = GenerationRequest(Kind.CHAT, "m", "rid")
    clock = asyncio.get_running_loop().time
    return Execution(request, plan, {"a": backend}, policy, Sink(), Budgets(), clock=clock)  # type: ignore[dict-item]


async def slow_client(ex: Execution, pause: float) -> list[Event]:
    await ex.start()
    got: list[Event] = []
    async for event in ex.events():
        got.append(event)
        await asyncio.sleep(pause)  # writing to a slow client
    return got


async def test_a_client_slower_than_the_idle_timeout_is_not_idle() -> None:
    got = await slow_client(execution(Scripted(0.1, "a", 0.1, "b", 0.1, "c", "<finish>")), 2.0)
    assert "".join(e.text for e in got if isinstance(e, TokenDelta)) == "bc"
    assert not any(isinstance(e, StreamError) for e in got)


async def test_a_total_deadline_passed_while_the_client_was_away_cuts_on_its_return() -> None:
    loop = asyncio.get_running_loop()
    ex = execution(Scripted(0.1, "a", 0.1, "b", 0.3, "c", "<finish>"), total=1.0)
    got = await slow_client(ex, 1.5)
    assert isinstance(got[-1], StreamError) and "timeout" in got[-1].message
    assert [e.text for e in got if isinstance(e, TokenDelta)] == ["b"]
    assert loop.time() == pytest.approx(0.2 + 1.5 + 1.5)  # cut at once, not at c's arrival
    assert ex.attempts[0].outcome == "timeout"


async def test_no_watchdog_call_per_event(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    pause, resume = Watchdog.pause, Watchdog.resume

    def counted_pause(self: Watchdog) -> None:
        calls.append("pause")
        pause(self)

    def counted_resume(self: Watchdog, now: float | None = None) -> None:
        calls.append("resume")
        resume(self, now)

    monkeypatch.setattr(Watchdog, "pause", counted_pause)
    monkeypatch.setattr(Watchdog, "resume", counted_resume)
    got = await slow_client(execution(Scripted(*"abcdefgh", "<finish>")), 0.0)
    assert len(got) == 9  # 7 tokens after the first, the finish, the usage
    assert calls == []
