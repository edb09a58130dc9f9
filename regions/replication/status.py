"""Replica status per (model, version, region), and where the job reports it.

State machine of one region in one run::

    pending ──▶ copying (bytes done / total) ──▶ verified
       │              │
       └──────────────┴──▶ failed (reason)

A region whose destination already holds a committed manifest equal to the
source's is *checked* without first leaving ``verified`` (no traffic dip);
it only moves to ``copying`` once a file there needs a repair. Only
``verified`` makes the region routable (``routing.snapshot`` keeps every other
replica in its ``unready`` set).

The job reports through :class:`ReplicaStatusSink`, a narrow interface so
``regions`` stays below ``gateway`` (docs/design.md §1):
``gateway.control.replication`` implements it on the control-plane store.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace
from typing import Any, Protocol


class Phase(enum.StrEnum):
    PENDING = "pending"
    COPYING = "copying"
    VERIFIED = "verified"
    FAILED = "failed"


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    phase: Phase
    bytes_done: int = 0
    bytes_total: int = 0
    files_done: int = 0
    files_total: int = 0
    reason: str = ""  # why it failed, or what it is doing
    job: str = ""

    def detail(self) -> str:
        """One line for tables (``meridian replicas``)."""
        if self.phase is Phase.FAILED:
            return self.reason
        counts = (
            f"{self.files_done}/{self.files_total} files, "
            f"{human_bytes(self.bytes_done)} of {human_bytes(self.bytes_total)}"
        )
        return f"{self.reason}: {counts}" if self.reason else counts


class StatusUnavailable(Exception):
    """The status could not be recorded (the control-plane store is unreachable)."""


class ReplicaStatusSink(Protocol):
    async def set_replica(
        self, model: str, version: str, region: str, status: ReplicaStatus
    ) -> None:
        """Record the status; raises StatusUnavailable if it cannot."""
        ...


class MemorySink:
    """Keeps every status in order; for tests and for runs without a control plane."""

    def __init__(self) -> None:
        self.history: list[tuple[tuple[str, str, str], ReplicaStatus]] = []

    async def set_replica(
        self, model: str, version: str, region: str, status: ReplicaStatus
    ) -> None:
        self.history.append(((model, version, region), status))

    def latest(self, model: str, version: str, region: str) -> ReplicaStatus | None:
        for key, status in reversed(self.history):
            if key == (model, version, region):
                return status
        return None

    def phases(self, region: str) -> list[Phase]:
        """The region's transitions (progress updates within a phase collapsed)."""
        out: list[Phase] = []
        for (_, _, r), s in self.history:
            if r == region and (not out or out[-1] is not s.phase):
                out.append(s.phase)
        return out


@dataclass(slots=True)
class RegionProgress:
    """Live counters of one region in one run (what progress bars draw)."""

    region: str
    destination: str
    phase: Phase = Phase.PENDING
    files_total: int = 0
    files_done: int = 0  # verified, copied or already there
    files_copied: int = 0
    files_kept: int = 0  # already there and verified: not copied again
    files_repaired: int = 0  # there but damaged: copied again
    bytes_total: int = 0
    bytes_done: int = 0
    bytes_copied: int = 0
    reason: str = ""
    started: float = 0.0
    finished: float | None = None
    verified_by: dict[str, int] = field(default_factory=dict)
    copied: list[str] = field(default_factory=list)

    def status(self, job: str) -> ReplicaStatus:
        return ReplicaStatus(
            self.phase,
            self.bytes_done,
            self.bytes_total,
            self.files_done,
            self.files_total,
            self.reason,
            job,
        )

    def snapshot(self) -> RegionProgress:
        return replace(self, verified_by=dict(self.verified_by), copied=list(self.copied))

    def as_json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "destination": self.destination,
            "status": self.phase.value,
            "files_total": self.files_total,
            "files_done": self.files_done,
            "files_copied": self.files_copied,
            "files_kept": self.files_kept,
            "files_repaired": self.files_repaired,
            "bytes_total": self.bytes_total,
            "bytes_done": self.bytes_done,
            "bytes_copied": self.bytes_copied,
            "reason": self.reason,
            "started": self.started,
            "finished": self.finished,
            "verified_by": dict(self.verified_by),
        }
