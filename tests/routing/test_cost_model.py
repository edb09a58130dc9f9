"""The cost model: per-token and per-hour prices, the measured capacity, and routing's use of both."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from regions.inventory import BackendSpec, Price, ProviderKind, Region
from regions.throughput import Throughput
from routing.score import rank
from routing.signals import BackendSignal

REGION = Region("onprem:fra1", frozenset({"EU"}))


def spec(name: str, price: Price) -> BackendSpec:
    return BackendSpec(name, "m", "v1", REGION, ProviderKind.VLLM, "http://x", "s", price=price)


def test_per_token_cost_is_tokens_times_price() -> None:
    assert Price(0.5, 2.0).cost(1000, 500) == pytest.approx((1000 * 0.5 + 500 * 2.0) / 1e6)


def test_hourly_cost_from_the_seed_before_anything_is_measured() -> None:
    price = Price.hourly(3.6, tokens_per_s=1000.0)
    # $3.60/h at 1000 tokens/s: $1e-6 per output token; input free by default.
    assert price.cost(5000, 100) == pytest.approx(100e-6)
    assert Price.hourly(3.6, 1000.0, input_ratio=0.25).cost(400, 100) == pytest.approx(200e-6)


def test_hourly_cost_unknown_without_seed_or_sample_is_zero() -> None:
    price = Price.hourly(3.6)
    assert price.meter is not None and price.meter.source == "unknown"
    assert price.cost(100, 100) == 0.0


def test_the_meter_is_not_part_of_the_price_value() -> None:
    a, b = Price.hourly(2.0, 100.0), Price.hourly(2.0, 100.0)
    assert a.meter is not b.meter
    assert a == b and hash(a) == hash(b)  # a reload that keeps the figures changes nothing


def test_aggregate_throughput_of_concurrent_streams_is_the_sum() -> None:
    meter = Throughput(bucket_s=5.0)
    # Ten streams at 50 tokens/s each over the same 10 s: 500 tokens/s together.
    for _ in range(10):
        meter.observe(500, 100.0, 110.0)
    assert meter.capacity == pytest.approx(500.0)
    assert meter.source == "measured"


def test_tokens_are_spread_over_the_time_the_request_ran() -> None:
    meter = Throughput(bucket_s=5.0)
    meter.observe(600, 0.0, 60.0)  # one long stream at 10 tokens/s, finished at once
    assert meter.capacity == pytest.approx(10.0)  # not 600 tokens in one 5 s bucket


def test_the_peak_is_taken_at_once_and_decays_only_while_busy() -> None:
    meter = Throughput(bucket_s=1.0, decay_s=100.0)
    meter.observe(1000, 0.0, 1.0)  # a burst: 1000 tokens/s
    assert meter.capacity == pytest.approx(1000.0)
    # An hour idle, then a small request: the idle hour decays nothing (one bucket only).
    meter.observe(10, 3600.0, 3601.0)
    assert meter.capacity == pytest.approx(1000.0 * math.exp(-1 / 100))
    # Busy at 100 tokens/s for 200 s: the peak decays toward that, by exp(-busy/τ).
    for t in range(3602, 3802):
        meter.observe(100, float(t - 1), float(t))
    expected = 1000.0 * math.exp(-201 / 100)
    assert meter.capacity == pytest.approx(max(expected, 100.0), rel=1e-6)
    assert (meter.capacity or 0) > 100.0  # a decayed *peak*, not the current rate


def test_the_seed_stands_until_measured_and_stays_a_floor() -> None:
    meter = Throughput(seed=2000.0, bucket_s=1.0)
    assert (meter.capacity, meter.source) == (2000.0, "configured")
    meter.observe(50, 0.0, 1.0)  # light traffic is not a slower backend
    assert (meter.capacity, meter.source) == (2000.0, "configured")
    meter.observe(5000, 1.0, 2.0)
    assert (meter.capacity, meter.source) == (5000.0, "measured")


def test_a_bad_seed_is_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        Throughput(seed=0.0)


def test_old_buckets_are_forgotten() -> None:
    meter = Throughput(bucket_s=1.0)
    for t in range(1000):
        meter.observe(1, float(t), float(t) + 0.5)
    assert len(meter._buckets) <= 48


def signal() -> BackendSignal:
    return BackendSignal(ttft_s=0.1, itl_s=0.02)


def test_routing_prices_a_request_with_the_method_spend_uses() -> None:
    hourly = Price.hourly(7.2, tokens_per_s=1000.0)
    token = Price(0.1, 1.5)
    backends = [(spec("gpu", hourly), 1.0, signal()), (spec("api", token), 1.0, signal())]
    ranked = rank(
        backends, prompt_tokens=300, expected_tokens=200, cost_weight=1.0, rng=random.Random(1)
    )
    prices = {s.backend.name: s.price for s in ranked}
    assert prices == {"gpu": hourly.cost(300, 200), "api": token.cost(300, 200)}


def test_measured_capacity_changes_the_route() -> None:
    """Equal latency: the cheaper per token wins; a GPU backend measured faster becomes cheaper."""
    hourly = Price.hourly(7.2, tokens_per_s=500.0)  # $4e-6 per output token
    token = Price(0.0, 2.0)  # $2e-6 per output token
    backends = [(spec("gpu", hourly), 1.0, signal()), (spec("api", token), 1.0, signal())]

    def winner() -> str:
        ranked = rank(
            backends, prompt_tokens=10, expected_tokens=100, cost_weight=5.0, rng=random.Random(3)
        )
        return ranked[0].backend.name

    assert winner() == "api"
    assert hourly.meter is not None
    hourly.meter.observe(20_000, 0.0, 5.0)  # 4000 tokens/s measured: $0.5e-6 per token
    assert winner() == "gpu"


def test_an_unmeasured_per_hour_backend_is_priced_at_the_median_of_the_others() -> None:
    """Neither free (flooded) nor ignored: cost weighting still compares the rest."""
    backends = [
        (spec("cheap", Price(0.0, 1.0)), 1.0, signal()),
        (spec("dear", Price(0.0, 3.0)), 1.0, signal()),
        (spec("gpu", Price.hourly(2.0)), 1.0, signal()),  # no seed, nothing measured
    ]
    ranked = rank(
        backends, prompt_tokens=10, expected_tokens=1000, cost_weight=1.0, rng=random.Random(1)
    )
    by_name = {s.backend.name: s for s in ranked}
    assert by_name["gpu"].price == pytest.approx(2.0e-3)  # median of 1e-3 and 3e-3
    assert by_name["cheap"].score < by_name["gpu"].score < by_name["dear"].score


def test_alone_an_unmeasured_per_hour_backend_leaves_cost_out() -> None:
    ranked = rank(
        [(spec("gpu", Price.hourly(2.0)), 1.0, signal())],
        prompt_tokens=10,
        expected_tokens=100,
        cost_weight=1.0,
        rng=random.Random(1),
    )
    assert ranked[0].price == 0.0 and ranked[0].score == 1.0


Requests = st.lists(
    st.tuples(
        st.floats(0, 100),  # start
        st.floats(0, 20),  # duration
        st.integers(1, 10_000),  # tokens
    ),
    min_size=1,
    max_size=30,
)


@given(Requests)
def test_without_decay_the_capacity_is_the_busiest_buckets_rate(requests: list[Any]) -> None:
    """Against a brute-force count: each request's tokens spread over its time, per bucket."""
    width = 5.0
    meter = Throughput(bucket_s=width, decay_s=1e300)
    spans = sorted(((s, s + d, n) for s, d, n in requests), key=lambda r: r[1])
    totals: dict[int, float] = {}
    for start, end, tokens in spans:
        meter.observe(tokens, start, end)
        for k in range(int(start // width), int(end // width) + 1):
            if end > start:
                overlap = min(end, (k + 1) * width) - max(start, k * width)
                totals[k] = totals.get(k, 0.0) + tokens * overlap / (end - start)
            elif k == int(end // width):
                totals[k] = totals.get(k, 0.0) + tokens
    assert meter.capacity == pytest.approx(max(totals.values()) / width)


@given(Requests, st.floats(1, 1e5))
def test_the_capacity_never_falls_below_the_seed(requests: list[Any], seed: float) -> None:
    meter = Throughput(seed=seed, bucket_s=1.0, decay_s=10.0)
    for start, duration, tokens in sorted(requests, key=lambda r: r[0] + r[1]):
        meter.observe(tokens, start, start + duration)
        assert (meter.capacity or 0) >= seed
        assert meter.capacity == max(seed, meter.measured or 0)


def test_the_fleets_rate_stands_above_this_replicas_share() -> None:
    meter = Throughput(bucket_s=5.0)
    meter.observe(500, 100.0, 105.0)  # this replica's share: 100 tokens/s
    assert meter.capacity == pytest.approx(100.0) and meter.source == "measured"
    meter.fleet(7, 300.0)  # the store's sum over three replicas
    assert (meter.capacity, meter.source) == (300.0, "fleet")
    assert meter.local_measured == pytest.approx(100.0) and meter.fleet_measured == 300.0


def test_a_bucket_read_again_keeps_its_larger_rate_and_decays_once() -> None:
    meter = Throughput(bucket_s=1.0, decay_s=100.0)
    meter.fleet(10, 100.0)
    meter.fleet(10, 80.0)  # an older read of it: buckets only grow
    meter.fleet(10, 150.0)  # late finishers added to it
    assert meter.capacity == 150.0
    for _ in range(5):
        meter.fleet(11, 20.0)  # read every tick: one new busy bucket, one decay
    assert meter.capacity == pytest.approx(150.0 * math.exp(-1 / 100))


def test_the_fleets_peak_decays_per_busy_bucket_and_a_gap_counts_as_one() -> None:
    meter = Throughput(bucket_s=5.0, decay_s=100.0)
    meter.fleet(0, 1000.0)
    meter.fleet(720, 10.0)  # an hour later: one bucket's decay, not an hour's
    assert meter.capacity == pytest.approx(1000.0 * math.exp(-5 / 100))
    for k in range(721, 741):
        meter.fleet(k, 10.0)
    assert meter.capacity == pytest.approx(1000.0 * math.exp(-21 * 5 / 100))


def test_a_bucket_older_than_the_horizon_is_not_counted_again() -> None:
    meter = Throughput(bucket_s=1.0, decay_s=1e300)
    meter.fleet(100, 10.0)
    meter.fleet(50, 1000.0)  # forgotten already
    assert meter.capacity == 10.0


def test_a_stale_fleet_figure_gives_way_to_the_local_one_until_read_again() -> None:
    meter = Throughput(seed=50.0, bucket_s=1.0)
    meter.fleet(1, 400.0)
    meter.observe(100, 0.0, 1.0)
    assert (meter.capacity, meter.source) == (400.0, "fleet")
    meter.fleet_stale()
    assert (meter.capacity, meter.source) == (100.0, "measured")
    meter.fleet(2, 10.0)  # the store answers again: its peak stood, decayed one bucket
    assert meter.source == "fleet" and meter.capacity == pytest.approx(400.0 * math.exp(-1 / 600))


def test_the_seed_is_a_floor_under_the_fleets_rate_too() -> None:
    meter = Throughput(seed=2000.0, bucket_s=1.0)
    meter.fleet(1, 500.0)
    assert (meter.capacity, meter.source) == (2000.0, "configured")


Reads = st.lists(
    st.tuples(
        st.integers(0, 23),  # within the horizon
        st.floats(0.001, 1e5),
    ),
    min_size=1,
    max_size=60,
)


@given(Reads, Requests)
def test_without_decay_the_capacity_is_the_larger_of_the_fleets_and_the_local_peak(
    reads: list[tuple[int, float]], requests: list[Any]
) -> None:
    """In any order, read any number of times: the fleet's busiest bucket, or this replica's."""
    meter = Throughput(bucket_s=5.0, decay_s=1e300)
    local = Throughput(bucket_s=5.0, decay_s=1e300)
    for start, duration, tokens in sorted(requests, key=lambda r: r[0] + r[1]):
        meter.observe(tokens, start, start + duration)
        local.observe(tokens, start, start + duration)
    for bucket, rate in reads:
        meter.fleet(bucket, rate)
    assert meter.fleet_measured == max(rate for _, rate in reads)
    assert meter.capacity == pytest.approx(max(meter.fleet_measured, local.capacity or 0))


@given(st.lists(st.tuples(st.integers(0, 200), st.floats(0.001, 1e4)), min_size=1, max_size=40))
def test_reading_the_horizon_again_every_tick_changes_nothing(
    reads: list[tuple[int, float]],
) -> None:
    """The feed reads the last buckets at every tick: repeats of what it fed add no decay."""
    reads = sorted(reads)
    once = Throughput(bucket_s=5.0, decay_s=100.0)
    often = Throughput(bucket_s=5.0, decay_s=100.0)
    for i, (bucket, rate) in enumerate(reads):
        once.fleet(bucket, rate)
        for earlier, earlier_rate in reads[max(0, i - 5) : i + 1]:  # a tick's re-read
            often.fleet(earlier, earlier_rate)
    assert often.capacity == pytest.approx(once.capacity)
