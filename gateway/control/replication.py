"""Replica status from the replication job into the control-plane store.

:class:`ControlPlaneSink` implements ``regions.replication.status.ReplicaStatusSink``
on :meth:`ControlPlane.write`: one document per replica under
``replica/MODEL@VERSION/REGION`` (``gateway.store.state``), committed,
audited, and applied to this replica's routing snapshot at once (read your
writes); every other replica picks it up through the store's notices. That
is the whole routing gate: ``ControlState.overlay`` puts every replica whose
status is not ``verified`` in the snapshot's ``unready`` set and takes a
``verified`` one out, so a newly verified region receives traffic on the next
snapshot swap — no restart.

Document (``status``, ``detail``, ``updated`` are what the control plane
reads; the rest is for people and scripts)::

    {"status": "copying", "detail": "3/7 files, 1.2 GiB of 4.0 GiB", "updated": 1.7e9,
     "bytes_done": ..., "bytes_total": ..., "files_done": ..., "files_total": ..., "job": "r-…"}
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gateway.control.plane import ControlPlane
from gateway.store import StoreUnavailable
from gateway.store.state import replica_key
from regions.replication.status import ReplicaStatus, StatusUnavailable


def replica_doc(status: ReplicaStatus, now: float) -> dict[str, Any]:
    return {
        "status": status.phase.value,
        "detail": status.detail()[:500],
        "updated": now,
        "bytes_done": status.bytes_done,
        "bytes_total": status.bytes_total,
        "files_done": status.files_done,
        "files_total": status.files_total,
        "job": status.job,
    }


class ControlPlaneSink:
    def __init__(
        self, control: ControlPlane, actor: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.control = control
        self.actor = actor
        self.clock = clock

    async def set_replica(
        self, model: str, version: str, region: str, status: ReplicaStatus
    ) -> None:
        try:
            await self.control.write(
                {replica_key(model, version, region): replica_doc(status, self.clock())},
                actor=self.actor,
                action=f"replicate.{status.phase.value}",
                note=status.job,
            )
        except StoreUnavailable as exc:
            raise StatusUnavailable(str(exc)) from None
