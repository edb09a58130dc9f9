"""The shadow gate of a canary: shadow → canary → promote, enforced.

A canary plan with ``require_shadow`` may not take its first step, nor any
later one, unless the model's shadow plan in the store mirrored to the
*same* candidate and its fleet-wide verdict is ``pass``. The gate reads the
store (the plan document and its counter window), never a replica's memory,
so whichever replica starts the canary or leads the controller sees the
same answer. A shadow that is still running may pass the gate: the verdict
counts pairs, not wall time, and ``min_pairs`` says how many are enough.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.shadow.compare import summarise, verdict
from gateway.shadow.plan import from_doc, shadow_key
from gateway.store import Store


async def shadow_gate(
    store: Store, entries: Mapping[str, Any], model: str, candidate: str
) -> str | None:
    """None when the gate is open, else why not (one line). Raises StoreUnavailable."""
    doc = entries.get(shadow_key(model))
    if doc is None:
        return f"no shadow of '{model}' has run: start one with `meridian shadow start`"
    try:
        plan = from_doc(dict(doc))
    except (KeyError, ValueError, TypeError):
        return f"the shadow plan of '{model}' is unreadable"
    if plan.candidate != candidate:
        return f"the shadow of '{model}' compared {plan.candidate}, not {candidate}"
    outcome, reasons = verdict(summarise(await store.read_counts(plan.window)), plan.thresholds)
    if outcome != "pass":
        return f"the shadow of {candidate} has not passed ({outcome}: {'; '.join(reasons)})"
    return None
