"""The executor against scripted backends: ordering, failure classes, residency re-check."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import AsyncIterator

import pytest

from failover import executor
from failover.executor import Attempt, Budgets, Execution, ExecutionFailed
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, StreamError, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind, Region
from regions.request import GenerationRequest, Kind, Residency
from routing.plan import Candidate, Plan

pytestmark = pytest.mark.looptime  # timeouts and scripted delays on virtual time

EU = Region("aws:eu-west-1", frozenset({"EU"}))
US = Region("aws:us-east-1", frozenset({"US"}))


class Scripted:
    """A backend that plays a script: strings are tokens, exceptions are raised, floats sleep."""

    def __init__(self, *script: object) -> None:
        self.script = script
        self.calls = 0
        self.closed = 0

    def passthrough(self, kind: Kind) -> bool:
        return False

    async def close(self) -> None:
        pass

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        self.calls += 1
        try:
            for step in self.script:
                if isinstance(step, BaseException):
                    raise step
                if isinstance(step, float):
                    await asyncio.sleep(step)
                elif step == "<finish>":
                    yield Finish("stop")
                else:
                    yield TokenDelta(str(step))
            yield Usage(3, len([s for s in self.script if isinstance(s, str) and s != "<finish>"]))
        finally:
            self.closed += 1


class Sink:
    """Admits everything, never hedges, remembers outcomes and counters."""

    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []
        self.counts: list[str] = []

    def admit(self, backend: BackendSpec, now: float) -> int | None:
        return 0

    def hedge_delay(self, backend: BackendSpec) -> float | None:
        return None

    def count(self, event: str) -> None:
        self.counts.append(event)

    def attempt_finished(self, attempt: Attempt) -> None:
        self.outcomes.append(
            (attempt.backend.name, attempt.failure.failure.value if attempt.failure else "ok")
        )


def spec(name: str, region: Region = EU) -> BackendSpec:
    return BackendSpec(name, "m", "v1", region, ProviderKind.VLLM, "http://x", "s")


def execution(
    providers: dict[str, Scripted],
    order: list[BackendSpec],
    residency: Residency = Residency(),
    policy: FailoverPolicy = FailoverPolicy(
        TimeoutPolicy(first_token=0.2, idle=0.2), resume=False, hedge=False, rounds=1
    ),
) -> tuple[Execution, Sink]:
    sink = Sink()
    request = GenerationRequest(Kind.CHAT, "m", "rid", residency=residency)
    plan = Plan("m", "v1", tuple(Candidate(b, "test") for b in order))
    clock = asyncio.get_running_loop().time  # virtual time: the loop's clock
    ex = Execution(request, plan, providers, policy, sink, Budgets(), clock=clock)  # type: ignore[arg-type]
    return ex, sink


async def drain(ex: Execution) -> list[Event]:
    return [e async for e in ex.events()]


async def test_failures_before_first_token_move_down_the_plan() -> None:
    providers = {
        "a": Scripted(BackendError(FailureClass.CONNECT, "refused")),
        "b": Scripted(BackendError(FailureClass.SERVER, "500", status=500)),
        "c": Scripted(10.0),  # no first token in time
        "d": Scripted(" hello", " world", "<finish>"),
    }
    ex, sink = execution(providers, [spec(n) for n in "abcd"])
    head = await ex.start()
    rest = await drain(ex)
    text = "".join(e.text for e in head + rest if isinstance(e, TokenDelta))
    assert text == " hello world"
    assert sink.outcomes == [("a", "connect"), ("b", "server"), ("c", "timeout"), ("d", "ok")]
    assert all(p.closed == 1 for p in providers.values())  # every attempt released
    assert ex.usage == Usage(3, 2)


async def test_client_error_stops_at_once() -> None:
    providers = {
        "a": Scripted(BackendError(FailureClass.CLIENT, "upstream status 400: too long")),
        "b": Scripted(" never"),
    }
    ex, _ = execution(providers, [spec("a"), spec("b")])
    with pytest.raises(ExecutionFailed) as info:
        await ex.start()
    assert info.value.status == 400 and info.value.message == "too long"
    assert providers["b"].calls == 0


async def test_exhausted_plan_is_503_with_the_smallest_retry_after() -> None:
    providers = {
        "a": Scripted(BackendError(FailureClass.OVERLOADED, "429", retry_after=9)),
        "b": Scripted(BackendError(FailureClass.OVERLOADED, "429", retry_after=4)),
    }
    ex, _ = execution(providers, [spec("a"), spec("b")])
    with pytest.raises(ExecutionFailed) as info:
        await ex.start()
    assert (info.value.status, info.value.retry_after) == (503, 4)
    assert "overloaded" in info.value.message


async def test_attempts_recheck_residency_even_if_the_plan_is_wrong() -> None:
    providers = {"us": Scripted(" leak"), "eu": Scripted(" ok", "<finish>")}
    eu_only = Residency(frozenset({"EU"}))
    ex, sink = execution(providers, [spec("us", US), spec("eu")], eu_only)
    await ex.start()
    await drain(ex)
    assert providers["us"].calls == 0
    assert sink.outcomes == [("eu", "ok")]


async def test_failure_after_first_token_is_a_terminal_stream_error() -> None:
    providers = {
        "a": Scripted(" one", BackendError(FailureClass.STREAM_BROKEN, "reset")),
        "b": Scripted(" two"),
    }
    ex, sink = execution(providers, [spec("a"), spec("b")])
    await ex.start()
    rest = await drain(ex)
    # The gateway's words: the failure class and the request id, not the backend's text.
    assert isinstance(rest[-1], StreamError) and "(stream_broken)" in rest[-1].message
    assert "request id" in rest[-1].message and "reset" not in rest[-1].message
    assert providers["b"].calls == 0  # no silent retry after tokens were sent
    assert sink.outcomes == [("a", "stream_broken")]


async def test_idle_gap_after_first_token_times_out() -> None:
    providers = {"a": Scripted(" one", 5.0, " two")}
    ex, sink = execution(providers, [spec("a")])
    await ex.start()
    rest = await drain(ex)
    assert isinstance(rest[-1], StreamError) and "(timeout)" in rest[-1].message
    assert sink.outcomes == [("a", "timeout")]


async def test_executions_share_one_jitter_generator_unless_given_one() -> None:
    # random.Random() seeds itself from os.urandom: a syscall per request, for
    # a backoff jitter most requests never draw.
    (a, _), (b, _) = execution({}, []), execution({}, [])
    assert a.rng is b.rng is executor.JITTER
    own = random.Random(7)
    c = Execution(a.request, a.plan, {}, a.policy, Sink(), Budgets(), rng=own)
    assert c.rng is own


def test_a_forked_worker_draws_its_own_jitter() -> None:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first draw, to the parent
        os.write(write, repr(executor.JITTER.random()).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = float(pipe.read())
    assert child != executor.JITTER.random()
