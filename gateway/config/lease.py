"""``store.leases``: how tenant-limit leases are sized and renewed (gateway.store.lease)."""

from __future__ import annotations

from pydantic import Field, model_validator

from gateway.config.base import Strict


class LeaseConfig(Strict):
    """Per replica and tenant: over-admission is at most ``N × C`` per minute with
    ``C = max(1, ⌈share × limit⌉)`` (docs/control-plane.md#tenant-limits)."""

    renew_s: float = Field(1.0, gt=0)  # R: background renewal period
    ttl_s: float = Field(5.0, gt=0)  # V: a lease not renewed holds this long, then the safe share
    share: float = Field(0.01, gt=0, le=1)  # C as a share of each limit
    expected_replicas: int = Field(1, ge=1)  # safe share = ⌈limit / expected_replicas⌉
    timeout_s: float = Field(2.0, gt=0)  # one renewal's deadline (never on the request path)

    @model_validator(mode="after")
    def _ttl(self) -> LeaseConfig:
        if self.ttl_s < self.renew_s:
            raise ValueError("store.leases.ttl_s must be at least renew_s")
        return self
