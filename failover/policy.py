"""Timeouts for one attempt, as plain data."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TimeoutPolicy:
    """Seconds. ``first_token`` runs from the attempt's start to its first text;
    ``idle`` is the longest gap between chunks after that; ``total`` bounds the
    whole request across attempts."""

    connect: float = 3.0
    first_token: float = 30.0
    idle: float = 30.0
    total: float = 600.0
