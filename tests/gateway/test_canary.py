"""Canary plan, analysis and controller as plain data, with an injected clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.canary.analysis import VersionSample, analyse
from gateway.canary.codec import from_doc, to_doc
from gateway.canary.controller import CanaryController
from gateway.canary.plan import Canary, CanaryPlan, Decision, Phase, Thresholds
from gateway.canary.window import bucket_bound, bucket_of, fields, p95, sample
from gateway.store import EmbeddedStore
from gateway.store.state import ControlState, canary_key, split_key

T = Thresholds(max_error_delta=0.02, max_ttft_ratio=1.5, min_requests=50)


def plan(steps: tuple[int, ...] = (5, 25, 50, 100), interval: float = 60.0) -> CanaryPlan:
    return CanaryPlan("m", "v1", "v2", steps, interval, T)


def test_analysis_holds_on_a_small_sample() -> None:
    v = analyse(VersionSample(500, 0), VersionSample(49, 40), T, ("v1", "v2"))
    assert v.decision is Decision.HOLD and "49 of 50 requests on v2" in v.reason


def test_analysis_rolls_back_on_the_error_delta() -> None:
    v = analyse(VersionSample(1000, 10), VersionSample(100, 4), T, ("v1", "v2"))
    assert v.decision is Decision.ROLLBACK
    assert v.reason == "error rate 4.0% on v2 vs 1.0% on v1 (+3.0% > 2.0%)"
    ok = analyse(VersionSample(1000, 10), VersionSample(100, 3), T)
    assert ok.decision is Decision.ADVANCE  # +2.0 points is not above 2.0


def test_analysis_rolls_back_on_ttft_but_ignores_sub_floor_noise() -> None:
    slow = analyse(VersionSample(100, 0, 0.200), VersionSample(100, 0, 0.400), T, ("v1", "v2"))
    assert slow.decision is Decision.ROLLBACK and "x2.00 > x1.50" in slow.reason
    noise = analyse(VersionSample(100, 0, 0.001), VersionSample(100, 0, 0.020), T)
    assert noise.decision is Decision.ADVANCE
    no_baseline = analyse(VersionSample(0, 0, None), VersionSample(100, 0, 0.5), T)
    assert no_baseline.decision is Decision.ADVANCE


def test_the_state_machine_to_success() -> None:
    c = Canary.start(plan(), "r1", now=1000.0, actor="ann")
    assert (c.phase, c.weight, c.due, c.split()) == (
        Phase.PROGRESSING,
        5,
        1060.0,
        {"v1": 95, "v2": 5},
    )
    held = c.decide(Decision.HOLD, "sample too small", 1060.0, "ctl")
    assert held.weight == 5 and held.due == 1120.0 and held.history == c.history
    assert held.window == c.window and held.last.startswith("hold:")
    a = held.decide(Decision.ADVANCE, "fine", 1120.0, "ctl")
    assert (a.weight, a.step, a.step_started, a.window) == (25, 1, 1120.0, "m:r1:1")
    a = a.decide(Decision.ADVANCE, "fine", 1180.0, "ctl")
    done = a.decide(Decision.ADVANCE, "fine", 1240.0, "ctl")
    assert done.phase is Phase.SUCCEEDED and done.weight == 100
    assert [h.weight for h in done.history] == [5, 25, 50, 100]
    assert done.decide(Decision.ROLLBACK, "late", 1300.0, "ctl") is done  # terminal
    with pytest.raises(ValueError, match="already succeeded"):
        done.abort(1300.0, "bob")


def test_rollback_waiting_promote_and_abort() -> None:
    c = Canary.start(plan((10, 50)), "r", 0.0, "ann")
    back = c.decide(Decision.ROLLBACK, "errors", 60.0, "ctl")
    assert back.phase is Phase.ROLLED_BACK and back.split() == {"v1": 100, "v2": 0}
    waiting = c.decide(Decision.ADVANCE, "ok", 60, "ctl").decide(Decision.ADVANCE, "ok", 120, "ctl")
    assert waiting.phase is Phase.WAITING and waiting.weight == 50
    assert waiting.decide(Decision.ADVANCE, "x", 180, "ctl") is waiting  # waits for a human
    assert waiting.promote(130, "bob").split() == {"v1": 0, "v2": 100}
    aborted = c.abort(1.0, "bob")
    assert aborted.phase is Phase.ABORTED and aborted.weight == 0
    assert aborted.history[-1].reason == "aborted by bob"


@pytest.mark.parametrize(
    ("steps", "interval", "words"),
    [((), 1, "empty"), ((5, 5), 1, "increase"), ((5, 101), 1, "between"), ((5,), 0, "positive")],
)
def test_bad_plans(steps: tuple[int, ...], interval: float, words: str) -> None:
    with pytest.raises(ValueError, match=words):
        Canary.start(plan(steps, interval), "r", 0, "a")


def test_codec_round_trips() -> None:
    c = Canary.start(plan(), "r", 5.5, "ann").decide(Decision.ADVANCE, "ok", 70.25, "ctl")
    assert from_doc(to_doc(c)) == c
    assert to_doc(from_doc(to_doc(c))) == to_doc(c)


def test_histograms_add_up_across_replicas() -> None:
    assert bucket_of(0.0) == 0 and bucket_of(0.001) == 0
    for seconds in (0.0011, 0.05, 0.3, 7.0):
        b = bucket_of(seconds)
        assert bucket_bound(b - 1) < seconds <= bucket_bound(b) * 1.000001
    counts: dict[str, int] = {}
    for ttft in [0.010] * 90 + [0.100] * 10:  # two replicas' counters, summed
        for f in fields("v2", ttft > 0.05, ttft):
            counts[f] = counts.get(f, 0) + 1
    s = sample(counts, "v2")
    assert (s.requests, s.errors) == (100, 10)
    assert s.ttft_p95_s == pytest.approx(bucket_bound(bucket_of(0.100)))
    assert p95({}) is None and sample(counts, "v1") == VersionSample(0, 0, None)


@pytest.fixture
async def store() -> AsyncIterator[EmbeddedStore]:
    s = EmbeddedStore()
    await s.open()
    yield s
    await s.close()


async def test_the_controller_applies_verdicts_at_due_times(store: EmbeddedStore) -> None:
    now = [1000.0]
    state: list[ControlState] = [ControlState()]

    async def write(changes: Any, **kw: Any) -> Any:
        commit = await store.commit(changes, **kw)
        state[0] = ControlState.parse(await store.load())
        return commit

    canary = Canary.start(
        CanaryPlan("m", "v1", "v2", (20, 100), 10.0, Thresholds(min_requests=5)), "r", now[0], "ann"
    )
    await write(
        {canary_key("m"): to_doc(canary), split_key("m"): canary.split()},
        actor="ann",
        action="canary.start",
    )
    ctl = CanaryController(store, lambda: state[0], write, "me", clock=lambda: now[0])
    await ctl.tick()
    assert state[0].canaries["m"] == canary  # not due yet
    now[0] = 1010.0
    await store.add_counts(canary.window, {"v1|req": 50, "v2|req": 3})
    await ctl.tick()
    held = state[0].canaries["m"]
    assert held.phase is Phase.PROGRESSING and "3 of 5 requests" in held.last and held.due == 1020.0
    now[0] = 1020.0
    await store.add_counts(canary.window, {"v2|req": 7, "v2|err": 5})
    await ctl.tick()
    final = state[0].canaries["m"]
    assert final.phase is Phase.ROLLED_BACK and "error rate 50.0% on v2" in final.last
    assert state[0].splits["m"] == {"v1": 100, "v2": 0}
    audit = await store.audit()
    assert [(e.actor, e.action) for e in audit][-2:] == [
        ("canary-controller", "canary.rollback"),
        ("canary-controller", "canary.rollback"),
    ]
    assert audit[-1].note.startswith("error rate 50.0%")


async def test_a_stale_controller_cannot_undo_an_abort(store: EmbeddedStore) -> None:
    canary = Canary.start(plan(interval=1.0), "r", 0.0, "ann")
    await store.commit({canary_key("m"): to_doc(canary)}, actor="ann", action="start")
    stale = ControlState.parse(await store.load())
    aborted = canary.abort(0.5, "bob")
    await store.commit({canary_key("m"): to_doc(aborted)}, actor="bob", action="abort")
    await store.add_counts(canary.window, {"v2|req": 100})
    ctl = CanaryController(store, lambda: stale, store.commit, "me", clock=lambda: 5.0)
    await ctl.tick()  # reads the stale state, analyses, and its write is refused
    current = ControlState.parse(await store.load())
    assert current.canaries["m"].phase is Phase.ABORTED
