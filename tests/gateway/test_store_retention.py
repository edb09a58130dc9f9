"""Counter windows expire in the embedded store as they do in Redis (COUNTS_TTL_S after
their last write), so a long-running single-node gateway's file does not grow forever."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gateway.store import RedisStore
from gateway.store.base import COUNTS_TTL_S
from gateway.store.embedded import EmbeddedStore
from tests.redis_server import RedisServer


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_a_window_untouched_for_the_ttl_is_deleted_and_a_touched_one_kept(
    tmp_path: Path,
) -> None:
    clock = Clock()
    store = EmbeddedStore(str(tmp_path / "s.db"), clock=clock)
    await store.open()
    try:
        await store.add_counts("usage/1", {"a": 1})
        await store.add_counts("usage/2", {"a": 2})
        clock.now += COUNTS_TTL_S - 1
        await store.add_counts("usage/2", {"a": 3})  # renews usage/2 only
        assert await store.read_counts("usage/1") == {"a": 1}  # not yet expired
        clock.now += 2
        await store.add_counts("usage/3", {"b": 1})  # any write sweeps
        assert await store.read_counts("usage/1") == {}
        assert await store.read_counts("usage/2") == {"a": 5}
        assert await store.read_counts("usage/3") == {"b": 1}
    finally:
        await store.close()


async def test_a_file_from_before_retention_keeps_its_windows_for_one_ttl(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.execute(
        "CREATE TABLE counters (name TEXT NOT NULL, field TEXT NOT NULL, "
        "value INTEGER NOT NULL, PRIMARY KEY (name, field))"
    )
    conn.execute("INSERT INTO counters VALUES ('canary/m/1', 'ok', 7)")
    conn.commit()
    conn.close()
    clock = Clock()
    store = EmbeddedStore(str(path), clock=clock)
    await store.open()
    try:
        await store.add_counts("usage/9", {"a": 1})
        assert await store.read_counts("canary/m/1") == {"ok": 7}
        clock.now += COUNTS_TTL_S + 1
        await store.add_counts("usage/10", {"a": 1})
        assert await store.read_counts("canary/m/1") == {}
    finally:
        await store.close()


async def test_a_window_lives_as_long_as_its_writer_asks(tmp_path: Path) -> None:
    clock = Clock()
    store = EmbeddedStore(str(tmp_path / "s.db"), clock=clock)
    await store.open()
    try:
        await store.add_counts("capacity/1", {"a": 1}, ttl_s=600)
        await store.add_counts("usage/1", {"a": 1})
        clock.now += 601
        await store.add_counts("usage/2", {"a": 1})
        assert await store.read_counts("capacity/1") == {}  # short-lived: gone
        assert await store.read_counts("usage/1") == {"a": 1}  # the week's default
    finally:
        await store.close()


async def test_redis_expires_a_window_after_the_ttl_its_writer_asks(
    redis_server: RedisServer,
) -> None:
    store = RedisStore(redis_server.url, prefix="t")
    await store.open()
    try:
        await store.add_counts("capacity/1", {"a": 1}, ttl_s=600)
        await store.add_counts("usage/1", {"a": 1})
        short = int(redis_server.command("TTL", "t:counts:capacity/1").strip().lstrip(b":"))
        long = int(redis_server.command("TTL", "t:counts:usage/1").strip().lstrip(b":"))
        assert 590 <= short <= 600 and long > COUNTS_TTL_S - 10
    finally:
        await store.close()
