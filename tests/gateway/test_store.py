"""Both store implementations against one contract: real SQLite, a real Redis process."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from gateway.store import (
    Changed,
    EmbeddedStore,
    HealthHold,
    Quota,
    RedisStore,
    Store,
    StoreConflict,
    StoreUnavailable,
)
from gateway.store.quota import LocalQuotas, wait_s
from gateway.store.redis_store import redact
from tests.redis_server import RedisServer, free_port

Opener = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["embedded", "redis"])
async def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Opener]:
    """Opens stores that share one database (one file / one Redis)."""
    opened: list[Store] = []
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")

    async def open_one() -> Store:
        store: Store
        if request.param == "redis":
            store = RedisStore(server.url, prefix="t")
        else:
            store = EmbeddedStore(str(tmp_path / "state.db"), poll_s=0.05)
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()


async def test_commit_load_audit_and_revision(open_store: Opener) -> None:
    store = await open_store()
    assert (await store.load()).revision == 0
    c1 = await store.commit({"split/m": {"v1": 90, "v2": 10}}, actor="ann", action="weights.set")
    assert c1.revision == 1
    assert c1.entries[0].old is None and c1.entries[0].new == {"v1": 90, "v2": 10}
    same = await store.commit({"split/m": {"v2": 10, "v1": 90}}, actor="bob", action="weights.set")
    assert same.revision == 1 and same.entries == ()  # nothing changed: no revision, no audit
    c2 = await store.commit(
        {"split/m": {"v1": 50, "v2": 50}, "drain/aws:x": {"drained": True}},
        actor="bob",
        action="batch",
        note="why",
    )
    assert c2.revision == 2 and len(c2.entries) == 2
    await store.commit({"drain/aws:x": None}, actor="cy", action="region.undrain")
    loaded = await store.load()
    assert loaded.revision == 3
    assert dict(loaded.entries) == {"split/m": {"v1": 50, "v2": 50}}
    audit = await store.audit()
    assert [(a.revision, a.actor, a.key) for a in audit] == [
        (1, "ann", "split/m"),
        (2, "bob", "split/m"),
        (2, "bob", "drain/aws:x"),
        (3, "cy", "drain/aws:x"),
    ]
    assert audit[1].old == {"v1": 90, "v2": 10} and audit[1].new == {"v1": 50, "v2": 50}
    assert audit[3].old == {"drained": True} and audit[3].new is None
    assert audit[1].note == "why" and audit[0].at > 0
    assert [a.revision for a in await store.audit(limit=1)] == [3]


async def test_compare_and_set_refuses_a_stale_writer(open_store: Opener) -> None:
    store = await open_store()
    await store.commit({"canary/m": {"phase": "a"}}, actor="x", action="start")
    with pytest.raises(StoreConflict):
        await store.commit(
            {"canary/m": {"phase": "c"}}, actor="y", action="x", expect={"canary/m": {"phase": "b"}}
        )
    with pytest.raises(StoreConflict):
        await store.commit({"canary/n": {}}, actor="y", action="x", expect={"canary/n": {"a": 1}})
    ok = await store.commit(
        {"canary/m": {"phase": "c"}, "canary/n": {"a": 1}},
        actor="y",
        action="x",
        expect={"canary/m": {"phase": "a"}, "canary/n": None},
    )
    assert ok.revision == 2 and (await store.load()).entries["canary/m"] == {"phase": "c"}


async def test_a_commit_notifies_subscribers_of_another_instance(open_store: Opener) -> None:
    writer, reader = await open_store(), await open_store()
    sub = await reader.subscribe()
    try:
        await writer.commit({"dial/r": {"dial": 50}}, actor="a", action="dial")
        notice = None
        async with asyncio.timeout(5):
            while not isinstance(notice, Changed):
                notice = await sub.next(0.2)
        assert notice.revision == 1
        hold = HealthHold("b1", 123.5, "replica-a", "breaker open")
        await writer.publish(hold)
        if isinstance(writer, RedisStore):  # the embedded store only has in-process peers
            async with asyncio.timeout(5):
                while (got := await sub.next(0.2)) is None:
                    pass
            assert got == hold
    finally:
        await sub.close()


async def test_counters_add_up_across_instances(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    await a.add_counts("m:run:0", {"v2|req": 3, "v2|err": 1})
    await b.add_counts("m:run:0", {"v2|req": 2, "v1|req": 0})
    assert await a.read_counts("m:run:0") == {"v2|req": 5, "v2|err": 1}
    assert await a.read_counts("m:run:1") == {}


async def test_windows_are_summed_field_by_field(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    names = [f"usage/{m}" for m in range(1200)]  # more than one batch of either store
    for m in (0, 599, 1199):
        await a.add_counts(names[m], {"x\x1fm/1\x1frequests": 1, "big": 2**40})
    await b.add_counts(names[600], {"x\x1fm/1\x1frequests": 4, "other": 1})
    await b.add_counts("usage/9999", {"big": 7})  # not asked for
    assert await a.sum_counts(names) == {"x\x1fm/1\x1frequests": 7, "big": 3 * 2**40, "other": 1}
    assert await b.sum_counts(["usage/none"]) == {}
    assert await b.sum_counts([]) == {}


async def test_lease_has_one_holder_until_it_expires(open_store: Opener) -> None:
    a, b = await open_store(), await open_store()
    assert await a.lease("canary", "a", 0.3)
    assert not await b.lease("canary", "b", 0.3)
    assert await a.lease("canary", "a", 0.3)  # renewal
    await a.release_lease("canary", "a")
    assert await b.lease("canary", "b", 0.2)
    async with asyncio.timeout(5):
        while not await a.lease("canary", "a", 5):  # b's lease lapses
            await asyncio.sleep(0.05)
    assert not await b.lease("canary", "b", 5)


async def test_tenant_quotas_requests_streams_and_tokens(open_store: Opener) -> None:
    store = await open_store()
    now = 6000.0  # the start of a minute
    quota = Quota(requests_per_min=3, concurrent_streams=2)
    verdicts = [await store.admit("t", quota, f"s{i}", now + i) for i in range(3)]
    assert [v.allowed for v in verdicts] == [True, True, False]
    assert verdicts[2].reason == "concurrent_streams" and verdicts[2].retry_after == 1.0
    await store.release("t", "s0", 0, now + 3)
    assert (await store.admit("t", quota, "s3", now + 4)).allowed
    refused = await store.admit("t", Quota(requests_per_min=3), "s4", now + 5)
    assert not refused.allowed and refused.reason == "requests_per_min" and refused.limit == 3
    assert refused.retry_after == pytest.approx(55 + 60 * (1 - 2 / 3))
    tokens = Quota(tokens_per_min=100)
    assert (await store.admit("u", tokens, "a", now)).allowed
    await store.release("u", "a", 100, now + 1)
    late = await store.admit("u", tokens, "b", now + 2)
    assert not late.allowed and late.reason == "tokens_per_min"


async def test_an_unreachable_redis_is_one_clear_line() -> None:
    store = RedisStore(f"redis://:hunter2@127.0.0.1:{free_port()}/0", timeout_s=0.2)
    with pytest.raises(StoreUnavailable) as err:
        await store.commit({"k": {}}, actor="a", action="x")
    message = str(err.value)
    assert "unreachable" in message and "hunter2" not in message and "\n" not in message
    await store.close()


def test_redact_hides_only_the_password() -> None:
    assert redact("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redact("redis://h:1") == "redis://h:1"


def test_sliding_window_wait() -> None:
    # 10 in the previous minute, none yet in this one, limit 10, at 30 s:
    # estimate 5 + 0 + 1 ≤ 10 — no wait.
    assert wait_s(0, 10, 0.5, 10) == 0
    # limit reached in this minute: wait to the next one, then until the
    # carried-over share has decayed enough for one more.
    assert wait_s(10, 0, 0.5, 10) == pytest.approx(30 + 60 * 0.1)
    # the previous minute's share is what blocks: it decays in 60 × need − elapsed.
    assert wait_s(5, 10, 0.2, 10) == pytest.approx((1 - 4 / 10 - 0.2) * 60)
    q = LocalQuotas()
    quota = Quota(requests_per_min=2)
    assert q.admit("t", quota, "a", 0).allowed and q.admit("t", quota, "b", 1).allowed
    refused = q.admit("t", quota, "c", 2)
    assert not refused.allowed and refused.retry_after == pytest.approx(58 + 30)
    assert q.admit("t", quota, "d", 2 + refused.retry_after + 0.01).allowed


async def test_a_malformed_document_is_skipped_not_fatal(open_store: Opener) -> None:
    """A value that is not a JSON object (written by hand, or by a newer version)
    must not stop a replica from loading, and so from following, the rest."""
    store = await open_store()
    await store.commit({"split/m": {"v1": 100}}, actor="a", action="weights.set")
    if isinstance(store, RedisStore):
        await store._client.hset("t:state", "note/x", "[1, 2]")
    else:
        with sqlite3.connect(store.where) as conn:
            conn.execute("INSERT INTO state (key, value) VALUES ('note/x', '[1, 2]')")
    loaded = await store.load()
    assert loaded.entries == {"split/m": {"v1": 100}}
