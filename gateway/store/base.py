"""The control-plane store: one interface, two implementations (docs/design.md §5).

The store holds *documents* (JSON objects) under string keys — splits,
region dials and drains, canaries, replica status (``gateway.store.state``
names the keys and parses them) — plus an append-only audit log, canary
counters, leases and tenant-limit counters.

Every :meth:`Store.commit` is atomic: it checks optional expectations
(compare-and-set), writes the changed documents, appends one audit entry per
changed key (who, when, what, old → new), bumps the revision by one and
notifies subscribers. Readers load ``(revision, documents)`` as one
consistent view. Subscribers get :class:`Changed` notices (and peers'
:class:`HealthHold` notices) and reload; a notice is a hint, the load is the
truth, so a lost notice only delays a replica until its next revision check.

Every method raises :class:`StoreUnavailable` when the store cannot be
reached; nothing in the request path calls the store (tenant limits are
admitted from leases renewed in the background, ``gateway.store.lease``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson

from gateway.store.quota import Quota, Verdict

log = logging.getLogger("meridian.store")

Doc = dict[str, Any]

# Counter windows (canary steps, shadow runs, usage minutes) live this long after their
# last write, in every store: longer than any window a reader asks for.
COUNTS_TTL_S = 7 * 24 * 3600


class StoreUnavailable(Exception):
    """The store cannot be reached; ``str()`` is one line for an operator."""


class StoreConflict(Exception):
    """A commit's expectation did not hold: someone changed the key first."""


def encode(doc: Doc) -> str:
    """Canonical JSON (sorted keys), so equal documents compare equal as text."""
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()


def decode(text: str | bytes) -> Doc:
    value = orjson.loads(text)
    if not isinstance(value, dict):
        raise ValueError("a stored document must be a JSON object")
    return value


def decode_entries(raw: Mapping[str, str | bytes]) -> dict[str, Doc]:
    """Every readable document; one that is not a JSON object (written by hand,
    or by a newer version) is logged and skipped, never allowed to stop a
    replica from following the rest of the store."""
    entries: dict[str, Doc] = {}
    for key, text in raw.items():
        try:
            entries[key] = decode(text)
        except ValueError as exc:
            log.error("store document %r skipped: %s", key, exc)
    return entries


@dataclass(frozen=True, slots=True)
class Loaded:
    revision: int
    entries: Mapping[str, Doc]


@dataclass(frozen=True, slots=True)
class AuditEntry:
    revision: int
    at: float  # wall-clock seconds
    actor: str
    action: str
    key: str
    old: Doc | None
    new: Doc | None
    note: str = ""

    def as_json(self) -> Doc:
        return {
            "revision": self.revision,
            "at": self.at,
            "actor": self.actor,
            "action": self.action,
            "key": self.key,
            "old": self.old,
            "new": self.new,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> AuditEntry:
        return cls(
            int(d["revision"]),
            float(d["at"]),
            str(d["actor"]),
            str(d["action"]),
            str(d["key"]),
            d.get("old"),
            d.get("new"),
            str(d.get("note") or ""),
        )


@dataclass(frozen=True, slots=True)
class Commit:
    revision: int
    entries: tuple[AuditEntry, ...]  # empty when nothing changed (no revision bump)


@dataclass(frozen=True, slots=True)
class Changed:
    revision: int


@dataclass(frozen=True, slots=True)
class HealthHold:
    """A peer found ``backend`` down: treat it as unavailable until ``until`` (wall clock)."""

    backend: str
    until: float
    origin: str
    reason: str

    def as_json(self) -> Doc:
        return {
            "backend": self.backend,
            "until": self.until,
            "origin": self.origin,
            "reason": self.reason,
        }


Notice = Changed | HealthHold


class Subscription(Protocol):
    async def next(self, wait_s: float) -> Notice | None:
        """The next notice, or None when ``wait_s`` pass quietly."""
        ...

    async def close(self) -> None: ...


class Store(Protocol):
    kind: str  # "embedded" | "redis"
    where: str  # for messages: a path or a URL without credentials

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def ping(self, timeout_s: float) -> None:
        """Raises StoreUnavailable unless the store answers within ``timeout_s``
        (the control plane's health probe: a store that accepts connections but
        answers nothing, such as a frozen Redis, fails it too)."""
        ...

    async def subscribe(self) -> Subscription:
        """Subscribed before it returns, so a load after it misses no change."""
        ...

    async def load(self) -> Loaded: ...

    async def revision(self) -> int: ...

    async def commit(
        self,
        changes: Mapping[str, Doc | None],
        *,
        actor: str,
        action: str,
        note: str = "",
        expect: Mapping[str, Doc | None] | None = None,
    ) -> Commit:
        """Write (``None`` deletes) atomically; raises StoreConflict if ``expect`` fails."""
        ...

    async def audit(self, limit: int = 50) -> list[AuditEntry]:
        """The latest ``limit`` entries, oldest first."""
        ...

    async def publish(self, hold: HealthHold) -> None: ...

    async def add_counts(
        self, name: str, counts: Mapping[str, int], ttl_s: float = COUNTS_TTL_S
    ) -> None:
        """Add to the window ``name``; a window unwritten for ``ttl_s`` is deleted."""
        ...

    async def read_counts(self, name: str) -> dict[str, int]: ...

    async def sum_counts(self, names: Sequence[str]) -> dict[str, int]:
        """The windows ``names`` added up field by field (a missing window adds
        nothing): one call for many windows, summed where the counters are."""
        ...

    async def lease(self, name: str, holder: str, ttl_s: float) -> bool:
        """Take or renew the lease; True while ``holder`` has it."""
        ...

    async def release_lease(self, name: str, holder: str) -> None: ...

    async def admit(self, tenant: str, quota: Quota, stream_id: str, now: float) -> Verdict: ...

    async def release(self, tenant: str, stream_id: str, tokens: int, now: float) -> None: ...
