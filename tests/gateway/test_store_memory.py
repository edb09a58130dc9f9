"""MemoryStore (a gateway without ``store.path``) answers as SQLite's in-memory
database did: one script of calls, the same answers from both."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.config.model import StoreConfig
from gateway.store import Changed, HealthHold, Quota, StoreConflict, open_store
from gateway.store.embedded import EmbeddedStore
from gateway.store.memory import MemoryStore


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


async def _script(store: Any, clock: Clock) -> list[object]:
    """Every answer the store gives to one sequence of calls."""
    seen: list[object] = []
    await store.open()
    sub = await store.subscribe()
    seen.append(await store.revision())
    seen.append(await store.commit({"split/m": {"v1": 100}}, actor="a", action="split.set"))
    seen.append(await store.commit({"split/m": {"v1": 100}}, actor="a", action="again"))  # no-op
    seen.append(
        await store.commit(
            {"drain/r": {"on": True}, "split/m": {"v1": 50, "v2": 50}, "gone/x": None},
            actor="b",
            action="two",
            note="n",
            expect={"split/m": {"v1": 100}, "drain/r": None},
        )
    )
    with pytest.raises(StoreConflict):
        await store.commit({"drain/r": None}, actor="c", action="x", expect={"drain/r": None})
    seen.append(await store.commit({"drain/r": None}, actor="c", action="undrain"))
    seen.append(await store.commit({"drain/r": {"on": 1.5}}, actor="c", action="drain"))
    loaded = await store.load()
    seen.append((loaded.revision, list(loaded.entries.items())))  # order as well
    for limit in (0, 1, 2, 50, -1):
        seen.append(await store.audit(limit))
    seen.append(await sub.next(1.0))  # the first commit's notice
    await store.publish(HealthHold("b1", 5.0, "r1", "down"))
    while isinstance(notice := await sub.next(1.0), Changed):  # the queued ones: at once
        seen.append(notice)
    seen.append(notice)  # the hold
    # Count windows: added, renewed, expired by a later write.
    await store.add_counts("w1", {"ok": 2, "err": 0})
    await store.add_counts("w1", {"ok": 3, "err": 1, "neg": -1})
    await store.add_counts("w2", {"ok": 1, "neg": 1}, ttl_s=10.0)
    await store.add_counts("w3", {})
    seen.append([await store.read_counts(n) for n in ("w1", "w2", "w3")])
    seen.append(await store.sum_counts(["w1", "w2", "w1", "missing"]))
    seen.append(await store.sum_counts([f"w{i % 3}" for i in range(130)]))  # several batches
    clock.now += 11.0
    seen.append(await store.read_counts("w2"))  # expired, not yet swept
    await store.add_counts("w1", {"ok": 1})
    seen.append([await store.read_counts("w1"), await store.read_counts("w2")])
    # The lease: taken, renewed, refused, released only by its holder, taken after expiry.
    seen.append(await store.lease("canary", "r1", 5.0))
    seen.append(await store.lease("canary", "r1", 5.0))
    seen.append(await store.lease("canary", "r2", 5.0))
    await store.release_lease("canary", "r2")
    seen.append(await store.lease("canary", "r2", 5.0))
    await store.release_lease("canary", "r1")
    seen.append(await store.lease("canary", "r2", 5.0))
    clock.now += 5.0
    seen.append(await store.lease("canary", "r3", 5.0))
    quota = Quota(2, None, 1)
    seen.append(await store.admit("t", quota, "s1", clock.now))
    seen.append(await store.admit("t", quota, "s2", clock.now))
    await store.release("t", "s1", 10, clock.now)
    seen.append(await store.admit("t", quota, "s3", clock.now))
    await sub.close()
    await store.close()
    await store.open()  # an in-memory database does not outlive its close
    loaded = await store.load()
    seen.append((loaded.revision, dict(loaded.entries), await store.audit()))
    await store.close()
    return seen


async def test_memory_store_answers_as_sqlite_in_memory() -> None:
    sqlite_clock, memory_clock = Clock(), Clock()
    expected = await _script(EmbeddedStore(clock=sqlite_clock), sqlite_clock)
    got = await _script(MemoryStore(clock=memory_clock), memory_clock)
    assert got == expected


def test_a_store_without_a_path_is_the_memory_store_and_one_with_a_path_sqlite() -> None:
    memory = open_store(StoreConfig())
    assert isinstance(memory, MemoryStore) and memory.kind == "embedded"
    assert isinstance(open_store(StoreConfig(path="/tmp/x.db")), EmbeddedStore)
