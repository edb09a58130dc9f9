"""Once a finish reason has arrived the answer is complete (issue 20, item 1).

The vLLM emulator with ``reset_after_tokens`` (or ``stall_after_tokens``)
equal to its answer length sends the last token with its finish reason and
then drops (or stalls) before the usage chunk and ``[DONE]``. Every front end
must give one answer with one finish reason; nothing is re-generated on
another backend, and usage is not counted twice. Each of these failed on the
code before the fix (64 words, two finish reasons, usage counted twice).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
import pytest

from emulators.text import expected_text, render_chat
from emulators.vllm import VllmEmulator
from failover.executor import Attempt, Budgets, Execution
from failover.policy import FailoverPolicy, TimeoutPolicy
from regions.errors import BackendError, FailureClass
from regions.events import Event, Finish, StreamError, TokenDelta, Usage
from regions.inventory import BackendSpec, ProviderKind, Region
from regions.request import GenerationRequest, Kind
from routing.plan import Candidate, Plan
from tests.conftest import (
    GLOBAL_KEY,
    MODEL,
    EmulatorFactory,
    GatewayFactory,
    gateway_config,
    wait_for,
)
from tests.gateway.test_grpc_helpers import auth, chat, grpc_config, stub
from tests.hostile_backend import STALL, HostileBackend, answer
from tests.hostile_backend import Script as ByteScript

AUTH = {"Authorization": f"Bearer {GLOBAL_KEY}"}
PROMPT = "Tell me about the sea"
CONTEXT = render_chat([("user", PROMPT)], False)
ANSWER = 32  # the emulator's default_max_tokens: the answer when the client sets no max_tokens
FULL = expected_text(CONTEXT, ANSWER)


async def two_backends(
    emulators: EmulatorFactory,
    gateways: GatewayFactory,
    faults: dict[str, Any],
    *,
    both: bool = False,
) -> tuple[VllmEmulator, VllmEmulator, Any]:
    # A paced stream keeps the gateway's reader waiting on each chunk, so the
    # last one (with its finish reason) is read before the reset lands: aiohttp
    # drops data it buffered but nobody had read yet when the connection resets.
    first, second = await emulators(itl_s=0.01), await emulators()
    first.faults.update(faults)
    if both:
        second.faults.update(faults)
    gw = await gateways(
        grpc_config(
            [
                ("first", "aws:eu-west-1", "v1", first.url, {"weight": 1e6}),  # type: ignore[list-item]
                ("second", "onprem:fra1", "v1", second.url, {"weight": 1e-6}),  # type: ignore[list-item]
            ],
            timeouts={"idle_s": 0.3},
            failover={"health_checks": {"enabled": False}, "hedge": False},
        )
    )
    return first, second, gw


def sse_events(raw: str) -> list[dict[str, Any]]:
    return [orjson.loads(e[6:]) for e in raw.split("\n\n") if e.startswith("data: {")]


async def stream_chat(gw: Any, **extra: Any) -> tuple[int, str]:
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
    body.update(extra)
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        return resp.status, (await resp.read()).decode()


def check_stream(raw: str, *, usage: bool) -> None:
    events = sse_events(raw)
    assert not any("error" in e for e in events), raw
    assert raw.endswith("data: [DONE]\n\n")
    choices = [e["choices"][0] for e in events if e.get("choices")]
    text = "".join((c.get("delta") or {}).get("content") or "" for c in choices)
    assert text == FULL
    assert [c["finish_reason"] for c in choices if c.get("finish_reason")] == ["stop"]
    usages = [e["usage"] for e in events if e.get("usage")]
    if usage:
        assert len(usages) == 1 and usages[0]["completion_tokens"] == ANSWER
    assert len({e["id"] for e in events}) == 1


@pytest.mark.parametrize(
    "faults",
    [{"reset_after_tokens": ANSWER}, {"stall_after_tokens": ANSWER}],
    ids=["reset", "stall"],
)
async def test_streaming_answer_is_not_resumed_after_its_finish_reason(
    emulators: EmulatorFactory, gateways: GatewayFactory, faults: dict[str, Any]
) -> None:
    first, second, gw = await two_backends(emulators, gateways, faults)
    status, raw = await stream_chat(gw, stream_options={"include_usage": True})
    assert status == 200
    check_stream(raw, usage=True)
    assert second.stats.requests == 0  # nothing re-generated
    await wait_for(lambda: gw.runtime.lifecycle.in_flight == 0)
    await wait_for(lambda: first.stats.running == 0)


async def test_both_backends_failing_after_the_finish_still_give_a_complete_answer(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _first, _second, gw = await two_backends(
        emulators, gateways, {"reset_after_tokens": ANSWER}, both=True
    )
    for _ in range(3):
        status, raw = await stream_chat(gw)
        assert status == 200
        check_stream(raw, usage=False)
    assert "stream_failed" not in raw


async def test_non_stream_answer_has_one_answer_and_usage_once(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _first, second, gw = await two_backends(emulators, gateways, {"reset_after_tokens": ANSWER})
    body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}]}
    async with (
        aiohttp.ClientSession() as s,
        s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
    ):
        assert resp.status == 200
        answer = await resp.json()
    assert answer["choices"][0]["message"]["content"] == FULL
    assert answer["choices"][0]["finish_reason"] == "stop"
    # The usage chunk never arrived: the completion is what was streamed, not 64.
    assert answer["usage"]["completion_tokens"] == ANSWER
    assert answer["usage"]["total_tokens"] < 2 * ANSWER
    assert second.stats.requests == 0


async def test_grpc_stream_has_exactly_one_finish_reason(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    _first, second, gw = await two_backends(emulators, gateways, {"reset_after_tokens": ANSWER})
    async with stub(gw) as s:
        chunks = [c async for c in s.StreamChat(chat(None, include_usage=True), metadata=auth())]
    assert "".join(c.text for c in chunks) == FULL
    assert [c.finish_reason for c in chunks if c.finish_reason] == ["stop"]
    usages = [c.usage for c in chunks if c.HasField("usage")]
    assert len(usages) == 1 and usages[0].completion_tokens == ANSWER
    assert second.stats.requests == 0


# -- the executor alone, against scripted adapters ---------------------------------


class Script:
    def __init__(self, *events: Event | BaseException) -> None:
        self.events = events
        self.calls = 0

    def passthrough(self, kind: Kind) -> bool:
        return False

    async def close(self) -> None:
        pass

    async def stream(self, request: GenerationRequest) -> AsyncIterator[Event]:
        self.calls += 1
        for step in self.events:
            if isinstance(step, BaseException):
                raise step
            yield step


class Sink:
    def __init__(self) -> None:
        self.outcomes: list[tuple[str, str]] = []

    def admit(self, backend: BackendSpec, now: float) -> int | None:
        return 0

    def hedge_delay(self, backend: BackendSpec) -> float | None:
        return None

    def count(self, event: str) -> None:
        pass

    def attempt_finished(self, attempt: Attempt) -> None:
        self.outcomes.append((attempt.backend.name, attempt.outcome))


def run(providers: dict[str, Script], include_usage: bool = True) -> tuple[Execution, Sink]:
    region = Region("aws:eu-west-1", frozenset({"EU"}))
    specs = [
        BackendSpec(n, "m", "v1", region, ProviderKind.VLLM, "http://x", "s") for n in providers
    ]
    sink = Sink()
    request = GenerationRequest(
        Kind.CHAT, "m", "rid", prompt="", include_usage=include_usage, stream=True
    )
    plan = Plan("m", "v1", tuple(Candidate(b, "test") for b in specs))
    policy = FailoverPolicy(TimeoutPolicy(first_token=1.0, idle=1.0), hedge=False, rounds=1)
    return Execution(request, plan, providers, policy, sink, Budgets()), sink  # type: ignore[arg-type]


async def test_text_and_finish_after_the_finish_reason_are_dropped() -> None:
    providers = {
        "a": Script(
            TokenDelta("one"),
            TokenDelta(" two"),
            Finish("stop"),
            TokenDelta(" three"),
            Finish("length"),
            Usage(2, 2),
            Usage(9, 9),
        ),
        "b": Script(TokenDelta("never")),
    }
    ex, _sink = run(providers)
    events = [*await ex.start(), *[e async for e in ex.events()]]
    assert [e.text for e in events if isinstance(e, TokenDelta)] == ["one", " two"]
    assert [e.reason for e in events if isinstance(e, Finish)] == ["stop"]
    assert [e for e in events if isinstance(e, Usage)] == [Usage(2, 2)]
    assert ex.usage == Usage(2, 2)
    assert providers["b"].calls == 0


async def test_a_failure_after_the_finish_counts_against_the_backend_but_ends_cleanly() -> None:
    providers = {
        "a": Script(
            TokenDelta("one"),
            Finish("stop"),
            BackendError(FailureClass.STREAM_BROKEN, "reset"),
        ),
        "b": Script(TokenDelta("never")),
    }
    ex, sink = run(providers)
    events = [*await ex.start(), *[e async for e in ex.events()]]
    assert not any(isinstance(e, StreamError) for e in events)
    assert [e.reason for e in events if isinstance(e, Finish)] == ["stop"]
    assert sink.outcomes == [("a", "stream_broken")]
    assert providers["b"].calls == 0
    usage = [e for e in events if isinstance(e, Usage)]
    assert len(usage) == 1 and usage[0].completion_tokens == 1  # what is known


async def test_a_stall_after_the_finish_ends_the_answer_soon_not_at_the_idle_timeout(
    emulators: EmulatorFactory, gateways: GatewayFactory
) -> None:
    """The usage chunk and [DONE] follow a finish at once; waiting the 30 s idle
    timeout for them would hold a complete answer back."""
    words = expected_text(CONTEXT, 3).split(" ")[1:]
    events = answer([" " + w for w in words], usage=False)[:-1]  # no [DONE]
    hostile = HostileBackend(ByteScript([*events, STALL]))
    await hostile.start()
    try:
        gw = await gateways(
            gateway_config(
                [("hostile", "aws:eu-west-1", "v1", hostile.url)],
                failover={"health_checks": {"enabled": False}, "hedge": False},
            )
        )
        body = {"model": MODEL, "messages": [{"role": "user", "content": PROMPT}], "stream": True}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s,
            s.post(gw.http_url + "/v1/chat/completions", json=body, headers=AUTH) as resp,
        ):
            raw = (await resp.read()).decode()
        assert raw.endswith("data: [DONE]\n\n") and '"error"' not in raw
        assert "".join(
            (c.get("delta") or {}).get("content") or ""
            for e in sse_events(raw)
            for c in e.get("choices") or []
        ) == expected_text(CONTEXT, 3)
    finally:
        await hostile.stop()
