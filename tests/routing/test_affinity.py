from __future__ import annotations

import math
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from routing.affinity import BLOCK_CHARS, Ring, pick_bounded, prefix_key

SERVERS = [f"s{i}" for i in range(6)]
RING = Ring(SERVERS)


@given(
    keys=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=300),
    c=st.floats(1.05, 2.0),
    n=st.integers(2, 6),
)
def test_bounded_load_never_exceeds_c_times_average(keys: list[int], c: float, n: int) -> None:
    eligible = SERVERS[:n]
    load: Counter[str] = Counter()
    for key in keys:
        chosen = pick_bounded(RING, key, eligible, load.__getitem__, c)
        assert chosen in eligible
        load[chosen] += 1
        total = sum(load.values())
        assert max(load.values()) <= math.ceil(c * total / n)


def test_same_prefix_same_server_until_it_is_full() -> None:
    system = "You are a careful assistant. " * 10
    keys = {prefix_key(system + f"question {i}", "m") for i in range(50)}
    assert len(keys) == 1  # the tails differ, the block-aligned prefix does not
    assert prefix_key("short", "m") != prefix_key("shorter", "m")
    assert len(system) > BLOCK_CHARS
    key = keys.pop()
    idle = pick_bounded(RING, key, SERVERS, lambda s: 0)
    assert pick_bounded(RING, key, SERVERS, lambda s: 0) == idle
    busy = pick_bounded(RING, key, SERVERS, lambda s: 100 if s == idle else 0)
    assert busy != idle  # overflow walks on instead of piling onto the hot server


def test_removing_a_server_only_moves_its_keys() -> None:
    keys = range(0, 2**64, 2**54)
    before = {k: pick_bounded(RING, k, SERVERS, lambda s: 0, c=100) for k in keys}
    after = {k: pick_bounded(RING, k, SERVERS[1:], lambda s: 0, c=100) for k in keys}
    moved = {k for k in keys if before[k] != after[k]}
    assert moved == {k for k in keys if before[k] == "s0"}
