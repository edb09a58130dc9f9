"""Comparing a primary answer with its shadow copy, and summing comparisons over a fleet.

Pure functions, no I/O. Per pair (:func:`compare`):

* **exact prefix**: how many whitespace tokens the two texts share from the
  start — 0 means they diverge at once; equal to both lengths means identical.
* **token overlap**: the multiset F1 of the two token lists,
  ``2·|A ∩ B| / (|A| + |B|)`` (ROUGE-1 F; 1.0 for two empty texts). Order-free,
  so it forgives a paraphrase the prefix does not.
* TTFT and inter-token latency of each side, error or not, output lengths.

A pair's comparison becomes integer counters (:func:`fields`) that every
replica adds to the plan's window in the store; latencies go into the canary
window's log-spaced histogram buckets so replicas' histograms add up exactly,
and scores are summed in thousandths. :func:`summarise` turns the fleet's
counters back into rates, percentiles and means; :func:`verdict` holds them
against the plan's thresholds.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.canary.window import bucket_bound, bucket_of
from gateway.shadow.plan import ShadowThresholds

PRIMARY, CANDIDATE = "p", "c"


@dataclass(frozen=True, slots=True)
class Side:
    """One side of a pair as it ended; latencies are None when it produced no token."""

    error: bool
    text: str = ""
    ttft_s: float | None = None
    itl_s: float | None = None
    tokens: int = 0


@dataclass(frozen=True, slots=True)
class Comparison:
    primary: Side
    candidate: Side
    prefix: int  # tokens
    overlap: float  # 0..1
    exact: bool

    @property
    def disagrees(self) -> bool:
        """Both answered and differ, or exactly one failed."""
        if self.primary.error or self.candidate.error:
            return self.primary.error != self.candidate.error
        return not self.exact


def prefix_length(a: list[str], b: list[str]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def token_overlap(a: list[str], b: list[str]) -> float:
    if not a and not b:
        return 1.0
    common = sum((Counter(a) & Counter(b)).values())
    return 2.0 * common / (len(a) + len(b))


def compare(primary: Side, candidate: Side) -> Comparison:
    a, b = primary.text.split(), candidate.text.split()
    return Comparison(primary, candidate, prefix_length(a, b), token_overlap(a, b), a == b)


def fields(c: Comparison) -> Counter[str]:
    """The counters one compared pair adds to the plan's window."""
    out: Counter[str] = Counter(pairs=1)
    for tag, side in ((PRIMARY, c.primary), (CANDIDATE, c.candidate)):
        if side.error:
            out[f"{tag}|err"] += 1
        if side.ttft_s is not None:
            out[f"{tag}|ttft|{bucket_of(side.ttft_s)}"] += 1
        if side.itl_s is not None:
            out[f"{tag}|itl|{bucket_of(side.itl_s)}"] += 1
        out[f"{tag}|len"] += side.tokens
    if not (c.primary.error or c.candidate.error):
        out["both_ok"] += 1
        out["overlap_milli"] += round(c.overlap * 1000)
        out["prefix"] += c.prefix
        out["exact"] += int(c.exact)
    if c.disagrees:
        out["disagree"] += 1
    return out


def quantile(histogram: Mapping[int, int], q: float) -> float | None:
    """The upper bound of the bucket holding the q-th sample (as canary p95)."""
    total = sum(histogram.values())
    if total <= 0:
        return None
    rank, seen = math.ceil(q * total), 0
    for index in sorted(histogram):
        seen += histogram[index]
        if seen >= rank:
            return bucket_bound(index)
    return bucket_bound(max(histogram))


def _histogram(counts: Mapping[str, int], prefix: str) -> dict[int, int]:
    return {int(k[len(prefix) :]): n for k, n in counts.items() if k.startswith(prefix)}


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def summarise(counts: Mapping[str, int]) -> dict[str, Any]:
    """The fleet's counters as the numbers ``shadow status`` shows."""
    pairs = counts.get("pairs", 0)
    both = counts.get("both_ok", 0)
    out: dict[str, Any] = {
        "pairs": pairs,
        "mirrored": counts.get("mirrored", 0),
        "skipped": counts.get("skipped", 0),  # excluded or opted-out tenants
        "dropped": {k.split("|", 1)[1]: n for k, n in counts.items() if k.startswith("dropped|")},
        "disagreeing": counts.get("disagree", 0),
        "mean_agreement": None if both == 0 else counts.get("overlap_milli", 0) / 1000 / both,
        "exact_match_rate": None if both == 0 else counts.get("exact", 0) / both,
        "mean_prefix_tokens": None if both == 0 else counts.get("prefix", 0) / both,
    }
    for tag, name in ((PRIMARY, "primary"), (CANDIDATE, "candidate")):
        ttft = _histogram(counts, f"{tag}|ttft|")
        itl = _histogram(counts, f"{tag}|itl|")
        out[name] = {
            "error_rate": None if pairs == 0 else counts.get(f"{tag}|err", 0) / pairs,
            "ttft_p50_ms": _ms(quantile(ttft, 0.5)),
            "ttft_p95_ms": _ms(quantile(ttft, 0.95)),
            "itl_p50_ms": _ms(quantile(itl, 0.5)),
            "mean_tokens": None if pairs == 0 else counts.get(f"{tag}|len", 0) / pairs,
        }
    return out


def verdict(summary: Mapping[str, Any], t: ShadowThresholds) -> tuple[str, list[str]]:
    """``("pass" | "fail" | "pending", reasons)``; every failed check gives one reason."""
    pairs = int(summary["pairs"])
    if pairs < t.min_pairs:
        return "pending", [f"{pairs} of {t.min_pairs} pairs compared"]
    p, c = summary["primary"], summary["candidate"]
    reasons: list[str] = []
    delta = c["error_rate"] - p["error_rate"]
    if delta > t.max_error_delta:
        reasons.append(
            f"error rate {c['error_rate']:.1%} on the candidate vs {p['error_rate']:.1%} "
            f"(+{delta:.1%} > {t.max_error_delta:.1%})"
        )
    floor_ms = t.ttft_floor_s * 1000
    p95p, p95c = p["ttft_p95_ms"], c["ttft_p95_ms"]
    if p95c is not None and p95c > floor_ms:
        base = max(p95p or 0.0, floor_ms)
        if p95c / base > t.max_ttft_ratio:
            reasons.append(
                f"TTFT p95 {p95c:.0f} ms on the candidate vs {p95p} ms "
                f"(x{p95c / base:.2f} > x{t.max_ttft_ratio:.2f})"
            )
    agreement = summary["mean_agreement"]
    if agreement is None:
        reasons.append("no pair where both answered: agreement unknown")
    elif agreement < t.min_agreement:
        reasons.append(f"mean agreement {agreement:.3f} < {t.min_agreement:.3f}")
    if reasons:
        return "fail", reasons
    return "pass", [f"{pairs} pairs within every threshold"]
