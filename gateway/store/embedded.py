"""The embedded store: SQLite, for one node (the default).

Without a path the database lives in memory for the life of the process
(demo, tests); with ``store.path`` it is a file in WAL mode, so changes
survive restarts and the ``--workers`` processes of one node share it.
A file is called through :func:`asyncio.to_thread` behind one lock, so the
event loop never blocks on disk; the in-memory database is called inline (no
disk to wait for: a thread would cost more than the call, and its stack and
malloc arena stay resident).

Propagation: a commit notifies this process's subscribers at once; other
processes sharing the file notice the new revision within ``poll_s`` (a
one-row read). The canary lease is a row with an expiry, so only one worker
of a node runs the controller. Tenant limits are counted in process
(:class:`~gateway.store.quota.LocalQuotas`): with several workers each
enforces the limit on its own share of the traffic.
"""

from __future__ import annotations

import asyncio
import functools
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from gateway.store.base import (
    COUNTS_TTL_S,
    AuditEntry,
    Changed,
    Commit,
    Doc,
    HealthHold,
    Loaded,
    Notice,
    StoreConflict,
    StoreUnavailable,
    decode,
    decode_entries,
    encode,
)
from gateway.store.quota import LocalQuotas, Quota, Verdict

T = TypeVar("T")
AUDIT_KEEP_REVISIONS = 100_000
_NAMES_AT_ONCE = 60  # windows per SUM: an hour's minutes; well below SQLite's 999 parameters

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT, revision INTEGER NOT NULL, at REAL NOT NULL,
    actor TEXT NOT NULL, action TEXT NOT NULL, key TEXT NOT NULL,
    old TEXT, new TEXT, note TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS counters (
    name TEXT NOT NULL, field TEXT NOT NULL, value INTEGER NOT NULL,
    PRIMARY KEY (name, field));
CREATE TABLE IF NOT EXISTS count_windows (name TEXT PRIMARY KEY, expires REAL NOT NULL);
CREATE INDEX IF NOT EXISTS count_windows_expires ON count_windows (expires);
CREATE TABLE IF NOT EXISTS leases (
    name TEXT PRIMARY KEY, holder TEXT NOT NULL, until REAL NOT NULL);
