"""MemoryStore (a gateway without ``store.path``) answers as SQLite's in-memory
database did: one script of calls, the same answers from both."""

from __future__ import annotations

import asyncio
import tracemalloc
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.config.model import StoreConfig
from gateway.store import (
    AuditEntry,
    Changed,
    Commit,
    HealthHold,
    Loaded,
    Quota,
    StoreConflict,
    StoreUnavailable,
    embedded,
    memory,
    open_store,
)
from gateway.store.base import COUNTS_TTL_S
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


# -- generated call sequences: both stores, every answer and every error compared --

_NAN, _INF = float("nan"), float("inf")
_BAD = "x\udc80"  # a lone surrogate: what aiohttp's surrogateescape makes of a bad byte
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2) | st.text(max_size=2),
    lambda inner: (
        st.lists(inner, max_size=2) | st.dictionaries(st.text(max_size=2), inner, max_size=2)
    ),
    max_leaves=4,
)
_docs = st.dictionaries(st.sampled_from(["v1", "v2", "on"]), _json, max_size=2)
_values = _docs | st.none() | st.lists(st.integers(0, 2), max_size=1) | st.integers(0, 1)
_keys = st.sampled_from(["split/m", "drain/r", "canary/m", "k\x00z", _BAD])
_texts = st.sampled_from(["a", "", "b c", _BAD])
_windows = st.sampled_from(["w1", "w2", "w3", "missing", _BAD])
_fields = st.sampled_from(["ok", "err", "z", "a", "é", _BAD])
_ttls = st.sampled_from([0.0, -1.0, 1.0, 5.0, 60.0, _NAN, _INF, COUNTS_TTL_S])

_calls = st.one_of(
    st.tuples(
        st.just("commit"),
        st.dictionaries(_keys, _values, max_size=3),
        _texts,
        _texts,
        _texts,
        st.none() | st.dictionaries(_keys, _docs | st.none(), max_size=2),
    ),
    st.tuples(st.just("load")),
    st.tuples(st.just("revision")),
    st.tuples(st.just("audit"), st.integers(-2, 8)),
    st.tuples(st.just("publish"), st.sampled_from(["b1", "b2"])),
    st.tuples(st.just("notices")),
    st.tuples(st.just("subscribe")),
    st.tuples(
        st.just("add_counts"),
        _windows,
        st.dictionaries(_fields, st.integers(-3, 3), max_size=3),
        _ttls,
    ),
    st.tuples(st.just("read_counts"), _windows),
    st.tuples(st.just("sum_counts"), st.lists(_windows, max_size=3), st.integers(0, 70)),
    st.tuples(st.just("lease"), st.sampled_from(["L1", "L2", _BAD]), _texts, _ttls),
    st.tuples(st.just("release_lease"), st.sampled_from(["L1", "L2", _BAD]), _texts),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 5.0, 61.0])),
    st.tuples(st.just("close")),
    st.tuples(st.just("open")),
)


def _plain(value: object) -> object:
    """``value`` with every mapping as its list of items: the order is compared too."""
    if isinstance(value, dict):
        return [(k, _plain(v)) for k, v in value.items()]
    if isinstance(value, Loaded):
        return ("loaded", value.revision, _plain(dict(value.entries)))
    if isinstance(value, Commit):
        return ("commit", value.revision, [_plain(e) for e in value.entries])
    if isinstance(value, AuditEntry):
        return ("entry", *(_plain(v) for v in value.as_json().values()))
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


async def _replay(store: Any, clock: Clock, calls: list[tuple[Any, ...]]) -> list[object]:
    seen: list[object] = []
    await store.open()
    subs = [await store.subscribe()]
    for call in calls:
        name, args = call[0], call[1:]
        try:
            if name == "commit":
                changes, actor, action, note, expect = args
                answer: object = await store.commit(
                    changes, actor=actor, action=action, note=note, expect=expect
                )
            elif name == "publish":
                answer = await store.publish(HealthHold(args[0], 5.0, "r1", "down"))
            elif name == "notices":  # everything queued, per subscription
                notices = []
                for sub in subs:
                    while (notice := await sub.next(0.001)) is not None:
                        notices.append(notice)
                answer = notices
            elif name == "subscribe":
                subs.append(await store.subscribe())
                answer = len(subs)
            elif name == "sum_counts":
                names, repeat = args
                answer = await store.sum_counts(names * repeat)  # up to 210: several batches
            elif name == "tick":
                clock.now += args[0]
                answer = clock.now
            else:
                answer = await getattr(store, name)(*args)
        except Exception as exc:
            answer = _raised(exc)
        seen.append((name, _plain(answer), await _contents(store)))
    await store.close()
    return seen


def _raised(exc: Exception) -> object:
    """The same error, with the same words where they are ours (not SQLite's)."""
    return ("raised", type(exc).__name__, "" if isinstance(exc, StoreUnavailable) else str(exc))


async def _contents(store: Any) -> list[object]:
    """Everything a reader can see, after every call (reads change nothing)."""
    reads = [
        store.load(),
        store.audit(-1),
        *(store.read_counts(w) for w in ("w1", "w2", "w3")),
        store.sum_counts(["w3", "w1", "w2", "w1"]),
        store.sum_counts([]),
    ]
    seen = []
    for read in reads:
        try:
            seen.append(_plain(await read))
        except Exception as exc:
            seen.append(_raised(exc))
    return seen


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_calls, max_size=30))
def test_generated_calls_get_the_same_answers_and_errors_from_both(
    calls: list[tuple[Any, ...]],
) -> None:
    sqlite_clock, memory_clock = Clock(), Clock()
    expected = asyncio.run(_replay(EmbeddedStore(clock=sqlite_clock), sqlite_clock, calls))
    got = asyncio.run(_replay(MemoryStore(clock=memory_clock), memory_clock, calls))
    assert got == expected


async def test_the_audit_log_is_trimmed_at_the_same_revisions(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = []
    for module, store in ((embedded, EmbeddedStore()), (memory, MemoryStore())):
        monkeypatch.setattr(module, "AUDIT_KEEP_REVISIONS", 1_500)
        await store.open()
        audits = []
        for i in range(2_001):
            await store.commit({f"k{i % 3}": {"i": i}, "every": {"i": i}}, actor="a", action="x")
            if i in (998, 999, 1_999, 2_000):
                audits.append([(e.revision, e.key) for e in await store.audit(-1)])
        answers.append(audits)
        await store.close()
    assert answers[0] == answers[1]
    assert answers[1][1][0] == (1, "k0") and answers[1][2][0] == (501, "k2")  # trimmed at 2000


def test_a_recurring_key_and_actor_are_held_once_however_the_caller_built_them() -> None:
    """The audit keeps up to 100,000 revisions' entries: a fresh equal string per
    commit (an f-string key, a header's actor) must not cost a copy per entry."""

    async def grown(fresh: bool) -> int:
        store = MemoryStore(clock=Clock())
        await store.open()

        async def commits(n: int) -> None:
            for i in range(n):
                key = "/".join(["replica", "m@v1", "r1"]) if fresh else "replica/m@v1/r1"
                actor = "".join(["ops", "-user"]) if fresh else "ops-user"
                await store.commit({key: {"i": i % 7}}, actor=actor, action="replica.set")

        await commits(100)
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        await commits(2_000)
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        await store.close()
        return after - before

    asyncio.run(grown(False))  # the first run's one-off allocations
    same, fresh = asyncio.run(grown(False)), asyncio.run(grown(True))
    assert fresh - same < 2_000 * 16  # a copy of each per entry: ~2,000 × 120 B
