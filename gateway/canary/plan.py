"""A canary as data: its plan, its state, and the state machine between them.

A canary moves a model's traffic from the *stable* version to the
*candidate* in steps of weight (``5,25,50,100``), baking each step for
``interval_s`` before the analysis (``gateway.canary.analysis``) decides::

                 start (weight = steps[0])
                   │
                   ▼
    ┌─────── PROGRESSING ◀──── hold: sample too small (same step, next interval)
    │          │   │
    │          │   └── advance ──▶ next step; a step of 100 ──▶ SUCCEEDED (100%)
    │          │                   after a last step below 100 ──▶ WAITING
    │          └── rollback (a breach) ──▶ ROLLED_BACK (0%)
    │
    └─ by hand, from PROGRESSING or WAITING:  promote ──▶ PROMOTED (100%)
                                              abort   ──▶ ABORTED (0%)

While a canary runs, the model's split is ``{stable: 100 − w, candidate: w}``
(other versions get 0). The weight 100 is never analysed: with no stable
traffic left there is nothing to compare, so reaching it completes the canary
(Flagger promotes after the analysis of its last step likewise). Every
transition is kept in ``history`` and, through the store, in the audit log.
Time is passed in (wall-clock seconds, so any replica can take over).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace


class Phase(enum.StrEnum):
    PROGRESSING = "progressing"
    WAITING = "waiting"
    SUCCEEDED = "succeeded"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"

    @property
    def active(self) -> bool:
        """The canary still owns the model's split (promote/abort apply)."""
        return self in (Phase.PROGRESSING, Phase.WAITING)


class Decision(enum.StrEnum):
    ADVANCE = "advance"
    HOLD = "hold"
    ROLLBACK = "rollback"


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Flagger's ``thresholdRange`` and SageMaker's guardrails, as one canary needs them.

    ``ttft_floor_s``: TTFT p95s below it are noise, never a breach.
    """

    max_error_delta: float = 0.02
    max_ttft_ratio: float = 1.5
    min_requests: int = 50
    ttft_floor_s: float = 0.025


@dataclass(frozen=True, slots=True)
class CanaryPlan:
    model: str
    stable: str
    candidate: str
    steps: tuple[int, ...]
    interval_s: float
    thresholds: Thresholds = field(default_factory=Thresholds)
    # no step without a passing shadow of the candidate (gateway.shadow.gate)
    require_shadow: bool = False

    def check(self) -> None:
        """Raise ValueError (one line) unless the plan makes sense."""
        if self.stable == self.candidate:
            raise ValueError(f"the canary version {self.candidate} is already the stable one")
        if not self.steps:
            raise ValueError("steps must not be empty")
        if any(not 0 < s <= 100 for s in self.steps):
            raise ValueError("every step must be a weight between 1 and 100")
        if any(b <= a for a, b in zip(self.steps, self.steps[1:], strict=False)):
            raise ValueError("steps must increase")
        if not self.interval_s > 0:
            raise ValueError("interval must be positive")
        t = self.thresholds
        if t.max_error_delta < 0 or t.max_ttft_ratio <= 0 or t.min_requests < 1:
            raise ValueError(
                "thresholds: max-error-delta >= 0, max-ttft-ratio > 0, min-requests >= 1"
            )


@dataclass(frozen=True, slots=True)
class Transition:
    at: float
    phase: Phase
    weight: int
    actor: str
    reason: str


@dataclass(frozen=True, slots=True)
class Canary:
    plan: CanaryPlan
    run: str  # unique per start: names this run's counter windows
    phase: Phase
    step: int  # index into plan.steps
    weight: int  # the candidate's share, percent
    step_started: float
    due: float  # when the next analysis runs
    last: str = ""  # the latest analysis or action, for `canary status`
    history: tuple[Transition, ...] = ()

    @property
    def window(self) -> str:
        """The counter window of the current step (replicas add to it, the analysis reads it)."""
        return f"{self.plan.model}:{self.run}:{self.step}"

    def split(self) -> dict[str, int]:
        return {self.plan.stable: 100 - self.weight, self.plan.candidate: self.weight}

    @classmethod
    def start(cls, plan: CanaryPlan, run: str, now: float, actor: str) -> Canary:
        plan.check()
        weight = plan.steps[0]
        phase = Phase.SUCCEEDED if weight == 100 else Phase.PROGRESSING
        reason = f"started: {plan.candidate} at {weight}%"
        return cls(
            plan,
            run,
            phase,
            0,
            weight,
            now,
            now + plan.interval_s,
            reason,
            (Transition(now, phase, weight, actor, reason),),
        )

    def _to(self, now: float, actor: str, reason: str, **changes: object) -> Canary:
        moved: Canary = replace(self, last=reason, **changes)  # type: ignore[arg-type]
        step = Transition(now, moved.phase, moved.weight, actor, reason)
        return replace(moved, history=(*self.history, step))

    def decide(self, decision: Decision, reason: str, now: float, actor: str) -> Canary:
        """Apply one analysis verdict (only while PROGRESSING)."""
        if self.phase is not Phase.PROGRESSING:
            return self
        if decision is Decision.HOLD:
            return replace(self, due=now + self.plan.interval_s, last=f"hold: {reason}")
        if decision is Decision.ROLLBACK:
            return self._to(now, actor, f"rolled back: {reason}", phase=Phase.ROLLED_BACK, weight=0)
        nxt = self.step + 1
        if nxt < len(self.plan.steps):
            weight = self.plan.steps[nxt]
            phase = Phase.SUCCEEDED if weight == 100 else Phase.PROGRESSING
            return self._to(
                now,
                actor,
                f"advanced to {weight}%: {reason}",
                phase=phase,
                step=nxt,
                weight=weight,
                step_started=now,
                due=now + self.plan.interval_s,
            )
        phase = Phase.SUCCEEDED if self.weight == 100 else Phase.WAITING
        return self._to(now, actor, f"last step passed: {reason}", phase=phase)

    def promote(self, now: float, actor: str) -> Canary:
        if not self.phase.active:
            raise ValueError(f"the canary of {self.plan.model} is already {self.phase.value}")
        return self._to(now, actor, f"promoted by {actor}", phase=Phase.PROMOTED, weight=100)

    def abort(self, now: float, actor: str) -> Canary:
        if not self.phase.active:
            raise ValueError(f"the canary of {self.plan.model} is already {self.phase.value}")
        return self._to(now, actor, f"aborted by {actor}", phase=Phase.ABORTED, weight=0)