"""


class _LocalSubscription:
    def __init__(self, store: EmbeddedStore, seen: int) -> None:
        self._store = store
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()
        self._seen = seen

    def push(self, notice: Notice) -> None:
        self._queue.put_nowait(notice)

    async def next(self, wait_s: float) -> Notice | None:
        wait = wait_s if self._store.memory else min(wait_s, self._store.poll_s)
        try:
            notice = await asyncio.wait_for(self._queue.get(), wait)
        except TimeoutError:
            if self._store.memory:
                return None
            revision = await self._store.revision()  # another process's commit?
            if revision == self._seen:
                return None
            notice = Changed(revision)
        if isinstance(notice, Changed):
            self._seen = notice.revision
        return notice

    async def close(self) -> None:
        self._store.unsubscribe(self)


class EmbeddedStore:
    kind = "embedded"

    def __init__(
        self,
        path: str | None = None,
        *,
        poll_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.where = path or ":memory:"
        self.memory = path is None or path == ":memory:"
        self.poll_s = poll_s
        self._clock = clock
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._subscribers: set[_LocalSubscription] = set()
        self._quotas = LocalQuotas()

    # -- plumbing -----------------------------------------------------------

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        def locked() -> T:
            with self._lock:
                assert self._conn is not None, "open() first"
                return fn(self._conn)

        try:
            return locked() if self.memory else await asyncio.to_thread(locked)
        except sqlite3.Error as exc:  # locked by another process, disk full, I/O error
            raise StoreUnavailable(f"sqlite store {self.where}: {exc}") from None

    async def open(self) -> None:
        def connect() -> sqlite3.Connection:
            conn = sqlite3.connect(self.where, check_same_thread=False, isolation_level=None)
            if not self.memory:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=5000")
            conn.executescript(_SCHEMA)
            # A file from before count_windows: its windows start their TTL now.
            conn.execute(
                "INSERT OR IGNORE INTO count_windows (name, expires) "
                "SELECT DISTINCT name, ? FROM counters",
                (self._clock() + COUNTS_TTL_S,),
            )
            return conn

        if self._conn is None:
            self._conn = connect() if self.memory else await asyncio.to_thread(connect)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with self._lock:
                conn.close()

    async def ping(self, timeout_s: float) -> None:
        """In process: nothing to probe; a failing file shows in the calls themselves."""

    async def subscribe(self) -> _LocalSubscription:
        sub = _LocalSubscription(self, await self.revision())
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _LocalSubscription) -> None:
        self._subscribers.discard(sub)

    def _notify(self, notice: Notice) -> None:
        for sub in list(self._subscribers):
            sub.push(notice)

    # -- documents ------------------------------------------------------------

    async def load(self) -> Loaded:
        def read(conn: sqlite3.Connection) -> Loaded:
            conn.execute("BEGIN")
            try:
                revision = _revision(conn)
                rows = conn.execute("SELECT key, value FROM state").fetchall()
            finally:
                conn.execute("COMMIT")
            return Loaded(revision, decode_entries(dict(rows)))

        return await self._run(read)

    async def revision(self) -> int:
        return await self._run(_revision)

    async def commit(
        self,
        changes: Mapping[str, Doc | None],
        *,
        actor: str,
        action: str,
        note: str = "",
        expect: Mapping[str, Doc | None] | None = None,
    ) -> Commit:
        at = self._clock()

        def write(conn: sqlite3.Connection) -> Commit:
            conn.execute("BEGIN IMMEDIATE")
            try:
                result = _commit(conn, changes, expect or {}, actor, action, note, at)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            return result

        result = await self._run(write)
        if result.entries:
            self._notify(Changed(result.revision))
        return result

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        def read(conn: sqlite3.Connection) -> list[AuditEntry]:
            rows = conn.execute(
                "SELECT revision, at, actor, action, key, old, new, note FROM audit "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
            return [
                AuditEntry(r[0], r[1], r[2], r[3], r[4], _doc(r[5]), _doc(r[6]), r[7])
                for r in reversed(rows)
            ]

        return await self._run(read)

    async def publish(self, hold: HealthHold) -> None:
        self._notify(hold)

    # -- canary counters and the controller's lease --------------------------

    async def add_counts(
        self, name: str, counts: Mapping[str, int], ttl_s: float = COUNTS_TTL_S
    ) -> None:
        rows = [(name, f, n) for f, n in counts.items() if n]
        now = self._clock()

        def write(conn: sqlite3.Connection) -> None:
            # Redis's EXPIRE on each write, in SQL: a write renews its window's
            # expiry, and expired windows go in the same transaction.
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO counters (name, field, value) VALUES (?, ?, ?) "
                    "ON CONFLICT (name, field) DO UPDATE SET value = value + excluded.value",
                    rows,
                )
                conn.execute(
                    "INSERT INTO count_windows (name, expires) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET expires = excluded.expires",
                    (name, now + ttl_s),
                )
                conn.execute(
                    "DELETE FROM counters WHERE name IN "
                    "(SELECT name FROM count_windows WHERE expires < ?)",
                    (now,),
                )
                conn.execute("DELETE FROM count_windows WHERE expires < ?", (now,))
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

        if rows:
            await self._run(write)

    async def read_counts(self, name: str) -> dict[str, int]:
        def read(conn: sqlite3.Connection) -> dict[str, int]:
            rows = conn.execute("SELECT field, value FROM counters WHERE name = ?", (name,))
            return {f: int(v) for f, v in rows.fetchall()}

        return await self._run(read)

    async def sum_counts(self, names: Sequence[str]) -> dict[str, int]:
        def read(batch: Sequence[str], conn: sqlite3.Connection) -> list[tuple[str, int]]:
            marks = ",".join("?" * len(batch))
            rows = conn.execute(
                f"SELECT field, SUM(value) FROM counters WHERE name IN ({marks}) GROUP BY field",
                tuple(batch),
            )
            return rows.fetchall()

        sums: dict[str, int] = {}
        # A batch per call: the lock is let go between them, so a day's read does
        # not hold this process's other store calls (leases, commits) for seconds.
        for i in range(0, len(names), _NAMES_AT_ONCE):
            batch = names[i : i + _NAMES_AT_ONCE]
            for f, v in await self._run(functools.partial(read, batch)):
                sums[f] = sums.get(f, 0) + int(v)
        return sums

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()

        def take(conn: sqlite3.Connection) -> bool:
            conn.execute("BEGIN IMMEDIATE")
            try:
                row = conn.execute("SELECT holder, until FROM leases WHERE name = ?", (name,))
                current = row.fetchone()
                mine = current is None or current[0] == holder or current[1] <= now
                if mine:
                    conn.execute(
                        "INSERT OR REPLACE INTO leases (name, holder, until) VALUES (?, ?, ?)",
                        (name, holder, now + ttl_s),
                    )
            except BaseException:
                conn.execute("ROLLBACK")  # never keep the write lock after a failure
                raise
            conn.execute("COMMIT")
            return mine

        return await self._run(take)

    async def release_lease(self, name: str, holder: str) -> None:
        def drop(conn: sqlite3.Connection) -> None:
            conn.execute("DELETE FROM leases WHERE name = ? AND holder = ?", (name, holder))

        await self._run(drop)

    # -- tenant limits (in process) -------------------------------------------

    async def admit(self, tenant: str, quota: Quota, stream_id: str, now: float) -> Verdict:
        return self._quotas.admit(tenant, quota, stream_id, now)

    async def release(self, tenant: str, stream_id: str, tokens: int, now: float) -> None:
        self._quotas.release(tenant, stream_id, tokens, now)


def _revision(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
    return int(row[0]) if row else 0


def _doc(text: str | None) -> Doc | None:
    return None if text is None else decode(text)


def _commit(
    conn: sqlite3.Connection,
    changes: Mapping[str, Doc | None],
    expect: Mapping[str, Doc | None],
    actor: str,
    action: str,
    note: str,
    at: float,
) -> Commit:
    def current(key: str) -> str | None:
        row = conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    for key, expected in expect.items():
        if current(key) != (None if expected is None else encode(expected)):
            raise StoreConflict(f"{key} changed concurrently")
    pending = []
    for key, doc in changes.items():
        old, new = current(key), None if doc is None else encode(doc)
        if old != new:
            pending.append((key, old, new))
    revision = _revision(conn)
    if not pending:
        return Commit(revision, ())
    revision += 1
    conn.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('revision', ?)", (revision,))
    entries = []
    for key, old, new in pending:
        if new is None:
            conn.execute("DELETE FROM state WHERE key = ?", (key,))
        else:
            conn.execute("INSERT OR REPLACE INTO state (key, value) VALUES (?, ?)", (key, new))
        conn.execute(
            "INSERT INTO audit (revision, at, actor, action, key, old, new, note) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (revision, at, actor, action, key, old, new, note),
        )
        entries.append(AuditEntry(revision, at, actor, action, key, _doc(old), _doc(new), note))
    # the newest entries only, as in Redis (gateway.store.lua COMMIT)
    if revision % 1000 == 0:
        conn.execute("DELETE FROM audit WHERE revision <= ?", (revision - AUDIT_KEEP_REVISIONS,))
    return Commit(revision, tuple(entries))
