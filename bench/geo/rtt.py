"""The simulated regions and the round-trip times between them.

RTTs are the published averages of "Latency Between AWS Global Regions"
(EC2-to-EC2 ping, average in ms), as tabulated in
https://acomputerscientistlearnsaws.blogspot.com/2017/04/aws-regions.html
(US East (N. Virginia), EU (Ireland), Asia Pacific (Tokyo) rows):

    us-east-1 ↔ eu-west-1        80.5 ms
    us-east-1 ↔ ap-northeast-1  145.3 ms
    eu-west-1 ↔ ap-northeast-1  212.4 ms

Current dashboards (cloudping.co, Kentik's Cloud Latency Map) show the same
order of magnitude; routes improve over time, so treat these as a realistic,
slightly pessimistic fleet rather than today's exact figures. Each link
delays each direction by half the RTT.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Region:
    name: str  # AWS region name, also the gateway config's region "aws:NAME"
    tag: str  # the region's only residency tag; clients pin themselves to it
    host: str  # the loopback address everything "in" this region binds to

    @property
    def config_name(self) -> str:
        return f"aws:{self.name}"


REGIONS: tuple[Region, ...] = (
    Region("us-east-1", "US", "127.0.11.1"),
    Region("eu-west-1", "EU", "127.0.12.1"),
    Region("ap-northeast-1", "JP", "127.0.13.1"),
)

_RTT_MS: dict[frozenset[str], float] = {
    frozenset({"us-east-1", "eu-west-1"}): 80.5,
    frozenset({"us-east-1", "ap-northeast-1"}): 145.3,
    frozenset({"eu-west-1", "ap-northeast-1"}): 212.4,
}


def rtt_ms(a: str, b: str) -> float:
    """Round trip between two regions; 0 inside one region."""
    if a == b:
        return 0.0
    return _RTT_MS[frozenset({a, b})]


def region(name: str) -> Region:
    for r in REGIONS:
        if r.name == name:
            return r
    raise KeyError(f"no simulated region {name!r} (have {', '.join(r.name for r in REGIONS)})")
