"""The lab's scenarios. Each returns a JSON-ready dict: ``rows`` (one per region),
``notes`` and ``targets`` (issue 15's "done when", judged on the numbers measured).

Scenarios never assume a feature is there: each measures what the gateways
on this checkout do and reports it, whatever it is.
"""

from __future__ import annotations

from bench.geo.scenarios.common import Result, cli, wait_until
from bench.geo.scenarios.limits import limit_accuracy
from bench.geo.scenarios.links import links
from bench.geo.scenarios.partition import partition
from bench.geo.scenarios.primary_lost import primary_lost
from bench.geo.scenarios.propagation import propagation
from bench.geo.scenarios.region_lost import region_lost
from bench.geo.scenarios.steady import steady

__all__ = [
    "Result",
    "cli",
    "limit_accuracy",
    "links",
    "partition",
    "primary_lost",
    "propagation",
    "region_lost",
    "steady",
    "wait_until",
]
