"""The canary analysis: one pure function from a step's samples to a decision.

Inputs: per version, the attempts and errors seen during the step's window
(summed over every replica) and the TTFT p95; the plan's thresholds. Rules,
in order (Flagger's checks, SageMaker's guardrails; reference/resilience.md A2):

1. **hold** while the candidate has fewer than ``min_requests`` samples — a
   small sample proves nothing either way (Flagger fails a check on "no
   values"; holding instead lets a quiet model bake longer rather than roll
   back for lack of traffic);
2. **rollback** when ``error_rate(candidate) − error_rate(stable) >
   max_error_delta``;
3. **rollback** when ``p95(candidate) / max(p95(stable), floor) >
   max_ttft_ratio`` and the candidate's p95 is above the floor (sub-floor
   TTFTs are noise);
4. otherwise **advance**.

The reason is a sentence an operator reads in ``meridian canary status``.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.canary.plan import Decision, Thresholds


@dataclass(frozen=True, slots=True)
class VersionSample:
    requests: int = 0
    errors: int = 0
    ttft_p95_s: float | None = None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


@dataclass(frozen=True, slots=True)
class Verdict:
    decision: Decision
    reason: str


def _ms(seconds: float | None) -> str:
    return "n/a" if seconds is None else f"{seconds * 1000:.0f} ms"


def analyse(
    stable: VersionSample,
    candidate: VersionSample,
    thresholds: Thresholds,
    names: tuple[str, str] = ("stable", "canary"),
) -> Verdict:
    s_name, c_name = names
    t = thresholds
    if candidate.requests < t.min_requests:
        return Verdict(
            Decision.HOLD,
            f"sample too small: {candidate.requests} of {t.min_requests} requests on {c_name}",
        )
    delta = candidate.error_rate - stable.error_rate
    if delta > t.max_error_delta:
        return Verdict(
            Decision.ROLLBACK,
            f"error rate {candidate.error_rate:.1%} on {c_name} vs {stable.error_rate:.1%} "
            f"on {s_name} (+{delta:.1%} > {t.max_error_delta:.1%})",
        )
    c_p95, s_p95 = candidate.ttft_p95_s, stable.ttft_p95_s
    if c_p95 is not None and s_p95 is not None and c_p95 > t.ttft_floor_s:
        ratio = c_p95 / max(s_p95, t.ttft_floor_s)
        if ratio > t.max_ttft_ratio:
            return Verdict(
                Decision.ROLLBACK,
                f"TTFT p95 {_ms(c_p95)} on {c_name} vs {_ms(s_p95)} on {s_name} "
                f"(x{ratio:.2f} > x{t.max_ttft_ratio:.2f})",
            )
    return Verdict(
        Decision.ADVANCE,
        f"{candidate.requests} requests, errors {candidate.error_rate:.1%} "
        f"({s_name} {stable.error_rate:.1%}), TTFT p95 {_ms(c_p95)} ({s_name} {_ms(s_p95)})",
    )
