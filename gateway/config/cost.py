"""``cost``: what the gateway counts beside token prices (docs/observability.md#cost-model).

Cross-region transfer: the bytes of each request and its response between the
region this gateway runs in and the serving backend's, priced per GB (10⁹
bytes) in the direction they flow: a request's body leaves the gateway's
cloud, its response the backend's. Same region: free and not counted. No
``region``: the gateway does not know where it runs, and nothing is counted.
"""

from __future__ import annotations

import re

from pydantic import Field, field_validator

from gateway.config.base import Strict

_PAIR = re.compile(r"^([a-z0-9-]+)->([a-z0-9-]+)$")


class CostConfig(Strict):
    region: str | None = None  # where this gateway runs: one of regions[].name
    transfer_per_gb: float = Field(0.0, ge=0)  # USD per GB between two different regions
    # Per cloud pair, in the direction of the bytes: {"aws->gcp": 0.09, "aws->aws": 0.02}
    transfer_pairs: dict[str, float] = {}

    @field_validator("transfer_pairs")
    @classmethod
    def _pairs(cls, value: dict[str, float]) -> dict[str, float]:
        for pair, per_gb in value.items():
            if not _PAIR.match(pair):
                raise ValueError(f"{pair!r}: write a cloud pair as 'FROM->TO', e.g. 'aws->gcp'")
            if per_gb < 0:
                raise ValueError(f"{pair}: a price per GB must be >= 0")
        return value
