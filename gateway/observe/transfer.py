"""Cross-region transfer priced per GB, per request (config: ``cost``, gateway.config.cost).

A request's body goes from the gateway's region to the backend's, its
response back; each direction is priced at its cloud pair's rate
(``transfer_pairs["aws->gcp"]``), else ``transfer_per_gb``. Bytes within one
region are not counted; without a configured gateway region nothing is.
"""

from __future__ import annotations

from typing import NamedTuple

from gateway.config.cost import CostConfig
from regions.inventory import Region

GB = 1e9


class Transfer(NamedTuple):
    """One request's bytes each way between two regions, and what they cost."""

    source: str  # the gateway's region
    target: str  # the backend's region
    request_bytes: int
    response_bytes: int
    usd: float


class TransferPricing:
    __slots__ = ("_default", "_pairs", "region")

    def __init__(self, config: CostConfig) -> None:
        self.region = config.region
        self._default = config.transfer_per_gb
        self._pairs = dict(config.transfer_pairs)

    def per_gb(self, source_cloud: str, target_cloud: str) -> float:
        return self._pairs.get(f"{source_cloud}->{target_cloud}", self._default)

    def price(self, backend: Region, request_bytes: int, response_bytes: int) -> Transfer | None:
        """None when nothing crosses a region boundary (or the gateway's region is unknown)."""
        here = self.region
        if here is None or backend.name == here or request_bytes + response_bytes <= 0:
            return None
        cloud, there = here.split(":", 1)[0], backend.cloud
        usd = (
            request_bytes * self.per_gb(cloud, there) + response_bytes * self.per_gb(there, cloud)
        ) / GB
        return Transfer(here, backend.name, request_bytes, response_bytes, usd)
