"""The embedded store without a path: the same rules as SQLite's in-memory database,
kept in dicts.

A gateway with no ``store.path`` (demo, tests, a single process) keeps its control
state for the life of the process. SQLite held it in an in-memory database before:
importing ``sqlite3`` and opening the database cost ~1.6 MiB of idle RSS (the library's
pages and its heap) for what is a few dicts. :class:`MemoryStore` answers every call
as :class:`~gateway.store.embedded.EmbeddedStore` on ``:memory:`` does (documents
kept as their canonical JSON text, revisions, the audit log and its trimming, count
windows and their expiry, leases, in-process quotas); ``store.path`` still opens
SQLite. Every call completes at once: there is no disk to wait for.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence

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

AUDIT_KEEP_REVISIONS = 100_000  # as gateway.store.embedded
_NAMES_AT_ONCE = 60  # as gateway.store.embedded: a window named twice in one batch counts once


class _Subscription:
    def __init__(self, store: MemoryStore) -> None:
        self._store = store
        self._queue: asyncio.Queue[Notice] = asyncio.Queue()

    def push(self, notice: Notice) -> None:
        self._queue.put_nowait(notice)

    async def next(self, wait_s: float) -> Notice | None:
        try:
            return await asyncio.wait_for(self._queue.get(), wait_s)
        except TimeoutError:
            return None  # no other process shares this store

    async def close(self) -> None:
        self._store.unsubscribe(self)


class _Data:
    """One database's contents: gone with close(), as an in-memory SQLite database's."""

    def __init__(self) -> None:
        self.revision = 0
        self.state: dict[str, str] = {}  # key -> canonical JSON, in SQLite's scan order
        self.audit: list[tuple[int, float, str, str, str, str | None, str | None, str]] = []
        self.counters: dict[str, dict[str, int]] = {}  # window name -> field -> value
        self.windows: dict[str, float] = {}  # window name -> expiry
        self.leases: dict[str, tuple[str, float]] = {}  # name -> (holder, until)


class MemoryStore:
    kind = "embedded"
    where = ":memory:"
    memory = True

    def __init__(self, *, clock: Callable[[], float] | None = None) -> None:
        self._clock = time.time if clock is None else clock
        self._data: _Data | None = None
        self._subscribers: set[_Subscription] = set()
        self._quotas = LocalQuotas()

    def _open_data(self) -> _Data:
        assert self._data is not None, "open() first"
        return self._data

    async def open(self) -> None:
        if self._data is None:
            self._data = _Data()

    async def close(self) -> None:
        self._data = None

    async def ping(self, timeout_s: float) -> None:
        """In process: nothing to probe."""

    async def subscribe(self) -> _Subscription:
        self._open_data()  # SQLite reads the revision first
        sub = _Subscription(self)
        self._subscribers.add(sub)
        return sub

    def unsubscribe(self, sub: _Subscription) -> None:
        self._subscribers.discard(sub)

    def _notify(self, notice: Notice) -> None:
        for sub in list(self._subscribers):
            sub.push(notice)

    # -- documents ------------------------------------------------------------

    async def load(self) -> Loaded:
        data = self._open_data()
        return Loaded(data.revision, decode_entries(dict(data.state)))

    async def revision(self) -> int:
        return self._open_data().revision

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
        data = self._open_data()
        for key, expected in (expect or {}).items():
            if data.state.get(_text(key)) != (None if expected is None else encode(expected)):
                raise StoreConflict(f"{key} changed concurrently")
        pending = []
        for key, doc in changes.items():
            old, new = data.state.get(_text(key)), None if doc is None else encode(doc)
            if old != new:
                pending.append((key, old, new))
        if not pending:
            return Commit(data.revision, ())
        for text in (actor, action, note):
            _text(text)
        revision = data.revision + 1
        # Every check before the first write, as SQLite rolls the whole commit back:
        # a document that is not a JSON object is refused with nothing written.
        entries = tuple(
            AuditEntry(revision, at, actor, action, key, _doc(old), _doc(new), note)
            for key, old, new in pending
        )
        data.revision = revision
        who, what = _shared(actor), _shared(action)
        for key, old, new in pending:
            key = _shared(key)
            data.state.pop(key, None)  # INSERT OR REPLACE: a replaced row scans last
            if new is not None:
                data.state[key] = new
            data.audit.append((revision, at, who, what, key, old, new, note))
        if revision % 1000 == 0:  # the newest entries only (gateway.store.embedded)
            data.audit = [e for e in data.audit if e[0] > revision - AUDIT_KEEP_REVISIONS]
        self._notify(Changed(revision))
        return Commit(revision, entries)

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        audit = self._open_data().audit
        rows = audit if limit < 0 else audit[-limit:] if limit else []  # as SQL's LIMIT
        return [
            AuditEntry(r[0], r[1], r[2], r[3], r[4], _doc(r[5]), _doc(r[6]), r[7]) for r in rows
        ]

    async def publish(self, hold: HealthHold) -> None:
        self._notify(hold)

    # -- canary counters and the controller's lease --------------------------

    async def add_counts(
        self, name: str, counts: Mapping[str, int], ttl_s: float = COUNTS_TTL_S
    ) -> None:
        rows = [(f, n) for f, n in counts.items() if n]
        if not rows:
            return
        data = self._open_data()
        now = self._clock()
        _text(name)
        for f, _ in rows:
            _text(f)
        _real(now + ttl_s, "count_windows.expires")
        fields = data.counters.setdefault(name, {})
        for f, n in rows:
            fields[f] = fields.get(f, 0) + n
        data.windows[name] = now + ttl_s  # a write renews its window's expiry
        for expired in [w for w, until in data.windows.items() if until < now]:
            del data.windows[expired]
            data.counters.pop(expired, None)

    async def read_counts(self, name: str) -> dict[str, int]:
        fields = self._open_data().counters.get(_text(name), {})
        return dict(sorted(fields.items()))  # SQLite reads them in field order (its index)

    async def sum_counts(self, names: Sequence[str]) -> dict[str, int]:
        sums: dict[str, int] = {}
        if not names:
            return sums  # SQLite is not called: a closed store answers too
        counters = self._open_data().counters
        for name in names:
            _text(name)
        for i in range(0, len(names), _NAMES_AT_ONCE):
            batch: dict[str, int] = {}
            for name in set(names[i : i + _NAMES_AT_ONCE]):
                for f, v in counters.get(name, {}).items():
                    batch[f] = batch.get(f, 0) + v
            for f in sorted(batch):  # GROUP BY field: each batch's fields in order
                sums[f] = sums.get(f, 0) + batch[f]
        return sums

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        now = self._clock()
        leases = self._open_data().leases
        current = leases.get(_text(name))
        mine = current is None or current[0] == holder or current[1] <= now
        if mine:
            _text(holder)
            leases[name] = (holder, _real(now + ttl_s, "leases.until"))
        return mine

    async def release_lease(self, name: str, holder: str) -> None:
        leases = self._open_data().leases
        current = leases.get(_text(name))
        _text(holder)
        if current is not None and current[0] == holder:
            del leases[name]

    # -- tenant limits (in process) -------------------------------------------

    async def admit(self, tenant: str, quota: Quota, stream_id: str, now: float) -> Verdict:
        return self._quotas.admit(tenant, quota, stream_id, now)

    async def release(self, tenant: str, stream_id: str, tokens: int, now: float) -> None:
        self._quotas.release(tenant, stream_id, tokens, now)


def _doc(text: str | None) -> Doc | None:
    return None if text is None else decode(text)


def _text(value: str) -> str:
    """``value``, if SQLite could bind it: sqlite3 encodes text as UTF-8, so a str
    with a lone surrogate (aiohttp's surrogateescape of a bad byte) raises
    UnicodeEncodeError and nothing is written; stored, it would fail every JSON
    answer that carried it (orjson refuses surrogates)."""
    if isinstance(value, str):
        value.encode()
    return value


def _shared(text: str) -> str:
    """One object for equal keys, actors and actions: they recur in every audit
    entry, and a fresh string per call (an f-string key, a header) costs ~60 B each
    of up to 100,000 revisions' entries, where SQLite's rows pack them."""
    return sys.intern(text) if type(text) is str else text


def _real(value: float, column: str) -> float:
    """``value``, unless NaN: SQLite stores NaN as NULL and its NOT NULL columns
    refuse it; kept, a NaN expiry never comes (every comparison is false)."""
    if math.isnan(value):
        raise StoreUnavailable(f"memory store: NOT NULL constraint failed: {column} (NaN)")
    return value
