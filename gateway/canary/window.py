"""A step window's counters, as every replica adds to them and the analysis reads them.

Per version, three kinds of counter under one store hash per window
(``MODEL:RUN:STEP``): ``V|req`` attempts, ``V|err`` failed attempts and
``V|ttft|B`` a TTFT histogram. Bucket ``B`` holds samples up to
``1 ms × 1.25**B`` (log-spaced, ≈ 12% resolution from 1 ms to 2 min), so
replicas' histograms add up exactly and the p95 of the sum is the upper
bound of the bucket where the 95th percentile falls.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from gateway.canary.analysis import VersionSample

_BASE_S = 0.001
_GROWTH = 1.25
_MAX_BUCKET = 53  # 1 ms × 1.25**53 ≈ 137 s


def bucket_of(seconds: float) -> int:
    if seconds <= _BASE_S:
        return 0
    return min(_MAX_BUCKET, math.ceil(math.log(seconds / _BASE_S, _GROWTH) - 1e-9))


def bucket_bound(index: int) -> float:
    return float(_BASE_S * _GROWTH**index)


AFFINITY_BUCKETS = 16
SKEW_MIN_REQUESTS = 20
SKEW_SHARE = 0.9


def affinity_field(key: str) -> str:
    """The counter of the request's affinity key's bucket (``aff|B``): a bounded
    histogram of who the step's sample comes from, however many keys there are."""
    digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return f"aff|{int.from_bytes(digest, 'big') % AFFINITY_BUCKETS}"


def skew(counts: Mapping[str, int]) -> str | None:
    """A warning when one affinity key (or a few that hash alike) carries the step's
    sample: the split is sticky per key, so one key is all of one version."""
    buckets = [n for k, n in counts.items() if k.startswith("aff|")]
    total = sum(buckets)
    if total < SKEW_MIN_REQUESTS or max(buckets) < SKEW_SHARE * total:
        return None
    return (
        f"{max(buckets)} of {total} requests in this step share one affinity key: "
        "the split is sticky per x-meridian-session, user or conversation, "
        "so this sample shows one version; send x-meridian-session per conversation"
    )


def fields(version: str, failed: bool, ttft_s: float | None) -> list[str]:
    """The counters one attempt increments."""
    out = [f"{version}|req"]
    if failed:
        out.append(f"{version}|err")
    if ttft_s is not None:
        out.append(f"{version}|ttft|{bucket_of(ttft_s)}")
    return out


def p95(histogram: Mapping[int, int]) -> float | None:
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank = math.ceil(0.95 * total)
    seen = 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bucket_bound(index)
    return bucket_bound(max(histogram))


def sample(counts: Mapping[str, int], version: str) -> VersionSample:
    prefix = f"{version}|ttft|"
    histogram = {int(k[len(prefix) :]): n for k, n in counts.items() if k.startswith(prefix)}
    return VersionSample(
        counts.get(f"{version}|req", 0), counts.get(f"{version}|err", 0), p95(histogram)
    )
