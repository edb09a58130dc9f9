"""Routing's per-request shortcuts (issue 22) decide what the documented rules decide.

The structural tests say what the common request no longer computes; the
properties check the plans and scores against the formulas, so a shortcut
that changed a decision fails here as well as in the routing tests.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

import routing.router
import routing.score
from regions.inventory import BackendSpec, ProviderKind
from regions.request import GenerationRequest, Kind, Sampling
from routing.score import COLD_ITL_S, COLD_TTFT_S, rank
from routing.signals import BackendSignal
from routing.snapshot import RoutingSnapshot
from tests.routing.test_router import REGIONS, Live, req, snap


def _counting(monkeypatch: pytest.MonkeyPatch, module: object, name: str) -> list[object]:
    calls: list[object] = []
    real: Callable[..., object] = getattr(module, name)

    def counted(*args: object) -> object:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_ranking_warm_backends_takes_no_median(monkeypatch: pytest.MonkeyPatch) -> None:
    medians = _counting(monkeypatch, routing.score, "_median")
    warm = BackendSignal(ttft_s=0.1, itl_s=0.01)
    specs = [
        BackendSpec(n, "m", "v1", REGIONS["onprem:fra1"], ProviderKind.VLLM, "u", "s")
        for n in ("a", "b", "c")
    ]
    rank(
        [(s, 1.0, warm) for s in specs],
        prompt_tokens=1,
        expected_tokens=8,
        cost_weight=0.0,
        rng=random.Random(1),
    )
    assert medians == []
    rank(
        [(specs[0], 1.0, warm), (specs[1], 1.0, BackendSignal())],
        prompt_tokens=1,
        expected_tokens=8,
        cost_weight=0.0,
        rng=random.Random(1),
    )
    assert len(medians) == 2  # a cold backend: the warm TTFT and ITL medians, once each


def test_a_request_asking_nothing_of_backends_without_a_window_checks_no_capability(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    missing = _counting(monkeypatch, routing.router, "missing")
    too_long = _counting(monkeypatch, routing.router, "too_long")
    plan = routing.router.Router(random.Random(1)).plan(snap(), req())
    assert plan.candidates
    assert (missing, too_long) == ([], [])


@given(
    ttfts=st.lists(st.one_of(st.none(), st.floats(0.001, 5.0)), min_size=1, max_size=9),
    itls=st.lists(st.one_of(st.none(), st.floats(0.0001, 0.5)), min_size=9, max_size=9),
    loads=st.lists(st.integers(0, 50), min_size=9, max_size=9),
    expected=st.integers(1, 4096),
    seed=st.integers(0, 2**32),
)
def test_latencies_are_the_documented_formula_with_cold_backends_at_the_warm_median(
    ttfts: list[float | None],
    itls: list[float | None],
    loads: list[int],
    expected: int,
    seed: int,
) -> None:
    n = len(ttfts)
    specs = [
        BackendSpec(f"b{i}", "m", "v1", REGIONS["onprem:fra1"], ProviderKind.VLLM, "u", "s")
        for i in range(n)
    ]
    signals = [BackendSignal(ttfts[i], itls[i], loads[i]) for i in range(n)]
    warm_ttft = [t for t in ttfts if t is not None]
    warm_itl = [t for t in itls[:n] if t is not None]
    cold_ttft = statistics.median(warm_ttft) if warm_ttft else COLD_TTFT_S
    cold_itl = statistics.median(warm_itl) if warm_itl else COLD_ITL_S
    ranked = rank(
        [(s, 1.0, g) for s, g in zip(specs, signals, strict=True)],
        prompt_tokens=1,
        expected_tokens=expected,
        cost_weight=0.0,
        rng=random.Random(seed),
    )
    by_name = {s.name: i for i, s in enumerate(specs)}
    for scored in ranked:
        sig = signals[by_name[scored.backend.name]]
        ttft = cold_ttft if sig.ttft_s is None else sig.ttft_s
        itl = cold_itl if sig.itl_s is None else sig.itl_s
        assert scored.latency == pytest.approx((ttft + itl * expected) * (sig.in_flight + 1))
        assert scored.cold == (sig.ttft_s is None)


@given(
    loads=st.lists(st.integers(0, 40), min_size=4, max_size=4),
    prompt=st.text(min_size=0, max_size=300),
    seed=st.integers(0, 2**32),
)
def test_each_plan_has_one_p2c_pick_and_an_affine_member_only_first(
    loads: list[int], prompt: str, seed: int
) -> None:
    pool = tuple(
        BackendSpec(f"gpu{i}", "m", "v1", REGIONS["onprem:fra1"], ProviderKind.VLLM, "u", "s")
        for i in range(4)
    )
    s = RoutingSnapshot.build(1, {"m": {"v1": 100}}, pool)
    request = GenerationRequest(Kind.COMPLETION, "m", "id", prompt=prompt, sampling=Sampling(8))
    live = Live(**{f"gpu{i}": BackendSignal(0.1, 0.01, load) for i, load in enumerate(loads)})
    plan = routing.router.Router(random.Random(seed)).plan(s, request, signals=live)
    whys = [c.why for c in plan.candidates]
    assert whys.count("p2c pick") == 1
    assert set(whys[1:]) <= {"p2c pick", "failover"}
    assert whys[0] in ("p2c pick", "prefix affinity in pool")
    assert sorted(c.backend.name for c in plan.candidates) == [b.name for b in pool]
